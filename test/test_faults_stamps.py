"""Header stamps that lie: future, zero and far-past stamps are counted as bad_stamp and kept out of
latency; a level is raised while they persist and cleared when good ones return; drops from sequence
numbers and stamp spacing are guarded against restarts and jumps. Exact numbers: time is passed in."""
import pytest

from isaac_perf.core.telemetry.stamps import (
    SequenceGaps,
    StampCheck,
    StampKind,
    StampLimits,
    classify_stamp,
    latency_ms,
    stamp_gap_drops,
)

S = 1_000_000_000
NOW = 1_800_000_000 * S


@pytest.mark.parametrize(('stamp', 'kind'), [
    (NOW - 20_000_000, StampKind.OK),  # 20 ms old
    (NOW + 3600 * S, StampKind.FUTURE),  # 1 h ahead: was latency -3.6e6 ms at level OK
    (0, StampKind.ZERO),  # was latency 1.8e12 ms
    (-5, StampKind.ZERO),
    (NOW - 3600 * S, StampKind.FAR_PAST),
    (NOW + 100_000_000, StampKind.OK),  # 100 ms ahead: clock skew within the tolerance
    (NOW - 59 * S, StampKind.OK),
])
def test_classify_stamp(stamp, kind):
    assert classify_stamp(stamp, NOW) is kind


def test_only_sane_stamps_give_a_latency():
    assert latency_ms(NOW - 20_000_000, NOW) == 20.0
    assert latency_ms(NOW + 100_000_000, NOW) == 0.0  # small skew reads as 0, never negative
    assert latency_ms(NOW + 3600 * S, NOW) is None
    assert latency_ms(0, NOW) is None


def test_limits_are_validated():
    with pytest.raises(ValueError, match='max_age_s > 0'):
        StampLimits(max_age_s=0)


def test_bad_stamps_raise_a_level_while_they_persist_and_it_clears():
    check = StampCheck(window=10, fraction=0.5, min_bad=5)
    for _ in range(4):
        check.observe(0, NOW)
    assert check.level() == 'ok'  # 4 bad of 4: below min_bad
    check.observe(NOW + 3600 * S, NOW)
    assert check.level() == 'warn'
    assert check.by_kind() == {'bad_stamp_future': 1, 'bad_stamp_zero': 4, 'bad_stamp_far_past': 0}
    assert 'latest: future' in check.describe()
    for _ in range(10):
        check.observe(NOW - 10_000_000, NOW)
    assert check.level() == 'ok' and check.bad_total == 5 and check.counts[StampKind.OK] == 10


def test_an_occasional_bad_stamp_does_not_raise_the_level():
    check = StampCheck(window=50, fraction=0.2, min_bad=5)
    for i in range(200):
        check.observe(0 if i % 20 == 0 else NOW - 1_000_000, NOW)
    assert check.level() == 'ok' and check.bad_total == 10


def test_sequence_gaps_count_losses():
    gaps = SequenceGaps()
    results = [gaps.observe(s) for s in (1, 2, 5, 6, 10)]
    assert [r.dropped for r in results] == [0, 0, 2, 0, 3] and gaps.dropped == 5


def test_sequence_jump_or_restart_is_not_thousands_of_drops():
    gaps = SequenceGaps(max_gap=1000)
    for s in (1, 2, 3):
        gaps.observe(s)
    assert gaps.observe(10_003).reset  # a jump over max_gap
    assert gaps.observe(1).reset  # the publisher restarted
    assert gaps.observe(2).dropped == 0
    assert gaps.dropped == 0 and gaps.resets == 2


def test_duplicates_and_late_arrivals():
    gaps = SequenceGaps()
    for s in (1, 2, 4):
        gaps.observe(s)
    assert gaps.dropped == 1
    late = gaps.observe(3)
    assert late.late and late.dropped == -1 and gaps.dropped == 0
    assert gaps.observe(4).duplicate and gaps.duplicates == 1
    assert gaps.observe(5).dropped == 0


@pytest.mark.parametrize(('prev', 'cur', 'expected'), [
    (10 * S, 10 * S + 300_000_000, 2),  # 10 Hz, 300 ms gap: 2 missing
    (10 * S, 10 * S + 100_000_000, 0),
    (10 * S, 1010 * S, 0),  # +1000 s jump: was 10000 dropped frames
    (10 * S, 9 * S, 0),  # backwards
    (0, 10 * S, 0),  # no previous stamp
])
def test_stamp_gap_drops_guarded(prev, cur, expected):
    assert stamp_gap_drops(prev, cur, 100_000_000) == expected


def test_stream_stats_keep_bad_stamps_out_of_latency_and_drops():
    from isaac_perf.core.telemetry.stats import StreamStats
    stats = StreamStats(window_s=100.0, expected_rate_hz=10.0)
    t = NOW
    for _ in range(20):
        t += 100_000_000
        stats.record(t, 10, t - 5_000_000)  # 5 ms old
    stats.record(t + 100_000_000, 10, t + 3600 * S)  # 1 h in the future
    stats.record(t + 200_000_000, 10, 1)  # zero-ish stamp
    stats.record(t + 300_000_000, 10, t + 1000 * S)  # a +1000 s jump: was 10000 dropped frames
    snap = stats.snapshot(t + 300_000_000)
    assert snap.latency_ms.max == pytest.approx(5.0) and snap.latency_ms.min >= 0
    assert snap.bad_stamps == {'bad_stamp_future': 2, 'bad_stamp_zero': 0, 'bad_stamp_far_past': 1}
    assert snap.drops == 0


def test_stream_stats_sequence_restart_is_not_a_drop():
    from isaac_perf.core.telemetry.stats import StreamStats
    stats = StreamStats(window_s=100.0)
    for seq in (1, 2, 3, 5, 1_000_000, 1, 2):
        stats.record(NOW + seq, 10, None, seq=seq, source='pub')
    snap = stats.snapshot(NOW + 10)
    assert snap.drops == 1 and snap.sequence_resets == 2


def test_stage_stats_latency_never_negative_and_bad_stamps_counted():
    from isaac_perf.core.telemetry.stats import StageStats
    stages = StageStats(window_s=100.0)
    stages.record(NOW, NOW + 3600 * S, 1, {'infer': 1.0})  # skewed source: was a negative latency
    stages.record(NOW, NOW - 10_000_000, 1, {'infer': 1.0})
    stages.record(NOW, 0, 1, {'infer': 1.0})  # 0 = unknown stamp, by the report format
    snap = stages.snapshot(NOW)
    assert snap.latency_ms.min == pytest.approx(10.0) and snap.latency_ms.max == pytest.approx(10.0)
    assert snap.bad_stamps['bad_stamp_future'] == 1 and snap.bad_stamps['bad_stamp_zero'] == 0


def test_process_patterns_refuse_bad_pids_and_match_run_names_only():
    """Item 12: `pid:notanumber` was accepted, and a pattern matched any command line host-wide."""
    from isaac_perf.core.telemetry.system import pattern_error, run_names
    assert 'pid: must be followed by a process id' in pattern_error(['perf_monitor', 'pid:notanumber'])
    assert pattern_error(['pid:12', 'qos_tuner']) == ''
    names = run_names('python3', ['/usr/bin/python3', '/x/lib/isaac_perf/qos_tuner', '--ros-args',
                                  '-r', '__node:=tuner_a'])
    assert 'qos_tuner' in names and 'tuner_a' in names
    module = run_names('python', ['python', '-u', '-m', 'isaac_perf.nodes.qos_tuner'])
    assert 'qos_tuner' in module
    editor = run_names('vim', ['vim', 'isaac_perf/nodes/qos_tuner.py'])
    assert not any('qos_tuner' in n for n in editor)


@pytest.mark.parametrize('encoding', ['yuv422', 'bayer_rggb8', '32FC1'])
def test_unsupported_encoding_lists_only_what_the_model_takes(encoding):
    """Item 12: the error listed encodings (32FC1, 16UC1, ...) that the node then refused too."""
    from isaac_perf.core.inference.frames import ImageFormatError
    from isaac_perf.core.inference.node_params import MODEL_ENCODINGS, check_model_frame
    with pytest.raises(ImageFormatError) as info:
        check_model_frame(encoding, 4, 4, 16, 64)
    message = str(info.value)
    assert f'encoding {encoding!r} cannot be fed to the model' in message
    listed = message.split('publish one of ')[1].split(' (')[0].split(', ')
    assert listed == list(MODEL_ENCODINGS) and '32FC1' not in listed
