"""Ctrl-C as a feature: the first SIGINT/SIGTERM starts an orderly stop, later ones are ignored.

Under `ros2 launch` a terminal's Ctrl-C reaches every node twice: once from the terminal (the whole
process group) and once more when launch forwards it; launch then sends SIGTERM after its timeout.
Python's default handler turns each SIGINT into a KeyboardInterrupt wherever the main thread happens to be,
so the second one lands inside `destroy_node` while worker threads are being joined: the threads are left
running, the context is shut down under them, and the user sees tracebacks. `OrderlyStop` replaces the
handlers for the duration of a `with` block: the first signal sets `requested` (and calls `on_request`),
later signals are counted and ignored. A watchdog bounds the stop itself: if what follows the request
does not finish within `deadline_s`, the process says so in one line and exits with code 1 instead of
hanging (a stop that hangs would otherwise need SIGKILL).

Only the standard library here: `isaac-perf run` uses this before importing rclpy.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOPPING = threading.Event()  # some OrderlyStop of this process has been requested and is not done


def stopping() -> bool:
    """Whether this process is stopping: frames its peers could not finish sending (a publisher that
    exited first) are counted then, not logged, so a Ctrl-C stays quiet."""
    return _STOPPING.is_set()


class OrderlyStop:
    """Signal handlers for one orderly stop; use as a context manager in the main thread.

        with OrderlyStop('inference_node') as stop:
            while not stop.requested.is_set():
                executor.spin_once(timeout_sec=0.1)
            stop.begin()           # what follows is watched by the deadline
            node.destroy_node()
    """

    def __init__(self, name: str, deadline_s: float = 8.0,
                 on_request: Callable[[], None] | None = None,
                 exit_hard: Callable[[int], Any] = os._exit, keep_ignoring: bool = True) -> None:
        self.name = name
        self.deadline_s = deadline_s
        self.on_request = on_request
        self.requested = threading.Event()
        self.signals_received = 0
        self.first_signal: int | None = None
        self._exit_hard = exit_hard
        self._keep_ignoring = keep_ignoring
        self._previous: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None
        self._done = threading.Event()
        # While True, the first signal also raises KeyboardInterrupt in the main thread: a constructor that
        # takes seconds (a model load) is cut short instead of making the stop wait for it.
        self.interrupt_main = False

    # -- context manager -------------------------------------------------------------------------------
    def __enter__(self) -> OrderlyStop:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (only possible in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """The stop is complete: cancel the deadline and hand the signals back (or keep ignoring them)."""
        self._done.set()
        _STOPPING.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        # Handlers stay ignoring until the process is done with its clean-up: restoring Python's default
        # here would let a late signal raise KeyboardInterrupt in the interpreter's own shutdown.
        for signum in self._previous:
            ignore = self._keep_ignoring and self.requested.is_set()
            signal.signal(signum, signal.SIG_IGN if ignore else self._previous[signum])
        self._previous.clear()

    # -- the stop ----------------------------------------------------------------------------------------
    def request(self, signum: int | None = None) -> None:
        """Ask for the stop (what the first signal does); later calls only count."""
        self.signals_received += signum is not None
        if self.requested.is_set():
            return
        self.first_signal = signum
        self.requested.set()
        _STOPPING.set()
        if self.on_request is not None:
            self.on_request()

    def begin(self) -> None:
        """The clean-up starts now: from here it has `deadline_s` seconds before the process is ended."""
        if self._watchdog is None and self.deadline_s > 0:
            self._watchdog = threading.Timer(self.deadline_s, self._expired)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.requested.is_set()
        self.request(signum)
        if first and self.interrupt_main:
            self.interrupt_main = False
            raise KeyboardInterrupt

    def _expired(self) -> None:
        if self._done.is_set():
            return
        busy = sorted(t.name for t in threading.enumerate()
                      if t.is_alive() and t is not threading.current_thread() and not t.daemon
                      and t is not threading.main_thread())
        print(f'[{self.name}] the orderly stop did not finish within {self.deadline_s:g} s'
              f'{" (threads still running: " + ", ".join(busy) + ")" if busy else ""}: exiting now',
              file=sys.stderr, flush=True)
        self._exit_hard(1)
