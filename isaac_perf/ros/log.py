"""Once-only and throttled log lines at any mix of severities, keyed by what they are about.

rclpy's logger keys its state by call site (file, function, line) and raises
`ValueError: Logger severity cannot be changed between calls` when one site logs at two severities, which
a helper such as `getattr(logger, level)(text)` always does: qos_tuner died of that a second after start.
`LogLimiter` keeps its own once/throttle state (per key, bounded) and calls the plain severity methods,
each from its own line, so rclpy sees one fixed severity per site. Suppressed repeats are counted and the
next line that does get through says how many were held back.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SEVERITIES = ('debug', 'info', 'warning', 'error', 'fatal')


def emit(logger: Any, severity: str, text: str) -> None:
    """Log `text` at `severity` (debug/info/warning/warn/error/fatal); one call site per severity."""
    if severity == 'debug':
        logger.debug(text)
    elif severity == 'info':
        logger.info(text)
    elif severity in ('warning', 'warn'):
        logger.warning(text)
    elif severity == 'error':
        logger.error(text)
    elif severity == 'fatal':
        logger.fatal(text)
    else:
        raise ValueError(f'log severity {severity!r} is not one of {", ".join(SEVERITIES)}')


class LogLimiter:
    """`once(key, text)` and `throttled(key, text, period_s)` over one logger.

    Keys are whatever identifies the condition (`'wait-target'`, `f'type-{topic}'`); `clear(key)` lets a
    condition that went away be reported again when it comes back. At most `max_keys` keys are kept (the
    oldest is forgotten first), so keys built from user input cannot grow memory without bound.
    """

    def __init__(self, logger: Any, clock: Callable[[], float] = time.monotonic, max_keys: int = 1024):
        self.logger = logger
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._last: OrderedDict[str, float] = OrderedDict()  # key -> time of the last line let through
        self._held: dict[str, int] = {}  # key -> lines suppressed since then

    def log(self, severity: str, text: str) -> None:
        emit(self.logger, severity, text)

    def once(self, key: str, text: str, severity: str = 'warning') -> bool:
        """Log the first time `key` is seen (again after `clear`); True when the line went out."""
        return self._gate(key, None, text, severity)

    def throttled(self, key: str, text: str, period_s: float, severity: str = 'warning') -> bool:
        """Log at most once per `period_s` for `key`; a line let through counts the ones held back."""
        return self._gate(key, period_s, text, severity)

    def clear(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)
            self._held.pop(key, None)

    def said(self, key: str) -> bool:
        """True when a line for `key` went out (and was not cleared since)."""
        with self._lock:
            return key in self._last

    def suppressed(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)

    def _gate(self, key: str, period_s: float | None, text: str, severity: str) -> bool:
        if severity not in SEVERITIES and severity != 'warn':
            raise ValueError(f'log severity {severity!r} is not one of {", ".join(SEVERITIES)}')
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and (period_s is None or now - last < period_s):
                self._held[key] = self._held.get(key, 0) + 1
                return False
            held = self._held.pop(key, 0)
            self._last[key] = now
            self._last.move_to_end(key)
            while len(self._last) > self._max_keys:
                old, _ = self._last.popitem(last=False)
                self._held.pop(old, None)
        if held:
            text = f'{text} ({held} more like this since the last report)'
        emit(self.logger, severity, text)
        return True
