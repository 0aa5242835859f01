"""Topic statistics in greenwave_monitor's own terms, plus what greenwave cannot tell (pure, time passed in).

A watched topic is a stream of messages, each seen as (arrival_ns, stamp_ns, pub_seq, source): when it
arrived here (the node-time source), its header stamp (the message-time source; None without a header),
the publisher's publication sequence number (None where the middleware gives none) and which publisher
sent it (sequence numbers count per publisher).

Greenwave definitions (greenwave_monitor `include/greenwave_diagnostics.hpp`, read at commit 544eab0),
kept to the letter, integer microseconds included, so the diagnostic keys mean what greenwave's mean:

- two time series, node time (arrival) and message time (header stamp), each in integer microseconds
  (`ns // 1000`); the first message of a series only sets its previous time;
- `frame_rate_node` / `frame_rate_msg`: 1e6 / mean of the last `window_size` (greenwave's
  `filter_window_size`, 300) inter-message intervals of the series, in Hz;
- with an expected rate: `expected_dt_us = int(1e6 / hz)`, `tolerance_us = int(1e6 / hz * percent / 100)`;
  per interval `abs_jitter = |dt_us - expected_dt_us|`; `mean_abs_jitter_*` = integer mean of the last
  `window_size` abs jitters; `max_abs_jitter_*` = the largest ever (greenwave never resets it);
  `num_jitter_outliers_*` = intervals whose abs jitter exceeded the tolerance, ever;
- `total_dropped_frames` is greenwave's message-time outlier count: intervals off the expected period by
  more than the tolerance, an early frame included and a gap of k periods counted once. It is not a count
  of lost messages; those are `drops_sequence` / `drops_stamp_gap` below;
- `current_delay_from_realtime_ms`: arrival minus stamp of the newest message, from the microsecond values;
  NaN when negative or above a year (greenwave's unsigned arithmetic and "nonsense" cut-off);
- `num_non_increasing_msg`: header stamps not after the previous one.

Ours, beside them (each says where it comes from):

- `received_rate_hz`: messages that arrived here over the last `window_s` seconds, (n - 1) / span;
- `publisher_rate_hz`: what the publishers sent, from their sequence numbers: per publisher, the
  sequence-number advance over the time between its first and last message in the window, summed over
  publishers. That time is the middleware's source timestamp (when the publisher wrote them) where given,
  else the header stamps when all are present and increasing, else the arrival times. Lost
  messages do not lower it, which is the point: `ros2 topic hz` only sees what arrived;
- `transport_loss_fraction`: of the messages the publishers sent in the window (sequence advance), the
  share that never arrived here;
- drops, lifetime, labelled by source: `drops_sequence` from gaps in a publisher's sequence numbers (exact
  where the middleware provides them); without sequence numbers, `drops_stamp_gap` from gaps between
  header stamps (arrival times without a header) longer than 1.5 expected periods, a gap of k periods
  counting k - 1. A jump guard keeps restarts and clock steps out of the drops: a sequence number not above
  the last one, or a gap above `max_sequence_gap`, is a `sequence_resets`; a stamp going backwards or a gap
  above `max_gap_s` is a `stamp_jumps`. `messages_lost` counts the middleware's message-lost events
  (`note_message_lost`), which DDS raises for samples it knows it dropped.

`record` is O(1) under a lock (callbacks only record); `snapshot(now_ns)` does the window maths.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from isaac_perf.core.telemetry.stats import NO_STAMP, Ring

NAN = float('nan')
NS_PER_S = 1_000_000_000
US_PER_S = 1_000_000
NS_PER_US = 1_000
GREENWAVE_WINDOW = 300                          # greenwave's filter_window_size default
NONSENSE_LATENCY_MS = 365 * 24 * 60 * 60 * 1000  # greenwave's kNonsenseLatencyMs
NO_SEQ = -1
MAX_SOURCES = 64                                # publishers tracked per stream (bounded memory)
DROP_SOURCES = ('sequence', 'stamp_gap', 'arrival_gap', 'none')


class RollingWindow:
    """greenwave's RollingWindow: the last `window_size` intervals and abs jitters, in integer us."""

    def __init__(self, window_size: int = GREENWAVE_WINDOW):
        if window_size < 1:
            raise ValueError(f'window_size must be >= 1 message, got {window_size}')
        self.window_size = window_size
        self._intervals: deque[int] = deque()
        self._interval_sum = 0
        self._jitters: deque[int] = deque()
        self._jitter_sum = 0
        self.max_abs_jitter_us = 0
        self.outliers = 0

    def add_interval(self, dt_us: int) -> None:
        self._intervals.append(dt_us)
        self._interval_sum += dt_us
        if len(self._intervals) > self.window_size:
            self._interval_sum -= self._intervals.popleft()

    def add_jitter(self, abs_jitter_us: int, tolerance_us: int) -> None:
        self.max_abs_jitter_us = max(self.max_abs_jitter_us, abs_jitter_us)
        self._jitters.append(abs_jitter_us)
        self._jitter_sum += abs_jitter_us
        if len(self._jitters) > self.window_size:
            self._jitter_sum -= self._jitters.popleft()
        if abs_jitter_us > tolerance_us:
            self.outliers += 1

    def frame_rate_hz(self) -> float:
        """1e6 / mean interval (NaN with no interval yet, where greenwave prints 0)."""
        if not self._intervals or self._interval_sum == 0:
            return NAN
        return US_PER_S / (self._interval_sum / len(self._intervals))

    def mean_abs_jitter_us(self) -> float:
        """Integer mean of the stored abs jitters, as greenwave's int64 division (NaN with none)."""
        if not self._jitters:
            return NAN
        return float(self._jitter_sum // len(self._jitters))  # int64 division (values are >= 0)

    @property
    def jitter_count(self) -> int:
        return len(self._jitters)


class TimeSeries:
    """One greenwave time source (node time or message time)."""

    def __init__(self, window_size: int):
        self.window = RollingWindow(window_size)
        self.prev_us: int | None = None
        self.non_increasing = 0

    def update(self, t_us: int, expected_dt_us: int, tolerance_us: int) -> None:
        if self.prev_us is None:
            self.prev_us = t_us
            return
        dt_us = t_us - self.prev_us
        self.window.add_interval(dt_us)
        if expected_dt_us > 0:
            self.window.add_jitter(abs(dt_us - expected_dt_us), tolerance_us)
        if t_us <= self.prev_us:
            self.non_increasing += 1
        self.prev_us = t_us


def expected_dt_us(rate_hz: float) -> int:
    """greenwave's expected period: int64(1e6 / hz), 0 without an expected rate."""
    return int(US_PER_S / rate_hz) if rate_hz > 0 else 0


def tolerance_us(rate_hz: float, tolerance_percent: float) -> int:
    """greenwave's jitter tolerance: int((1e6 / hz) * (percent / 100)), 0 without an expected rate."""
    return int((US_PER_S / rate_hz) * (tolerance_percent / 100.0)) if rate_hz > 0 else 0


@dataclass(frozen=True)
class GreenwaveSnapshot:
    """One stream at `now_ns`. Rates in Hz, jitter in microseconds, delay in ms; NaN where unknown."""
    # greenwave's keys, greenwave's definitions
    frame_rate_node_hz: float
    frame_rate_msg_hz: float
    current_delay_ms: float
    mean_abs_jitter_node_us: float
    max_abs_jitter_node_us: float
    mean_abs_jitter_msg_us: float
    max_abs_jitter_msg_us: float
    num_jitter_outliers_node: int
    num_jitter_outliers_msg: int
    num_non_increasing_msg: int
    total_dropped_frames: int            # greenwave's: message-time jitter outliers
    expected_frequency_hz: float
    tolerance_percent: float
    # ours
    count: int                           # messages recorded, lifetime
    window_count: int                    # messages in the last window_s
    received_rate_hz: float
    publisher_rate_hz: float             # from publication sequence numbers (NaN without them)
    transport_loss_fraction: float       # 0..1 of what the publishers sent in the window (NaN without seq)
    publishers_seen: int                 # publishers with a message in the window
    drops_sequence: int
    drops_stamp_gap: int                 # header stamp gaps, or arrival gaps without a header
    drop_source: str                     # one of DROP_SOURCES: which counter is authoritative here
    messages_lost: int                   # middleware message-lost events (sum of their count changes)
    sequence_resets: int
    stamp_jumps: int
    age_s: float

    @property
    def drops(self) -> int:
        """Lost messages by the best source this stream has (sequence numbers, else stamp gaps)."""
        return self.drops_sequence if self.drop_source == 'sequence' else self.drops_stamp_gap


class GreenwaveStream:
    """greenwave's statistics of one topic, publisher rate from sequence numbers, drops by source.

    `window_size`: greenwave's message window (300). `window_s`, `capacity`: the time window of the
    received/publisher rates and transport loss, kept in rings of `capacity` messages (keep it above rate x
    window_s). `max_sequence_gap`, `max_gap_s`: the jump guard (see the module docstring).
    """

    def __init__(self, expected_rate_hz: float = 0.0, tolerance_percent: float = 10.0,
                 window_size: int = GREENWAVE_WINDOW, window_s: float = 5.0, capacity: int = 8192,
                 max_sequence_gap: int = 1_000_000, max_gap_s: float = 10.0):
        if window_s <= 0:
            raise ValueError(f'window_s must be > 0 s, got {window_s}')
        if tolerance_percent < 0:
            raise ValueError(f'tolerance_percent must be >= 0, got {tolerance_percent}')
        self.window_s = float(window_s)
        self.max_sequence_gap = int(max_sequence_gap)
        self.max_gap_ns = int(max_gap_s * NS_PER_S)
        self._lock = threading.Lock()
        self._window_size = window_size
        self._capacity = capacity
        self.set_expected_rate(expected_rate_hz, tolerance_percent)
        self.reset()

    def set_expected_rate(self, rate_hz: float, tolerance_percent: float | None = None) -> None:
        """greenwave's setExpectedDt (rate 0 clears it); takes effect from the next interval."""
        if rate_hz < 0:
            raise ValueError(f'expected rate must be >= 0 Hz (0 = unknown), got {rate_hz}')
        self.expected_rate_hz = float(rate_hz)
        if tolerance_percent is not None:
            self.tolerance_percent = float(tolerance_percent)
        self._expected_dt_us = expected_dt_us(self.expected_rate_hz)
        self._tolerance_us = tolerance_us(self.expected_rate_hz, self.tolerance_percent)

    def reset(self) -> None:
        with self._lock:
            self._node = TimeSeries(self._window_size)
            self._msg = TimeSeries(self._window_size)
            self._arrival = Ring(self._capacity, np.int64, 0)
            self._stamp = Ring(self._capacity, np.int64, NO_STAMP)
            self._written = Ring(self._capacity, np.int64, NO_STAMP)
            self._seq = Ring(self._capacity, np.int64, NO_SEQ)
            self._source = Ring(self._capacity, np.int16, 0)
            self._source_ids: dict[Hashable, int] = {}
            self._last_seq: dict[int, int] = {}
            self._last_gap_ns: int | None = None     # previous stamp (or arrival) for stamp-gap drops
            self._last_arrival_ns: int | None = None
            self._delay_ms = NAN
            self._seq_seen = False
            self._stamp_seen = False
            self.count = 0
            self.drops_sequence = 0
            self.drops_stamp_gap = 0
            self.messages_lost = 0
            self.sequence_resets = 0
            self.stamp_jumps = 0

    def note_message_lost(self, count_change: int) -> None:
        """A middleware message-lost event (QoS event `total_count_change`)."""
        with self._lock:
            self.messages_lost += max(0, int(count_change))

    def _source_id(self, source: Hashable) -> int:
        sid = self._source_ids.get(source)
        if sid is None:
            if len(self._source_ids) >= MAX_SOURCES:
                # Bound memory: forget the publishers; costs at most one missed gap per publisher.
                self._source_ids.clear()
                self._last_seq.clear()
            sid = len(self._source_ids)
            self._source_ids[source] = sid
        return sid

    def record(self, arrival_ns: int, stamp_ns: int | None = None, pub_seq: int | None = None,
               source: Hashable = None, source_ns: int | None = None) -> None:
        """Note one message (O(1)). `pub_seq` <= 0 or None: the middleware gave no sequence number;
        `source` names the publisher, `source_ns` is the middleware's source (write) timestamp if any."""
        with self._lock:
            arrival_us = arrival_ns // NS_PER_US
            self._node.update(arrival_us, self._expected_dt_us, self._tolerance_us)
            if stamp_ns is not None:
                stamp_us = stamp_ns // NS_PER_US
                self._msg.update(stamp_us, self._expected_dt_us, self._tolerance_us)
                delay_ms = (arrival_us - stamp_us) / 1000.0
                self._delay_ms = delay_ms if 0 <= delay_ms <= NONSENSE_LATENCY_MS else NAN
                self._stamp_seen = True
            sid = 0
            if pub_seq is not None and pub_seq > 0:
                sid = self._source_id(source)
                self._count_sequence(sid, int(pub_seq))
                self._seq_seen = True
            else:
                pub_seq = NO_SEQ
                self._count_stamp_gap(arrival_ns if stamp_ns is None else stamp_ns)
            self._arrival.push(arrival_ns)
            self._stamp.push(NO_STAMP if stamp_ns is None else stamp_ns)
            self._written.push(NO_STAMP if not source_ns else source_ns)
            self._seq.push(pub_seq)
            self._source.push(sid)
            self._last_arrival_ns = arrival_ns
            self.count += 1

    def _count_sequence(self, sid: int, seq: int) -> None:
        last = self._last_seq.get(sid)
        self._last_seq[sid] = seq
        if last is None:
            return
        gap = seq - last - 1
        if gap < 0 or gap > self.max_sequence_gap:
            self.sequence_resets += 1
        else:
            self.drops_sequence += gap

    def _count_stamp_gap(self, t_ns: int) -> None:
        last, self._last_gap_ns = self._last_gap_ns, t_ns
        if last is None or self.expected_rate_hz <= 0:
            return
        gap_ns = t_ns - last
        if gap_ns < 0 or gap_ns > self.max_gap_ns:
            self.stamp_jumps += 1
            return
        period_ns = NS_PER_S / self.expected_rate_hz
        # A gap of k periods means k - 1 messages never came; 1.5 periods absorbs ordinary jitter.
        if gap_ns > 1.5 * period_ns:
            self.drops_stamp_gap += int(round(gap_ns / period_ns)) - 1

    def snapshot(self, now_ns: int) -> GreenwaveSnapshot:
        with self._lock:
            node, msg = self._node.window, self._msg.window
            greenwave = dict(
                frame_rate_node_hz=node.frame_rate_hz(), frame_rate_msg_hz=msg.frame_rate_hz(),
                current_delay_ms=self._delay_ms,
                mean_abs_jitter_node_us=node.mean_abs_jitter_us(),
                max_abs_jitter_node_us=float(node.max_abs_jitter_us) if node.jitter_count else NAN,
                mean_abs_jitter_msg_us=msg.mean_abs_jitter_us(),
                max_abs_jitter_msg_us=float(msg.max_abs_jitter_us) if msg.jitter_count else NAN,
                num_jitter_outliers_node=node.outliers, num_jitter_outliers_msg=msg.outliers,
                num_non_increasing_msg=self._msg.non_increasing, total_dropped_frames=msg.outliers,
                expected_frequency_hz=self.expected_rate_hz, tolerance_percent=self.tolerance_percent)
            arrival, stamp, written = self._arrival.values(), self._stamp.values(), self._written.values()
            seq, source = self._seq.values(), self._source.values()
            counters = dict(count=self.count, drops_sequence=self.drops_sequence,
                            drops_stamp_gap=self.drops_stamp_gap, messages_lost=self.messages_lost,
                            sequence_resets=self.sequence_resets, stamp_jumps=self.stamp_jumps)
            drop_source = ('sequence' if self._seq_seen else
                           'none' if self.expected_rate_hz <= 0 else
                           'stamp_gap' if self._stamp_seen else 'arrival_gap')
            last_arrival = self._last_arrival_ns
        keep = arrival > now_ns - int(self.window_s * NS_PER_S)
        arrival, stamp, written = arrival[keep], stamp[keep], written[keep]
        seq, source = seq[keep], source[keep]
        publisher_rate, loss, publishers = publisher_rate_and_loss(arrival, stamp, seq, source, written)
        return GreenwaveSnapshot(
            **greenwave, **counters, window_count=int(arrival.size),
            received_rate_hz=rate_hz(arrival), publisher_rate_hz=publisher_rate,
            transport_loss_fraction=loss, publishers_seen=publishers, drop_source=drop_source,
            age_s=math.inf if last_arrival is None else (now_ns - last_arrival) / NS_PER_S)


def rate_hz(times_ns: np.ndarray) -> float:
    """Events per second from sorted times: (n - 1) intervals over the span they cover (NaN below 2)."""
    if times_ns.size < 2:
        return NAN
    span = int(times_ns[-1]) - int(times_ns[0])
    return (times_ns.size - 1) * NS_PER_S / span if span > 0 else NAN


def publisher_rate_and_loss(arrival_ns: np.ndarray, stamp_ns: np.ndarray, seq: np.ndarray,
                            source: np.ndarray,
                            written_ns: np.ndarray | None = None) -> tuple[float, float, int]:
    """(publisher rate Hz, transport loss fraction, publishers) from the messages of one window.

    Per publisher with at least two sequence-numbered messages: sent = last seq - first seq, received =
    its messages after the first, over the span of its write times (middleware source timestamps), else
    of its stamps (if all present and increasing), else of its arrivals.
    """
    if written_ns is None:
        written_ns = np.full(arrival_ns.shape, NO_STAMP, dtype=np.int64)
    has_seq = seq != NO_SEQ
    if not has_seq.any():
        return NAN, NAN, 0
    total_rate, sent_total, received_total, publishers = 0.0, 0, 0, 0
    for sid in np.unique(source[has_seq]):
        mine = has_seq & (source == sid)
        s, a, t, w = seq[mine], arrival_ns[mine], stamp_ns[mine], written_ns[mine]
        publishers += 1
        if s.size < 2:
            continue
        sent = int(s[-1]) - int(s[0])
        times = next((x for x in (w, t) if (x != NO_STAMP).all() and (np.diff(x) > 0).all()), a)
        span_ns = int(times[-1]) - int(times[0])
        if sent <= 0 or span_ns <= 0:
            continue
        total_rate += sent * NS_PER_S / span_ns
        sent_total += sent
        received_total += s.size - 1
    if sent_total == 0:
        return NAN, NAN, publishers
    return total_rate, max(0.0, (sent_total - received_total) / sent_total), publishers


def _text(value: float) -> str:
    return 'N/A' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.3f}'


def greenwave_values(snap: GreenwaveSnapshot) -> dict[str, str]:
    """greenwave_monitor's diagnostic keys for one topic (its key names; N/A where unknown)."""
    return {
        'num_non_increasing_msg': str(snap.num_non_increasing_msg),
        'num_jitter_outliers_msg': str(snap.num_jitter_outliers_msg),
        'num_jitter_outliers_node': str(snap.num_jitter_outliers_node),
        'max_abs_jitter_msg': _int_text(snap.max_abs_jitter_msg_us),
        'max_abs_jitter_node': _int_text(snap.max_abs_jitter_node_us),
        'mean_abs_jitter_msg': _int_text(snap.mean_abs_jitter_msg_us),
        'mean_abs_jitter_node': _int_text(snap.mean_abs_jitter_node_us),
        'frame_rate_msg': _text(snap.frame_rate_msg_hz),
        'current_delay_from_realtime_ms': _text(snap.current_delay_ms),
        'frame_rate_node': _text(snap.frame_rate_node_hz),
        'total_dropped_frames': str(snap.total_dropped_frames),
        'expected_frequency': _text(snap.expected_frequency_hz) if snap.expected_frequency_hz > 0 else 'N/A',
        'tolerance': _text(snap.tolerance_percent) if snap.expected_frequency_hz > 0 else 'N/A',
    }


def transport_values(snap: GreenwaveSnapshot) -> dict[str, str]:
    """Our keys beside greenwave's: what was sent, what arrived, what was lost and how we know."""
    return {
        'publisher_rate_hz': _text(snap.publisher_rate_hz),
        'received_rate_hz': _text(snap.received_rate_hz),
        'transport_loss_percent': _text(snap.transport_loss_fraction * 100.0),
        'drops': str(snap.drops),
        'drops_source': snap.drop_source,
        'drops_sequence': str(snap.drops_sequence),
        'drops_stamp_gap': str(snap.drops_stamp_gap),
        'messages_lost_events': str(snap.messages_lost),
        'sequence_resets': str(snap.sequence_resets),
        'stamp_jumps': str(snap.stamp_jumps),
    }


def _int_text(value: float) -> str:
    return 'N/A' if math.isnan(value) else str(int(value))
