"""Stream pool and an event trace: CUDA events for timing and fencing instead of full synchronisation.

`StreamPool` hands out K streams round-robin or to the least-loaded one (the caller says what "load" is,
usually batches in flight). `EventTrace` keeps (start, end) event pairs per stream and, once they have
passed, turns them into a timeline: a chrome://tracing JSON (open in chrome://tracing or Perfetto) and the
interval arithmetic that proves copy/compute overlap.

Nothing here calls `cudaDeviceSynchronize`: work is ordered with `Stream.wait(event)` on the device and
the host only ever blocks on one specific event when it must reuse a buffer.
"""
from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isaac_perf.core.cuda.base import Event, Runtime, Stream

POLICIES = ('round_robin', 'least_loaded')


class StreamPool:
    """K streams from one runtime, chosen round-robin or least-loaded; resizable while in use."""

    def __init__(self, runtime: Runtime, num_streams: int, policy: str = 'round_robin') -> None:
        if policy not in POLICIES:
            raise ValueError(f'stream policy {policy!r} is not one of {", ".join(POLICIES)}')
        if num_streams < 1:
            raise ValueError(f'num_streams={num_streams}: need at least one stream')
        self.runtime = runtime
        self.policy = policy
        self._streams: list[Stream] = []
        self._cursor = 0
        self.resize(num_streams)

    @property
    def streams(self) -> list[Stream]:
        return list(self._streams)

    def __len__(self) -> int:
        return len(self._streams)

    def resize(self, num_streams: int) -> list[Stream]:
        """Grow or shrink to `num_streams`; returns the streams taken out (the caller drains them)."""
        if num_streams < 1:
            raise ValueError(f'num_streams={num_streams}: need at least one stream')
        while len(self._streams) < num_streams:
            stream = self.runtime.new_stream()
            stream.index = len(self._streams)
            self._streams.append(stream)
        retired = self._streams[num_streams:]
        del self._streams[num_streams:]
        self._cursor %= len(self._streams)
        return retired

    def choose(self, load: Callable[[int], int] | None = None) -> int:
        """Index of the stream for the next batch.

        round_robin: 0, 1, ..., K-1, 0, ...  least_loaded: the smallest `load(i)`; ties go to the first
        index at or after the round-robin cursor, so equal loads still rotate.
        """
        k = len(self._streams)
        if self.policy == 'least_loaded' and load is not None:
            order = [(self._cursor + j) % k for j in range(k)]
            best = min(order, key=load)
        else:
            best = self._cursor
        self._cursor = (best + 1) % k
        return best


# ------------------------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class Span:
    """One resolved interval on the timeline (ms since the trace's base event)."""
    name: str  # 'h2d', 'compute', 'd2h', ...
    lane: str  # which stream it ran on, e.g. 'stream0.copy'
    start_ms: float
    end_ms: float
    args: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


class EventTrace:
    """Record (start, end) event pairs; resolve them into `Span`s once the events have passed.

    Bounded: at most `max_spans` resolved spans are kept (the oldest go first). Pending pairs are resolved
    by `collect()`, which never blocks: a pair whose end event has not passed stays pending.
    """

    def __init__(self, runtime: Runtime, max_spans: int = 20000) -> None:
        self.runtime = runtime
        self.base = runtime.new_event(timing=True).record(None)
        self._pending: deque[tuple[str, str, Event, Event, dict[str, Any]]] = deque()
        self.spans: deque[Span] = deque(maxlen=max_spans)
        self.enabled = True

    def add(self, name: str, lane: str, start: Event, end: Event, **args: Any) -> None:
        if self.enabled:
            self._pending.append((name, lane, start, end, args))

    def collect(self, block: bool = False) -> int:
        """Resolve passed pairs into spans; with `block`, wait for every pending pair. Returns how many."""
        done = 0
        keep: deque = deque()
        while self._pending:
            item = self._pending.popleft()
            name, lane, start, end, args = item
            if not end.query():
                if not block:
                    keep.append(item)
                    continue
                end.synchronize()
            self.spans.append(Span(name, lane, self.base.elapsed_ms(start), self.base.elapsed_ms(end), args))
            done += 1
        self._pending = keep
        return done

    def clear(self) -> None:
        self.collect(block=True)
        self.spans.clear()

    def chrome_trace(self) -> dict[str, Any]:
        """The spans as a chrome://tracing document ('X' complete events, microseconds)."""
        lanes = sorted({s.lane for s in self.spans})
        tids = {lane: i for i, lane in enumerate(lanes)}
        events: list[dict[str, Any]] = [
            {'name': 'thread_name', 'ph': 'M', 'pid': 0, 'tid': tids[lane], 'args': {'name': lane}}
            for lane in lanes]
        events += [{'name': s.name, 'cat': s.name, 'ph': 'X', 'pid': 0, 'tid': tids[s.lane],
                    'ts': round(s.start_ms * 1000.0, 3), 'dur': round(s.duration_ms * 1000.0, 3),
                    'args': s.args} for s in self.spans]
        return {'traceEvents': events, 'displayTimeUnit': 'ms',
                'otherData': {'runtime': self.runtime.describe()}}

    def write_chrome_trace(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.chrome_trace()))
        return path


# --------------------------------------------------------------------------------- interval maths


def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals as sorted, disjoint intervals."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def covered_ms(intervals: Iterable[tuple[float, float]]) -> float:
    return sum(e - s for s, e in merge_intervals(intervals))


def overlap_ms(a: Iterable[tuple[float, float]], b: Iterable[tuple[float, float]]) -> float:
    """Time during which some interval of `a` and some interval of `b` run at once."""
    ma, mb = merge_intervals(a), merge_intervals(b)
    i = j = 0
    total = 0.0
    while i < len(ma) and j < len(mb):
        lo = max(ma[i][0], mb[j][0])
        hi = min(ma[i][1], mb[j][1])
        if hi > lo:
            total += hi - lo
        if ma[i][1] < mb[j][1]:
            i += 1
        else:
            j += 1
    return total


def copy_compute_overlap(spans: Iterable[Span], copy_names: tuple[str, ...] = ('h2d',),
                         compute_names: tuple[str, ...] = ('compute',)) -> dict[str, float]:
    """How much copy time was hidden under compute: the number the overlap claim rests on."""
    spans = list(spans)
    copies = [(s.start_ms, s.end_ms) for s in spans if s.name in copy_names]
    computes = [(s.start_ms, s.end_ms) for s in spans if s.name in compute_names]
    copy_total = covered_ms(copies)
    hidden = overlap_ms(copies, computes)
    return {'copy_ms': copy_total, 'compute_ms': covered_ms(computes), 'copy_hidden_ms': hidden,
            'copy_hidden_fraction': hidden / copy_total if copy_total > 0 else 0.0,
            'num_copies': float(len(copies)), 'num_computes': float(len(computes))}
