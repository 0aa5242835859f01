"""Threshold alerts with warn/error levels, hysteresis and a minimum duration (pure Python).

A rule watches one metric in one direction (`ABOVE`: GPU temperature, latency; `BELOW`: FPS). The level a
value asks for is:

    ABOVE: ERROR if value >= error, WARN if value >= warn, else OK
    BELOW: ERROR if value <= error, WARN if value <= warn, else OK

Hysteresis keeps a level until the value has moved `hysteresis` past the threshold back towards OK (so a
value hovering on the threshold does not flap). A new level must be asked for continuously for
`min_duration_s` before it is taken. Each change of level is reported once, as a `Transition`.
A NaN value (no data) changes nothing and resets a pending change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum

NS_PER_S = 1_000_000_000


class Level(IntEnum):
    """Same numbers as diagnostic_msgs/DiagnosticStatus levels."""
    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


class Direction(Enum):
    ABOVE = 'above'
    BELOW = 'below'


@dataclass(frozen=True)
class AlertRule:
    """`warn`/`error` of None disable that level; `hysteresis` is in the metric's own units."""
    name: str
    direction: Direction
    warn: float | None = None
    error: float | None = None
    hysteresis: float = 0.0
    min_duration_s: float = 0.0
    unit: str = ''

    def __post_init__(self):
        if self.hysteresis < 0 or self.min_duration_s < 0:
            raise ValueError(f'alert {self.name}: hysteresis and min_duration_s must be >= 0')
        if self.warn is not None and self.error is not None:
            wrong = self.error < self.warn if self.direction is Direction.ABOVE else self.error > self.warn
            if wrong:
                side = 'above' if self.direction is Direction.ABOVE else 'below'
                raise ValueError(f'alert {self.name}: error threshold {self.error} must be at or {side} '
                                 f'the warn threshold {self.warn}')

    def threshold(self, level: Level) -> float | None:
        return {Level.WARN: self.warn, Level.ERROR: self.error}.get(level)

    def _crossed(self, value: float, threshold: float | None, shift: float) -> bool:
        if threshold is None:
            return False
        if self.direction is Direction.ABOVE:
            return value >= threshold - shift
        return value <= threshold + shift

    def wanted_level(self, value: float, current: Level = Level.OK) -> Level:
        """The level `value` asks for, given the level held now (which sets where hysteresis applies)."""
        for level in (Level.ERROR, Level.WARN):
            # While at or above `level`, leaving it needs the value `hysteresis` past the threshold.
            shift = self.hysteresis if current >= level else 0.0
            if self._crossed(value, self.threshold(level), shift):
                return level
        return Level.OK


@dataclass(frozen=True)
class Transition:
    rule: str
    subject: str
    old: Level
    new: Level
    value: float
    now_ns: int
    message: str


class AlertState:
    """The held level of one rule on one subject (a GPU, a topic, the host)."""

    def __init__(self, rule: AlertRule, subject: str = ''):
        self.rule = rule
        self.subject = subject
        self.level = Level.OK
        self.value = math.nan
        self._pending: Level | None = None
        self._pending_since_ns = 0

    def update(self, value: float, now_ns: int) -> Transition | None:
        """Feed the newest value; return a Transition when the held level changes."""
        if value is None or math.isnan(value):
            self._pending = None
            return None
        self.value = value
        wanted = self.rule.wanted_level(value, self.level)
        if wanted == self.level:
            self._pending = None
            return None
        if wanted != self._pending:
            self._pending, self._pending_since_ns = wanted, now_ns
        if now_ns - self._pending_since_ns < self.rule.min_duration_s * NS_PER_S:
            return None
        old, self.level, self._pending = self.level, wanted, None
        return Transition(self.rule.name, self.subject, old, wanted, value, now_ns, self.describe())

    def describe(self) -> str:
        """One line saying where the value stands against the threshold it crossed and the hysteresis.

        Never contradicts the value: a level held by hysteresis (or by the minimum duration) while the
        value is already back across the threshold says so, with the value at which the level is left.
        """
        rule, unit = self.rule, self.rule.unit
        where = f'{self.subject} ' if self.subject else ''
        value = f'{self.value:.4g}{unit}'
        side, back = ('above', 'below') if rule.direction is Direction.ABOVE else ('below', 'above')
        if self.level == Level.OK:
            limits = ', '.join(f'{lvl.name} {side} {rule.threshold(lvl):.4g}{unit}'
                               for lvl in (Level.WARN, Level.ERROR) if rule.threshold(lvl) is not None)
            return f'{where}{rule.name}: {value} back within limits ({limits})'
        level = self.level.name
        threshold = rule.threshold(self.level)
        h = rule.hysteresis
        release = threshold - h if rule.direction is Direction.ABOVE else threshold + h
        leave = (f'leaves {level} {back} {release:.4g}{unit} (hysteresis {h:.4g}{unit})' if h > 0 else
                 f'leaves {level} {back} {threshold:.4g}{unit}')
        if rule._crossed(self.value, threshold, 0.0):
            return f'{where}{rule.name}: {value} {side} {level} threshold {threshold:.4g}{unit}; {leave}'
        if rule._crossed(self.value, threshold, h):
            return (f'{where}{rule.name}: {value}, {level} held by hysteresis: it went {side} '
                    f'{threshold:.4g}{unit} and {leave}')
        return (f'{where}{rule.name}: {value}, back {back} {level} release {release:.4g}{unit}; {level} '
                f'clears once that holds {rule.min_duration_s:g} s')


class AlertBook:
    """All alert states of a monitor, keyed by (rule name, subject); created on first use."""

    def __init__(self):
        self._states: dict[tuple[str, str], AlertState] = {}

    def update(self, rule: AlertRule, subject: str, value: float, now_ns: int) -> Transition | None:
        key = (rule.name, subject)
        state = self._states.get(key)
        if state is None or state.rule != rule:
            # A changed rule (new thresholds) starts from OK rather than keeping a level set by old limits.
            state = self._states[key] = AlertState(rule, subject)
        return state.update(value, now_ns)

    def level(self, subject: str) -> Level:
        """Worst held level over every rule on `subject`."""
        levels = [s.level for (_, subj), s in self._states.items() if subj == subject]
        return max(levels, default=Level.OK)

    def active(self, subject: str) -> list[AlertState]:
        """States on `subject` that are not OK, worst first."""
        states = [s for (_, subj), s in self._states.items() if subj == subject and s.level != Level.OK]
        return sorted(states, key=lambda s: -s.level)

    def forget(self, subject: str) -> None:
        for key in [k for k in self._states if k[1] == subject]:
            del self._states[key]

    def counts(self) -> dict[Level, int]:
        result = {Level.WARN: 0, Level.ERROR: 0}
        for state in self._states.values():
            if state.level in result:
                result[state.level] += 1
        return result
