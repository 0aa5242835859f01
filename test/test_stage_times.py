"""Stage-time reports: extra labelled fields (stream_batcher's engine_batch_size) survive the round trip."""
import pytest

from isaac_perf.core.telemetry import stage_times


def test_extras_round_trip_after_the_stages():
    report = stage_times.StageReport(1_700_000_000_123_456_789, 3, {'pre': 1.5, 'infer': 4.0},
                                     {'engine_batch_size': 8.0, 'gpu_index': 1.0})
    labels, values = stage_times.encode(report)
    assert labels == ['stamp_sec', 'stamp_nanosec', 'batch_size', 'pre_ms', 'infer_ms', 'total_ms',
                      'engine_batch_size', 'gpu_index']
    back = stage_times.decode(labels, values)
    assert back == report and back.total_ms == 5.5


def test_a_report_without_extras_decodes_with_none():
    labels, values = stage_times.encode(stage_times.StageReport(5, 1, {'infer': 2.0}))
    assert stage_times.decode(labels, values).extras == {}
    with pytest.raises(ValueError, match='lacks batch_size'):
        stage_times.decode(['stamp_sec', 'stamp_nanosec'], [0.0, 0.0])
