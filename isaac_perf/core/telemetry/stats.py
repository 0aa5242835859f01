"""Bounded statistics for message streams and per-frame stage reports (pure numpy, no rclpy).

Every `record` is O(1): it writes into preallocated numpy rings and updates a few counters. The maths
(rates, percentiles, jitter) runs in `snapshot(now_ns)`, which the monitor calls on a timer. Time is always
passed in as integer nanoseconds so tests can use exact numbers.

Conventions:
- rates in Hz, latencies and jitter in milliseconds, sizes in bytes, bandwidth in bytes per second;
- a statistic with no data is NaN (never 0, which would look like a measurement);
- statistics cover the messages that arrived within the last `window_s` seconds before `now_ns`
  (at most `capacity` of them); counters (`count`, `drops`, `bytes_total`) cover the whole lifetime.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from isaac_perf.core.telemetry.stamps import StampCheck, StampKind, gap_drops

NAN = float('nan')
NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NO_STAMP = np.iinfo(np.int64).min  # marks "this message had no header stamp" in the stamp ring
MAX_SOURCES = 64                   # publishers whose sequence numbers are tracked per stream
MAX_SEQUENCE_GAP = 10_000          # a larger jump in a publisher's sequence number is a restart/wrap
MAX_STAMP_GAP_PERIODS = 100        # a larger gap between stamps is a clock jump or a pause, not loss


@dataclass(frozen=True)
class Summary:
    """Distribution summary of a set of values (NaN everywhere when there are none)."""
    count: int = 0
    mean: float = NAN
    std: float = NAN
    min: float = NAN
    max: float = NAN
    p50: float = NAN
    p90: float = NAN
    p99: float = NAN

    def as_dict(self, prefix: str = '') -> dict[str, float]:
        return {f'{prefix}{k}': float(getattr(self, k))
                for k in ('mean', 'std', 'min', 'max', 'p50', 'p90', 'p99')}


def percentile(values, q: float) -> float:
    """Linear-interpolated percentile `q` (0-100) of `values`, NaNs ignored; NaN when there are none.

    The one percentile definition of the package (numpy's default, as `summarize` uses), so a p99 from
    the monitor, `isaac-perf run`, the bench harness, the profiler report and the benchmarks agree.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if values.size else NAN


def summarize(values: np.ndarray) -> Summary:
    """Mean, population std, min, max and linear-interpolated p50/p90/p99 of `values` (NaNs ignored)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Summary()
    p50, p90, p99 = np.percentile(values, (50.0, 90.0, 99.0))
    return Summary(count=int(values.size), mean=float(values.mean()), std=float(values.std()),
                   min=float(values.min()), max=float(values.max()),
                   p50=float(p50), p90=float(p90), p99=float(p99))


def means_by_name(rows) -> dict[str, float]:
    """Per-name mean over rows of {name: value} (e.g. each report's stages_ms); a name missing from a row
    does not count for that row. Names keep their first-seen order."""
    columns: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    return {name: summarize(np.asarray(values)).mean for name, values in columns.items()}


class Ring:
    """Fixed-capacity numpy ring buffer: O(1) push, oldest-first copy on demand."""

    def __init__(self, capacity: int, dtype=np.float64, fill=np.nan):
        if capacity < 1:
            raise ValueError(f'ring capacity must be >= 1, got {capacity}')
        self._data = np.full(capacity, fill, dtype=dtype)
        self._next = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._data.size

    def __len__(self) -> int:
        return self._size

    def push(self, value) -> None:
        self._data[self._next] = value
        self._next = (self._next + 1) % self._data.size
        if self._size < self._data.size:
            self._size += 1

    def values(self) -> np.ndarray:
        """A copy of the stored values, oldest first."""
        if self._size < self._data.size:
            return self._data[:self._size].copy()
        return np.concatenate((self._data[self._next:], self._data[:self._next]))

    def clear(self) -> None:
        self._next = 0
        self._size = 0


def _rate_hz(times_ns: np.ndarray) -> float:
    """Events per second from sorted event times: (n - 1) intervals over the span they cover."""
    if times_ns.size < 2:
        return NAN
    span_ns = int(times_ns[-1]) - int(times_ns[0])
    if span_ns <= 0:
        return NAN
    return (times_ns.size - 1) * NS_PER_S / span_ns


@dataclass(frozen=True)
class StreamSnapshot:
    """What one watched stream looked like over the window ending at `now_ns`."""
    count: int                  # messages ever recorded
    window_count: int           # messages inside the window
    rate_hz: float              # arrival rate inside the window (receipt times)
    stamp_rate_hz: float        # rate from header stamps inside the window (NaN without headers)
    bandwidth_bps: float        # bytes per second inside the window
    mean_size_bytes: float
    bytes_total: int
    latency_ms: Summary         # receipt time minus header stamp
    last_latency_ms: float      # of the newest message that had a stamp
    interval_ms: Summary        # inter-arrival times; interval_ms.std is the jitter
    jitter_ms: float            # std of inter-arrival times
    max_abs_jitter_ms: float    # largest |interval - expected period| (mean interval if no expected rate)
    drops: int                  # estimated lost messages, lifetime (sequence gaps or period gaps)
    age_s: float                # seconds since the newest message (inf if none yet)
    expected_rate_hz: float
    bad_stamps: dict[str, int] = field(default_factory=dict)  # bad_stamp_future/_zero/_far_past counts
    stamp_level: str = 'ok'     # 'warn' while unusable stamps persist (they are kept out of latency)
    sequence_resets: int = 0    # publisher restarts / counter jumps seen (not counted as drops)


class StreamStats:
    """Rate, bandwidth, latency, jitter and drops of one message stream.

    `record` is called from a subscription callback and does O(1) work under a lock; `snapshot` runs on a
    timer. Drops are counted at record time: from per-publisher sequence numbers when given, otherwise
    from gaps between consecutive header stamps (or arrival times when there is no stamp) longer than 1.5
    expected periods.
    """

    def __init__(self, capacity: int = 4096, window_s: float = 5.0, expected_rate_hz: float = 0.0):
        self._arrival = Ring(capacity, np.int64, 0)
        self._stamp = Ring(capacity, np.int64, NO_STAMP)
        self._size = Ring(capacity, np.int64, 0)
        self._lock = threading.Lock()
        self.window_s = float(window_s)
        self.expected_rate_hz = float(expected_rate_hz)
        self.count = 0
        self.bytes_total = 0
        self.drops = 0
        self._last_arrival_ns: int | None = None
        self._last_stamp_ns: int | None = None
        self._last_seq: dict[object, int] = {}
        self._last_latency_ns: int | None = None
        self.stamps = StampCheck()
        self.sequence_resets = 0

    def set_expected_rate(self, rate_hz: float) -> None:
        self.expected_rate_hz = float(rate_hz)

    def record(self, now_ns: int, size_bytes: int = 0, stamp_ns: int | None = None,
               seq: int | None = None, source: object = None) -> None:
        """Note one message received at `now_ns` (O(1)).

        `seq` is the publisher's sequence number when the middleware gives one, `source` names the
        publisher (sequence numbers are per publisher).
        """
        if stamp_ns is not None and self.stamps.observe(stamp_ns, now_ns) is not StampKind.OK:
            stamp_ns = None  # a future, zero or far-past stamp: counted as bad_stamp, kept out of latency
        with self._lock:
            self._count_drops(now_ns, stamp_ns, seq, source)
            self._arrival.push(now_ns)
            self._stamp.push(NO_STAMP if stamp_ns is None else stamp_ns)
            self._size.push(size_bytes)
            self.count += 1
            self.bytes_total += size_bytes
            self._last_arrival_ns = now_ns
            if stamp_ns is not None:
                self._last_stamp_ns = stamp_ns
                self._last_latency_ns = now_ns - stamp_ns

    def _count_drops(self, now_ns: int, stamp_ns: int | None, seq: int | None, source: object) -> None:
        if seq is not None:
            last = self._last_seq.get(source)
            if last is not None and (seq <= last or seq - last > MAX_SEQUENCE_GAP):
                self.sequence_resets += 1  # a restarted publisher or a jump: not thousands of drops
            elif last is not None and seq > last + 1:
                self.drops += seq - last - 1
            if last is None and len(self._last_seq) >= MAX_SOURCES:
                self._last_seq.clear()   # bound memory; costs at most one missed gap per publisher
            self._last_seq[source] = seq
            return
        if self.expected_rate_hz <= 0.0:
            return
        if stamp_ns is not None and self._last_stamp_ns is not None:
            gap_ns = stamp_ns - self._last_stamp_ns
        elif stamp_ns is None and self._last_arrival_ns is not None:
            gap_ns = now_ns - self._last_arrival_ns
        else:
            return
        period_ns = NS_PER_S / self.expected_rate_hz
        # A gap of k periods means k - 1 messages never came; 1.5 periods absorbs ordinary jitter. A gap
        # of more than MAX_STAMP_GAP_PERIODS is a clock jump or a pause, not a loss (stamp_gap_drops).
        self.drops += gap_drops(gap_ns, period_ns, MAX_STAMP_GAP_PERIODS)

    def reset(self) -> None:
        with self._lock:
            for ring in (self._arrival, self._stamp, self._size):
                ring.clear()
            self.count = self.bytes_total = self.drops = 0
            self.stamps = StampCheck()
            self.sequence_resets = 0
            self._last_arrival_ns = self._last_stamp_ns = self._last_latency_ns = None
            self._last_seq.clear()

    def snapshot(self, now_ns: int) -> StreamSnapshot:
        with self._lock:
            arrival = self._arrival.values()
            stamp = self._stamp.values()
            size = self._size.values()
            count, bytes_total, drops = self.count, self.bytes_total, self.drops
            last_arrival, last_latency = self._last_arrival_ns, self._last_latency_ns
        in_window = arrival > now_ns - int(self.window_s * NS_PER_S)
        arrival, stamp, size = arrival[in_window], stamp[in_window], size[in_window]
        has_stamp = stamp != NO_STAMP
        latency = (arrival[has_stamp] - stamp[has_stamp]) / NS_PER_MS
        intervals = np.diff(arrival) / NS_PER_MS
        interval = summarize(intervals)
        if intervals.size:
            reference_ms = 1000.0 / self.expected_rate_hz if self.expected_rate_hz > 0 else interval.mean
            max_abs_jitter = float(np.max(np.abs(intervals - reference_ms)))
        else:
            max_abs_jitter = NAN
        rate = _rate_hz(arrival)
        # Bandwidth counts the bytes of the messages after the first one over the same span as the rate.
        bandwidth = NAN if math.isnan(rate) else float(size[1:].sum()) * NS_PER_S / (arrival[-1] - arrival[0])
        stamps = np.sort(stamp[has_stamp])
        return StreamSnapshot(
            count=count, window_count=int(arrival.size), rate_hz=rate, stamp_rate_hz=_rate_hz(stamps),
            bandwidth_bps=bandwidth, mean_size_bytes=float(size.mean()) if size.size else NAN,
            bytes_total=bytes_total, latency_ms=summarize(latency),
            last_latency_ms=NAN if last_latency is None else last_latency / NS_PER_MS,
            interval_ms=interval, jitter_ms=interval.std, max_abs_jitter_ms=max_abs_jitter, drops=drops,
            age_s=math.inf if last_arrival is None else (now_ns - last_arrival) / NS_PER_S,
            expected_rate_hz=self.expected_rate_hz, bad_stamps=self.stamps.by_kind(),
            stamp_level=self.stamps.level(), sequence_resets=self.sequence_resets)


@dataclass(frozen=True)
class StageSnapshot:
    """Aggregated stage-time reports of one source (one `.../stage_times` topic)."""
    reports: int                     # reports ever recorded
    frames: int                      # frames ever reported (sum of batch sizes)
    fps: float                       # frames per second inside the window
    latency_ms: Summary              # receipt time minus frame stamp (end-to-end up to the report)
    batch_size: Summary
    stages_ms: dict[str, Summary] = field(default_factory=dict)  # includes 'total'
    age_s: float = math.inf
    malformed: int = 0
    engine_batch_size: Summary = Summary()   # frames in the GPU batch each frame ran in (stream_batcher)
    bad_stamps: dict[str, int] = field(default_factory=dict)  # reports whose frame stamp was unusable
    stamp_level: str = 'ok'


class StageStats:
    """Per-source aggregation of stage-time reports: FPS, end-to-end latency, per-stage percentiles.

    At most `max_stages` distinct stage names are kept (the first ones seen), so a misbehaving reporter
    cannot grow memory without bound.
    """

    def __init__(self, capacity: int = 2048, window_s: float = 5.0, max_stages: int = 16):
        self._capacity = capacity
        self._arrival = Ring(capacity, np.int64, 0)
        self._latency = Ring(capacity)
        self._batch = Ring(capacity)
        self._engine_batch = Ring(capacity)
        self._stages: dict[str, Ring] = {}
        self._max_stages = max_stages
        self._lock = threading.Lock()
        self.window_s = float(window_s)
        self.reports = 0
        self.frames = 0
        self.malformed = 0
        self._last_arrival_ns: int | None = None
        self.stamps = StampCheck()

    def record(self, now_ns: int, stamp_ns: int, batch_size: int, stages_ms: dict[str, float],
               engine_batch_size: float = NAN) -> None:
        """Note one report received at `now_ns`; `stamp_ns` 0 means the frame stamp is unknown;
        `engine_batch_size` NaN where the reporter does not batch across streams."""
        # A frame stamp in the future, zero or far past would give a negative or absurd latency (which the
        # tuner believed): it is counted as bad_stamp and its latency left out (NaN).
        # (0 means "stamp unknown" in a stage report: neither a latency nor a bad stamp.)
        sane = stamp_ns > 0 and self.stamps.observe(stamp_ns, now_ns) is StampKind.OK
        with self._lock:
            self._arrival.push(now_ns)
            self._engine_batch.push(engine_batch_size)
            self._latency.push(max(0.0, (now_ns - stamp_ns) / NS_PER_MS) if sane else np.nan)
            self._batch.push(batch_size)
            total = 0.0
            for name, value in stages_ms.items():
                ring = self._stage_ring(name)
                if ring is not None:
                    ring.push(value)
                total += value
            total_ring = self._stage_ring('total')
            if total_ring is not None:
                total_ring.push(total)
            # Stages missing from this report get NaN so all stage rings stay aligned with arrivals.
            for name, ring in self._stages.items():
                if name != 'total' and name not in stages_ms:
                    ring.push(np.nan)
            self.reports += 1
            self.frames += batch_size
            self._last_arrival_ns = now_ns

    def _stage_ring(self, name: str) -> Ring | None:
        ring = self._stages.get(name)
        if ring is None and len(self._stages) < self._max_stages:
            ring = Ring(self._capacity)
            # Pad with NaN for the reports already stored so the ring lines up with the arrival ring.
            for _ in range(len(self._arrival) - 1):
                ring.push(np.nan)
            self._stages[name] = ring
        return ring

    def note_malformed(self) -> None:
        with self._lock:
            self.malformed += 1

    def reset(self) -> None:
        """Forget every report (counters too), keeping capacity and window."""
        with self._lock:
            for ring in (self._arrival, self._latency, self._batch):
                ring.clear()
            self._stages.clear()
            self.reports = self.frames = self.malformed = 0
            self._last_arrival_ns = None

    def snapshot(self, now_ns: int, window_s: float | None = None) -> StageSnapshot:
        """Statistics of the reports within `window_s` (default: the configured window) before `now_ns`."""
        window_s = self.window_s if window_s is None else window_s
        with self._lock:
            arrival = self._arrival.values()
            latency = self._latency.values()
            batch = self._batch.values()
            engine_batch = self._engine_batch.values()
            stages = {name: ring.values() for name, ring in self._stages.items()}
            reports, frames, malformed = self.reports, self.frames, self.malformed
            last = self._last_arrival_ns
        in_window = arrival > now_ns - int(window_s * NS_PER_S)
        arrival = arrival[in_window]
        batch = batch[in_window]
        fps = NAN
        if arrival.size >= 2 and arrival[-1] > arrival[0]:
            # Frames after the first report, over the span from the first to the last report.
            fps = float(batch[1:].sum()) * NS_PER_S / float(arrival[-1] - arrival[0])
        stage_summaries = {}
        for name, values in stages.items():
            stage_summaries[name] = summarize(values[in_window])
        return StageSnapshot(
            reports=reports, frames=frames, fps=fps, latency_ms=summarize(latency[in_window]),
            batch_size=summarize(batch), stages_ms=stage_summaries,
            age_s=math.inf if last is None else (now_ns - last) / NS_PER_S, malformed=malformed,
            engine_batch_size=summarize(engine_batch[in_window]),
            bad_stamps=self.stamps.by_kind(), stamp_level=self.stamps.level())
