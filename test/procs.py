"""Nodes and commands as separate processes, stopped the way a terminal and `ros2 launch` stop them.

A terminal's Ctrl-C sends SIGINT to the whole process group; `ros2 launch` then forwards another SIGINT
to each process, and SIGTERM after its timeout. `NodeProcess` starts a command in its own session (its
own process group), collects its output on threads (a full pipe cannot stall it), waits for a line that
says it is ready, and sends such signal sequences to the group.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BAD_OUTPUT = ('Traceback', '[ERROR]', 'terminate called', 'exception was never retrieved',
              'context is invalid', 'KeyboardInterrupt')


def node_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1', **extra}
    env.pop('RCUTILS_CONSOLE_OUTPUT_FORMAT', None)
    return env


class NodeProcess:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env or node_env(), start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, args=(s, out), daemon=True)
                         for s, out in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()
        self.stop_seconds: float | None = None

    def _read(self, stream, out: list[str]) -> None:
        for line in stream:
            with self._lock:
                out.append(line)

    @property
    def output(self) -> str:
        with self._lock:
            return ''.join(self.stdout) + ''.join(self.stderr)

    def wait_for(self, text: str, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the readers finish the last lines
                return text in self.output
            time.sleep(0.05)
        return False

    def signal_group(self, *signals: int, gap_s: float = 0.05) -> None:
        """Send each signal to the process group, `gap_s` apart (a terminal's, then launch's)."""
        self._t0 = time.monotonic()
        for i, signum in enumerate(signals):
            if i:
                time.sleep(gap_s)
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                break

    def wait(self, timeout_s: float = 30.0) -> int | None:
        """The exit code, or None after killing a process that did not end within `timeout_s`."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        if hasattr(self, '_t0'):
            self.stop_seconds = time.monotonic() - self._t0
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def bad_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if any(b in line for b in BAD_OUTPUT)]


def fault_node(*params: str, ros_args: tuple[str, ...] = ()) -> NodeProcess:
    """test/fault_node.py with `-p` overrides and further --ros-args (e.g. '--params-file', path)."""
    argv = [PY, str(ROOT / 'test' / 'fault_node.py')]
    if params or ros_args:
        argv += ['--ros-args'] + [x for p in params for x in ('-p', p)] + list(ros_args)
    return NodeProcess(argv)
