"""Exact-number tests of the bounded statistics (time passed in as integer nanoseconds)."""
import math

import numpy as np
import pytest

from isaac_perf.core.telemetry.stats import (
    Ring,
    StageStats,
    StreamStats,
    means_by_name,
    percentile,
    summarize,
)

MS = 1_000_000
S = 1_000_000_000


def test_ring_keeps_the_newest_values_oldest_first_within_capacity():
    ring = Ring(3)
    for v in range(1, 8):
        ring.push(v)
    assert len(ring) == 3
    assert ring.values().tolist() == [5.0, 6.0, 7.0]
    ring.clear()
    assert ring.values().tolist() == []
    with pytest.raises(ValueError, match='capacity'):
        Ring(0)


def test_summarize_exact_values_and_nan_when_empty():
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert s.count == 4
    assert (s.mean, s.min, s.max) == (2.5, 1.0, 4.0)
    assert s.std == pytest.approx(math.sqrt(1.25), abs=1e-12)
    assert s.p50 == pytest.approx(2.5)
    assert s.p90 == pytest.approx(3.7)
    assert s.p99 == pytest.approx(3.97)
    empty = summarize(np.array([]))
    assert empty.count == 0 and math.isnan(empty.mean) and math.isnan(empty.p99)


def test_stream_rate_latency_bandwidth_from_exact_times():
    stats = StreamStats(capacity=64, window_s=1.0)
    for i in range(11):                       # 11 messages 10 ms apart, each stamped 2 ms before receipt
        t = 10 * S + i * 10 * MS
        stats.record(t, size_bytes=100, stamp_ns=t - 2 * MS)
    snap = stats.snapshot(10 * S + 100 * MS)
    assert snap.count == 11 and snap.window_count == 11
    assert snap.rate_hz == pytest.approx(100.0)
    assert snap.stamp_rate_hz == pytest.approx(100.0)
    assert snap.bandwidth_bps == pytest.approx(10 * 100 / 0.1)   # bytes after the first over the span
    assert snap.mean_size_bytes == 100.0 and snap.bytes_total == 1100
    assert snap.latency_ms.p50 == 2.0 and snap.latency_ms.max == 2.0 and snap.last_latency_ms == 2.0
    assert snap.jitter_ms == 0.0 and snap.interval_ms.mean == 10.0
    assert snap.drops == 0
    assert snap.age_s == 0.0


def test_stream_jitter_is_std_of_interarrival_and_max_abs_jitter_uses_expected_period():
    stats = StreamStats(window_s=10.0, expected_rate_hz=50.0)   # expected period 20 ms
    for t_ms in (0, 10, 30):                                      # intervals 10 and 20 ms
        stats.record(S + t_ms * MS)
    snap = stats.snapshot(S + 30 * MS)
    assert snap.jitter_ms == pytest.approx(5.0)
    assert snap.max_abs_jitter_ms == pytest.approx(10.0)          # |10 - 20|
    assert math.isnan(snap.latency_ms.mean) and math.isnan(snap.stamp_rate_hz)   # no header


def test_window_excludes_old_messages_and_age_grows():
    stats = StreamStats(window_s=1.0)
    for i in range(5):
        stats.record(i * 100 * MS)            # 0..400 ms
    snap = stats.snapshot(1_300 * MS)         # window (300 ms, 1300 ms]: only 400 ms remains
    assert snap.window_count == 1
    assert math.isnan(snap.rate_hz)           # one message gives no rate
    assert snap.count == 5
    assert snap.age_s == pytest.approx(0.9)
    assert StreamStats().snapshot(0).age_s == math.inf


def test_drops_from_stamp_gaps_against_expected_rate():
    stats = StreamStats(expected_rate_hz=100.0)   # 10 ms period
    for stamp_ms in (0, 10, 20, 50, 64, 100):     # 30 ms gap: 2 lost; 14 ms: none; 36 ms: round(3.6)-1 = 3
        stats.record(S + stamp_ms * MS + 1 * MS, stamp_ns=S + stamp_ms * MS)
    assert stats.snapshot(S + 101 * MS).drops == 5
    no_rate = StreamStats()
    for t in (0, 10, 50):
        no_rate.record(t * MS)
    assert no_rate.drops == 0                     # without an expected rate there is no notion of a gap


def test_drops_from_sequence_numbers_per_publisher():
    stats = StreamStats()
    for seq in (1, 2, 5, 6):
        stats.record(seq * MS, seq=seq, source=b'a')
    for seq in (1, 2, 3):                         # a second publisher counts from its own numbers
        stats.record(seq * MS, seq=seq, source=b'b')
    assert stats.drops == 2


def test_memory_is_bounded_by_capacity():
    stats = StreamStats(capacity=16, window_s=1e6)
    for i in range(1000):
        stats.record(i * MS, 10, i * MS)
    snap = stats.snapshot(1000 * MS)
    assert snap.window_count == 16 and snap.count == 1000 and snap.bytes_total == 10_000


def test_stage_stats_fps_latency_and_per_stage_percentiles():
    stages = StageStats(window_s=1.0)
    for i in range(5):                            # every 100 ms, batch of 2 frames stamped 30 ms earlier
        t = 5 * S + i * 100 * MS
        stages.record(t, t - 30 * MS, 2, {'pre': 1.0 + i, 'infer': 10.0})
    snap = stages.snapshot(5 * S + 400 * MS)
    assert snap.reports == 5 and snap.frames == 10
    assert snap.fps == pytest.approx(8 / 0.4)     # frames after the first report over 400 ms
    assert snap.latency_ms.p50 == 30.0
    assert snap.stages_ms['pre'].p50 == 3.0 and snap.stages_ms['pre'].max == 5.0
    assert snap.stages_ms['infer'].mean == 10.0
    assert snap.stages_ms['total'].mean == pytest.approx(13.0)
    assert snap.batch_size.mean == 2.0


def test_stage_stats_unknown_stamp_new_stage_and_stage_bound():
    stages = StageStats(window_s=10.0, max_stages=3)
    stages.record(1 * S, 0, 1, {'a': 1.0})                   # stamp 0: latency unknown
    stages.record(2 * S, 1 * S, 1, {'a': 2.0, 'b': 4.0, 'c': 8.0})
    snap = stages.snapshot(2 * S)
    assert snap.latency_ms.count == 1 and snap.latency_ms.mean == 1000.0
    assert snap.stages_ms['a'].mean == 1.5
    assert snap.stages_ms['b'].count == 1 and snap.stages_ms['b'].mean == 4.0   # NaN-padded, not shifted
    assert set(snap.stages_ms) == {'a', 'total', 'b'}                           # 'c' beyond max_stages
    stages.note_malformed()
    assert stages.snapshot(2 * S).malformed == 1


def test_percentile_is_numpy_linear_ignores_nan_and_is_nan_when_empty():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 90) == 9.0              # linear interpolation, not nearest rank
    assert percentile([5.0, math.nan, 7.0], 50) == 6.0
    assert math.isnan(percentile([], 99)) and math.isnan(percentile([math.nan], 50))


def test_means_by_name_counts_each_name_only_where_present():
    rows = [{'pre': 1.0, 'infer': 4.0}, {'pre': 3.0}, {'infer': 6.0, 'post': 2.0}]
    assert means_by_name(rows) == {'pre': 2.0, 'infer': 5.0, 'post': 2.0}
    assert means_by_name([]) == {}


def test_stage_stats_window_override_and_reset():
    s = StageStats(window_s=100.0)
    for i in range(11):                      # one frame every 100 ms for 1 s
        s.record(i * S // 10, 0, 1, {'infer': float(i)})
    now = S
    assert s.snapshot(now).fps == pytest.approx(10.0)
    recent = s.snapshot(now, window_s=0.25)  # arrivals at 0.8, 0.9, 1.0 s
    assert recent.stages_ms['infer'].count == 3 and recent.fps == pytest.approx(10.0)
    s.note_malformed()
    s.reset()
    empty = s.snapshot(now)
    assert (empty.reports, empty.frames, empty.malformed, empty.stages_ms) == (0, 0, 0, {})
    assert math.isnan(empty.fps) and empty.age_s == math.inf
