"""The monitor's alert policy and field mapping, with exact numbers and no ROS."""
import math

from isaac_perf.core.params import spec_defaults
from isaac_perf.core.telemetry import fields
from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.monitor_policy import MonitorPolicy
from isaac_perf.core.telemetry.stats import StageSnapshot, StreamSnapshot, Summary

NS = 1_000_000_000


def params(**values):
    # The node's own table, so the policy reads exactly the names the node declares.
    from isaac_perf.nodes.perf_monitor import PARAMS
    return {**spec_defaults(PARAMS), 'alert_min_duration_s': 0.0, **values}


def stream(rate_hz=30.0, expected=0.0, age_s=0.01, p50=float('nan')):
    return StreamSnapshot(count=100, window_count=100, rate_hz=rate_hz, stamp_rate_hz=float('nan'),
                          bandwidth_bps=1e6, mean_size_bytes=2048.0, bytes_total=204800,
                          latency_ms=Summary(count=10, p50=p50), last_latency_ms=float('nan'),
                          interval_ms=Summary(std=0.5), jitter_ms=0.5, max_abs_jitter_ms=2.0, drops=3,
                          age_s=age_s, expected_rate_hz=expected)


def stage(fps=30.0, p50=10.0, p99=20.0, age_s=0.1):
    return StageSnapshot(reports=5, frames=5, fps=fps, latency_ms=Summary(p50=p50, p99=p99),
                         batch_size=Summary(mean=1.0), age_s=age_s,
                         stages_ms={'infer': Summary(mean=2.0, p50=2.0, p99=3.0)})


def test_expected_rate_gives_warn_within_tolerance_and_error_below_half():
    said = []
    policy = MonitorPolicy(params(rate_tolerance_percent=10.0), notify=lambda lv, text: said.append(lv))
    assert policy.topic_status('/t', stream(rate_hz=28.0, expected=30.0), 0, 1) == (Level.OK, 'OK')
    level, message = policy.topic_status('/t', stream(rate_hz=20.0, expected=30.0), NS, 1)
    assert level == Level.WARN and 'rate_hz' in message
    assert policy.topic_status('/t', stream(rate_hz=10.0, expected=30.0), 2 * NS, 1)[0] == Level.ERROR
    assert said == [Level.WARN, Level.ERROR]


def test_topic_without_expected_rate_uses_min_fps_and_latency_thresholds():
    policy = MonitorPolicy(params(min_fps_warn=5.0, max_latency_ms_warn=50.0, max_latency_ms_error=100.0))
    assert policy.topic_status('/t', stream(rate_hz=4.0), 0, 1)[0] == Level.WARN
    assert policy.topic_status('/u', stream(rate_hz=30.0, p50=150.0), 0, 1)[0] == Level.ERROR
    assert policy.topic_status('/v', stream(rate_hz=30.0, p50=10.0), 0, 1) == (Level.OK, 'OK')


def test_stale_topic_is_said_once_and_recovery_too():
    said = []
    policy = MonitorPolicy(params(stale_timeout_s=3.0), notify=lambda lv, text: said.append((lv, text)))
    level, message = policy.topic_status('/t', stream(age_s=math.inf), 0, 2)
    assert level == Level.STALE and message == 'STALE: no message yet (2 publisher(s))'
    assert policy.topic_status('/t', stream(age_s=4.0), NS, 2)[1] == \
        'STALE: no message for 4.0 s (2 publisher(s))'
    assert policy.topic_status('/t', stream(age_s=0.1), 2 * NS, 2)[0] == Level.OK
    assert said == [(Level.STALE, '/t is STALE: never received a message (2 publisher(s))'),
                    (Level.OK, '/t recovered from STALE')]


def test_stage_source_stale_and_thresholds():
    policy = MonitorPolicy(params(min_fps_error=10.0))
    assert policy.stage_status('/s/stage_times', stage(fps=5.0), 0)[0] == Level.ERROR
    assert policy.stage_status('/s/stage_times', stage(age_s=9.0), 0) == \
        (Level.STALE, 'STALE: no stage report for 9.0 s')


def test_zero_thresholds_are_off():
    from isaac_perf.core.telemetry.alerts import Direction
    policy = MonitorPolicy(params())
    assert policy.rule('max_cpu_percent', Direction.ABOVE) is None
    assert policy.rule('max_gpu_temperature_c', Direction.ABOVE).warn == 83.0


def test_field_mappings_name_each_subject_once():
    snap = stream(rate_hz=12.0, expected=15.0)
    block = fields.topic_metrics(snap, Level.WARN)
    assert block['rate_hz'] == 12.0 and block['bandwidth_mbps'] == 1.0 and block['level'] == 1
    diag = fields.topic_diagnostics(snap, 10.0, 'std_msgs/msg/String', 3)
    assert list(diag)[:4] == ['frame_rate_node', 'frame_rate_msg', 'current_delay_from_realtime_ms',
                              'total_dropped_frames']
    assert diag['frame_rate_msg'] == 12.0  # no header stamps: the arrival rate
    assert diag['mean_abs_jitter_node'] == 500.0 and diag['publishers'] == 3
    assert fields.topic_diagnostics(stream(), 10.0, None, 0)['tolerance'] == 'N/A'
    stage_block = fields.stage_metrics(stage(), Level.OK)
    assert stage_block['infer_ms_p99'] == 3.0 and fields.stage_diagnostics(stage())['infer_ms_mean'] == 2.0
    counts = {'topics_watched': 1, 'topics_stale': 0, 'alerts_warn': 1, 'alerts_error': 0,
              'monitor_cpu_percent': 2.0}
    glob = fields.global_metrics(None, [], [stage(fps=30.0, p99=20.0), stage(fps=12.0, p99=40.0)], counts)
    assert glob['pipeline_fps'] == 12.0 and glob['pipeline_latency_ms_p99'] == 40.0
    assert math.isnan(glob['cpu_percent']) and glob['gpu_count'] == 0
    assert fields.fmt(float('nan')) == 'N/A' and fields.fmt(1.5, 1) == '1.5' and fields.fmt(3) == '3'
