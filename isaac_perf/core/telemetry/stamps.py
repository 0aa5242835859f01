"""Header stamp sanity and drop counting that a bad stamp cannot fool. Time is passed in.

A stamp 1 h in the future gave a latency of -3.6e6 ms, a zero stamp 1.8e12 ms, both at level OK; a stage
report with a skewed stamp made the pipeline latency negative, which the tuner believed; and a +1000 s
jump between two stamps was counted as 10000 dropped frames. Here:

- `classify_stamp` sorts a stamp against `now_ns` as ok / future / zero / far_past. Only `ok` stamps may
  enter a latency statistic; the others are counted as `bad_stamp` by kind.
- `StampCheck` counts them and raises a level when they persist (most of a recent window is bad), and
  goes back to OK when good stamps return.
- `SequenceGaps` counts drops from sequence numbers (where a transport has them): a gap of n means n-1
  lost, but a jump back or a jump over `max_gap` is a publisher restart or a wrapped counter, counted as
  such and never as thousands of drops.
- `stamp_gap_drops` is the same guard for drop estimates from stamp spacing at a known rate.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from enum import Enum


class StampKind(str, Enum):
    OK = 'ok'
    FUTURE = 'future'
    ZERO = 'zero'
    FAR_PAST = 'far_past'


BAD_KINDS = (StampKind.FUTURE, StampKind.ZERO, StampKind.FAR_PAST)


@dataclass(frozen=True)
class StampLimits:
    """What counts as a sane stamp: at most `future_s` ahead of now (clock skew between hosts), at most
    `max_age_s` behind (older is a replayed or unset clock, not a latency)."""
    future_s: float = 0.5
    max_age_s: float = 60.0

    def __post_init__(self) -> None:
        if not (self.future_s >= 0 and self.max_age_s > 0):
            raise ValueError(f'stamp limits need future_s >= 0 and max_age_s > 0, got {self}')


def classify_stamp(stamp_ns: int, now_ns: int, limits: StampLimits = StampLimits()) -> StampKind:
    """Where `stamp_ns` stands against `now_ns` (both on the same clock, nanoseconds)."""
    if stamp_ns <= 0:
        return StampKind.ZERO
    age_ns = now_ns - stamp_ns
    if age_ns < -limits.future_s * 1e9:
        return StampKind.FUTURE
    if age_ns > limits.max_age_s * 1e9:
        return StampKind.FAR_PAST
    return StampKind.OK


def latency_ms(stamp_ns: int, now_ns: int, limits: StampLimits = StampLimits()) -> float | None:
    """now - stamp in ms for a sane stamp (a small negative skew within `future_s` reads as 0), else None."""
    if classify_stamp(stamp_ns, now_ns, limits) is not StampKind.OK:
        return None
    return max(0.0, (now_ns - stamp_ns) / 1e6)


class StampCheck:
    """Counts stamps by kind; `level()` is 'warn' while bad stamps persist.

    Persist: at least `min_bad` of the last `window` stamps were bad and they are at least `fraction` of
    that window. O(1) per `observe` under a lock; bounded memory.
    """

    def __init__(self, limits: StampLimits = StampLimits(), window: int = 50, fraction: float = 0.2,
                 min_bad: int = 5) -> None:
        if window < 1 or not 0 < fraction <= 1 or min_bad < 1:
            raise ValueError('StampCheck needs window >= 1, 0 < fraction <= 1 and min_bad >= 1')
        self.limits = limits
        self.counts = dict.fromkeys(StampKind, 0)
        self._recent: deque[bool] = deque(maxlen=window)
        self._recent_bad = 0
        self._fraction = fraction
        self._min_bad = min_bad
        self._lock = threading.Lock()
        self.last_bad: StampKind | None = None

    def observe(self, stamp_ns: int, now_ns: int) -> StampKind:
        kind = classify_stamp(stamp_ns, now_ns, self.limits)
        bad = kind is not StampKind.OK
        with self._lock:
            self.counts[kind] += 1
            if len(self._recent) == self._recent.maxlen and self._recent[0]:
                self._recent_bad -= 1
            self._recent.append(bad)
            self._recent_bad += bad
            if bad:
                self.last_bad = kind
        return kind

    @property
    def bad_total(self) -> int:
        with self._lock:
            return sum(self.counts[k] for k in BAD_KINDS)

    def by_kind(self) -> dict[str, int]:
        """Bad stamps by kind, keyed for diagnostics: bad_stamp_future, bad_stamp_zero, ..."""
        with self._lock:
            return {f'bad_stamp_{k.value}': self.counts[k] for k in BAD_KINDS}

    def level(self) -> str:
        with self._lock:
            n = len(self._recent)
            persists = n and self._recent_bad >= self._min_bad and self._recent_bad >= self._fraction * n
        return 'warn' if persists else 'ok'

    def describe(self) -> str:
        """One line for a diagnostic message when the level is raised."""
        with self._lock:
            kind = self.last_bad.value.replace('_', '-') if self.last_bad else 'bad'
            bad, n = self._recent_bad, len(self._recent)
        return (f'{bad} of the last {n} header stamps are unusable (latest: {kind}): they are kept out of '
                'latency; check the publisher fills header.stamp from a clock in sync with this host')


@dataclass
class GapResult:
    dropped: int = 0  # frames lost between the previous number and this one (-1: a late one came after all)
    duplicate: bool = False  # the same number again
    late: bool = False  # a smaller number within the reorder window: counted lost before, now arrived
    reset: bool = False  # a jump back or over max_gap: a restart, not a loss


class SequenceGaps:
    """Drops from per-message sequence numbers, with a guard against restarts and wrapped counters."""

    def __init__(self, max_gap: int = 1000, reorder_window: int = 16) -> None:
        self.max_gap = max_gap
        self.reorder_window = reorder_window
        self.last: int | None = None
        self.dropped = 0
        self.duplicates = 0
        self.resets = 0

    def observe(self, seq: int) -> GapResult:
        last, self.last = self.last, seq
        if last is None:
            return GapResult()
        step = seq - last
        if step == 1:
            return GapResult()
        if step == 0:
            self.duplicates += 1
            return GapResult(duplicate=True)
        if step < 0 and -step < self.reorder_window and self.dropped > 0:
            self.last = last  # keep the high-water mark
            self.dropped -= 1  # it was counted as lost when the later one came
            return GapResult(dropped=-1, late=True)
        if step <= 0 or step > self.max_gap:
            self.resets += 1
            return GapResult(reset=True)
        self.dropped += step - 1
        return GapResult(dropped=step - 1)


def gap_drops(gap_ns: float, period_ns: float, max_missing: int = 100) -> int:
    """Messages missing in a gap of `gap_ns` at one every `period_ns` (1.5 periods absorb jitter), or 0
    when the gap is not a believable loss (negative, or over `max_missing` periods: a jump or a pause)."""
    if period_ns <= 0 or gap_ns <= 1.5 * period_ns:
        return 0
    missing = round(gap_ns / period_ns) - 1
    return missing if 0 < missing <= max_missing else 0


def stamp_gap_drops(prev_stamp_ns: int, stamp_ns: int, period_ns: int, max_missing: int = 100) -> int:
    """Frames missing between two stamps of a source publishing every `period_ns` (see gap_drops); 0 for
    an unknown previous stamp or stamps going back."""
    if prev_stamp_ns <= 0 or stamp_ns <= prev_stamp_ns:
        return 0
    return gap_drops(stamp_ns - prev_stamp_ns, period_ns, max_missing)


class PublisherGaps:
    """`SequenceGaps` per publisher (sequence numbers are per publisher), at most `max_sources` kept."""

    def __init__(self, max_sources: int = 64, max_gap: int = 1000) -> None:
        self._gaps: dict[object, SequenceGaps] = {}
        self._max_sources = max_sources
        self._max_gap = max_gap
        self.dropped = 0
        self.resets = 0

    def observe(self, source: object, seq: int | None) -> GapResult:
        if seq is None:
            return GapResult()
        gaps = self._gaps.get(source)
        if gaps is None:
            if len(self._gaps) >= self._max_sources:
                self._gaps.clear()  # bound memory; costs at most one missed gap per publisher
            gaps = self._gaps[source] = SequenceGaps(self._max_gap)
        result = gaps.observe(seq)
        self.dropped += result.dropped
        self.resets += result.reset
        return result
