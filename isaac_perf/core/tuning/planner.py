"""Where the tuner starts, and how long it looks: a model-predicted start from the engine's latency-per-batch
curve, windows whose length falls as the frame rate rises, and a bounded window over per-frame reports.

No ROS here. `stream_batcher` measures the curve at engine load (`core.batching.device_engines`) and
publishes it in its /diagnostics as `batch_latency_ms` ("1:0.52 2:0.61 4:0.83 ..."); the qos_tuner reads
it, with the camera count and the offered frame rate, and `plan_start` turns the three into the first
setting to try. `StageWindow` is what the tuner measures with when it reads the batcher's `~/stage_times`
itself (capture stamp -> arrival, per frame) instead of the monitor's fixed 5 s windows.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from isaac_perf.core.tuning.search import Value

# ------------------------------------------------------------------------------- latency per batch curve

@dataclass(frozen=True)
class LatencyCurve:
    """Milliseconds one batch of b frames takes on the engine, at the batch sizes measured (b -> ms)."""
    points: Mapping[int, float]

    def __post_init__(self) -> None:
        bad = {b: ms for b, ms in self.points.items() if b < 1 or not (ms > 0 and math.isfinite(ms))}
        if bad:
            raise ValueError(f'latency curve points {bad}: batch sizes must be >= 1 and times finite and > 0')

    @classmethod
    def parse(cls, text: str) -> LatencyCurve | None:
        """`"1:0.52 2:0.61 4:0.83"` (as `format` writes it) -> a curve; None for '', 'none' or a bad text."""
        points = {}
        for item in text.replace(',', ' ').split():
            b, sep, ms = item.partition(':')
            try:
                points[int(b)] = float(ms)
            except ValueError:
                return None
            if not sep:
                return None
        try:
            return cls(points) if points else None
        except ValueError:
            return None

    def format(self) -> str:
        return ' '.join(f'{b}:{ms:.3f}' for b, ms in sorted(self.points.items()))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.points))

    def ms(self, batch: float) -> float:
        """Time of one batch: linear between measured sizes, proportional beyond the largest."""
        sizes = self.sizes
        if not sizes:
            return math.nan
        xs = np.asarray(sizes, dtype=np.float64)
        ys = np.asarray([self.points[b] for b in sizes], dtype=np.float64)
        if batch > xs[-1]:
            return float(ys[-1] * batch / xs[-1])
        return float(np.interp(batch, xs, ys))

    def capacity_fps(self, batch: float) -> float:
        """Frames per second one stream sustains at full batches of `batch` (compute serialises on a GPU)."""
        return 1000.0 * batch / self.ms(batch)


@dataclass(frozen=True)
class StartPlan:
    """The predicted setting and why: what it expects and whether the budget looks reachable at all."""
    config: dict[str, Value]
    expected_p99_ms: float
    expected_capacity_fps: float
    offered_fps: float
    feasible: bool
    reason: str


def _depth(batch: int, cameras: int, bounds: tuple[int, int]) -> int:
    """Per-camera queue depth that holds one batch's share, and at least 2 (a frame waiting behind one)."""
    want = max(2, math.ceil(batch / max(1, cameras)))
    return int(min(max(want, bounds[0]), bounds[1]))


def plan_start(curve: LatencyCurve, *, cameras: int, offered_fps: float, budget_ms: float,
               batch_sizes: Sequence[int], streams: Sequence[int] = (1,), headroom: float = 0.15,
               load_margin: float = 0.5, jitter: float = 0.5, transport_ms: float = 0.0,
               overhead_ms: float = 0.0, per_frame_ms: float = 0.0,
               depth_bounds: tuple[int, int] = (1, 1000)) -> StartPlan:
    """The first setting to try, from the engine's curve, the load and the budget.

    One batch of b frames costs s(b) = curve(b) + `overhead_ms` + `per_frame_ms` x b (the host work the
    engine curve does not see: staging copies, launches, publishing results). With a dynamic batcher and
    max_queue_delay 0 a batch takes whatever is queued, up to max_batch_size, when a lane frees, so batches
    grow with the load by themselves. Synchronised cameras deliver a burst of `cameras` frames at once; its
    last frame waits ceil(cameras / b) batches, so p99 ~ transport + ceil(cameras / b) x s(b) x (1 + jitter).
    Of the batch sizes whose capacity 1000 b / s(b) covers the offered rate with `load_margin` to spare (a
    GPU at <= 1 / (1 + margin) of capacity keeps queues short) and whose p99 fits (1 - headroom) x budget,
    the lowest p99 (then the smaller batch). Offered rate unknown (0 or NaN) or above every capacity: the
    largest capacity whose p99 (one batch waiting behind one running) fits: throughput is then the
    capacity. A second stream only when the GPU would be more than half busy. Queue depth: one batch's
    share per camera. Nothing fits: the lowest-latency setting, `feasible` False.
    """
    sizes = sorted(int(b) for b in batch_sizes if b >= 1)
    if not sizes:
        raise ValueError('batch_sizes is empty: give the max_batch_size values the search may set')
    limit = budget_ms * (1.0 - headroom)
    cams = max(1, cameras)

    def cost(b: int) -> float:
        return curve.ms(b) + overhead_ms + per_frame_ms * b

    def capacity(b: int) -> float:
        return 1000.0 * b / cost(b)

    known = math.isfinite(offered_fps) and offered_fps > 0
    need = offered_fps * (1.0 + load_margin) if known else math.inf

    def p99(b: int) -> float:
        batches = math.ceil(cams / b) if known and need <= capacity(b) else 2
        return transport_ms + batches * cost(b) * (1.0 + jitter)

    covering = [b for b in sizes if capacity(b) >= need and p99(b) <= limit]
    fits = [b for b in sizes if p99(b) <= limit]
    if covering:
        b = min(covering, key=lambda x: (p99(x), x))
        why = (f'capacity {capacity(b):.0f} FPS covers {offered_fps:.0f} FPS offered x {1 + load_margin:g} '
               f'at the lowest predicted p99')
    elif fits:
        b = max(fits, key=capacity)
        why = ('offered rate unknown' if not known else
               f'{offered_fps:.0f} FPS offered x {1 + load_margin:g} is above every capacity')
        why += f': the largest capacity within {limit:.1f} ms, {capacity(b):.0f} FPS'
    else:
        b = sizes[0]
        why = f'no batch size fits: batch {b} alone is predicted at p99 {p99(b):.1f} ms over {limit:.1f} ms'
    utilisation = (offered_fps / capacity(b)) if known else 1.0
    k = min(streams) if utilisation <= 0.5 or len(streams) == 1 else sorted(streams)[1]
    config: dict[str, Value] = {'max_batch_size': b, 'max_queue_delay_ms': 0.0, 'num_streams': int(k),
                                'queue_depth': _depth(b, cameras, depth_bounds)}
    return StartPlan(config=config, expected_p99_ms=p99(b), expected_capacity_fps=capacity(b),
                     offered_fps=offered_fps if known else math.nan, feasible=bool(fits),
                     reason=f'{why}; batch {b} predicted {cost(b):.2f} ms, p99 ~{p99(b):.1f} ms')


def host_overhead_ms(curve: LatencyCurve, *, fps: float, mean_batch: float, offered_fps: float) -> float:
    """Per-batch host cost the curve does not see, from a saturated window (NaN when it is not one).

    Saturated (delivering under 90 % of what is offered) the pipeline runs batches back to back, so one
    batch of `mean_batch` frames takes 1000 x mean_batch / fps ms; what the engine curve does not explain
    of that is host work (staging, launches, publishing).
    """
    if not (fps > 0 and mean_batch >= 1 and math.isfinite(offered_fps) and fps < 0.9 * offered_fps):
        return math.nan
    return max(0.0, 1000.0 * mean_batch / fps - curve.ms(mean_batch))


# --------------------------------------------------------------------------------- adaptive windows

@dataclass(frozen=True)
class WindowPolicy:
    """How long to wait after a change and how long to measure, in frames, bounded in seconds.

    At a high frame rate the same number of frames (for a p99: a few hundred) comes in less time, so the
    windows shorten as the rate rises; at a low one they stop at `max_s` (with what they have).
    """
    settle_frames: int = 60
    window_frames: int = 300
    min_settle_s: float = 0.2
    min_window_s: float = 0.5
    max_s: float = 4.0

    def __post_init__(self) -> None:
        if self.settle_frames < 0 or self.window_frames < 1:
            raise ValueError('settle_frames must be >= 0 and window_frames >= 1')
        if not 0 <= self.min_settle_s <= self.max_s or not 0 < self.min_window_s <= self.max_s:
            raise ValueError('need 0 <= min_settle_s <= max_s and 0 < min_window_s <= max_s')

    def settle_s(self, fps: float) -> float:
        return _clamp(self.settle_frames / fps if fps > 0 else math.inf, self.min_settle_s, self.max_s)

    def window_s(self, fps: float) -> float:
        return _clamp(self.window_frames / fps if fps > 0 else math.inf, self.min_window_s, self.max_s)


def _clamp(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


@dataclass
class WindowStats:
    frames: int
    duration_s: float
    fps: float
    p50_ms: float
    p99_ms: float
    mean_batch: float


@dataclass
class StageWindow:
    """Per-frame (capture stamp, arrival, engine batch) records in a fixed ring; windows over arrival time.

    A window counts only frames captured at or after `since_ns` (the last change), so a setting is never
    credited with frames that queued under the one before. `record` is O(1); `window` is numpy over the
    ring, run on the tuner's timer.
    """
    capacity: int = 32768
    _stamp: np.ndarray = field(init=False, repr=False)
    _arrival: np.ndarray = field(init=False, repr=False)
    _batch: np.ndarray = field(init=False, repr=False)
    _n: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._stamp = np.zeros(self.capacity, dtype=np.int64)
        self._arrival = np.zeros(self.capacity, dtype=np.int64)
        self._batch = np.zeros(self.capacity, dtype=np.float32)

    def record(self, stamp_ns: int, arrival_ns: int, batch: float = math.nan) -> None:
        i = self._n % self.capacity
        self._stamp[i], self._arrival[i], self._batch[i] = stamp_ns, arrival_ns, batch
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def window(self, start_ns: int, end_ns: int, since_ns: int = 0) -> WindowStats:
        """Frames that arrived in [start_ns, end_ns) and were captured at or after `since_ns`."""
        n = len(self)
        arrival, stamp, batch = self._arrival[:n], self._stamp[:n], self._batch[:n]
        mask = (arrival >= start_ns) & (arrival < end_ns) & (stamp >= since_ns)
        duration = max(1e-9, (end_ns - start_ns) / 1e9)
        count = int(mask.sum())
        if count == 0:
            return WindowStats(0, duration, 0.0, math.nan, math.nan, math.nan)
        lat = (arrival[mask] - stamp[mask]) / 1e6
        b = batch[mask]
        b = b[np.isfinite(b)]
        return WindowStats(count, duration, count / duration, float(np.percentile(lat, 50)),
                           float(np.percentile(lat, 99)), float(b.mean()) if b.size else math.nan)
