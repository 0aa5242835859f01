"""perf_monitor under real DDS: rates, header-less topics, stage times, alerts, STALE, parameter refusal."""
import math
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Temperature  # noqa: E402
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension, String  # noqa: E402

from isaac_perf.core.telemetry import metrics, stage_times  # noqa: E402
from isaac_perf.nodes.perf_monitor import PerfMonitor  # noqa: E402

pytestmark = pytest.mark.ros
FAST = {'publish_period_s': 0.2, 'sample_period_s': 0.2, 'discovery_period_s': 0.1, 'window_s': 1.0,
        'alert_min_duration_s': 0.0, 'process_patterns': ['pytest']}


def overrides(**values):
    return [Parameter(k, value=v) for k, v in {**FAST, **values}.items()]


class Harness:
    """A monitor, a publisher node and a listener of /performance_metrics and /diagnostics."""

    def __init__(self, context, **params):
        self.monitor = PerfMonitor(context=context, parameter_overrides=overrides(**params))
        self.node = Node('test_driver', context=context)
        self.metrics = None
        self.statuses = {}
        self.node.create_subscription(Float32MultiArray, '/performance_metrics', self._on_metrics, 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.monitor)
        self.executor.add_node(self.node)

    def _on_metrics(self, msg):
        self.metrics = metrics.parse([d.label for d in msg.layout.dim], list(msg.data))

    def _on_diag(self, msg):
        for status in msg.status:
            self.statuses[status.name] = status

    def topic(self, name):
        return (self.metrics or {}).get('topic', {}).get(name, {})

    def close(self):
        self.executor.shutdown()
        self.monitor.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def harness(ros_context):
    made = []

    def make(**params):
        h = Harness(ros_context, **params)
        made.append(h)
        return h
    try:
        yield make
    finally:
        for h in made:
            h.close()


def values(status):
    return {kv.key: kv.value for kv in status.values}


def _span_rate_hz(times_ns):
    """(n - 1) intervals over the span: the rate definition of core.telemetry.stats."""
    return (len(times_ns) - 1) * 1e9 / (times_ns[-1] - times_ns[0])


def test_rate_headerless_topic_and_stage_times_reach_performance_metrics(harness, spin):
    # No wall-clock rate is assumed: the publisher records what it sent, stops, and the monitor's figures
    # are checked against that record. The window (60 s) holds every message, and the stream never goes
    # STALE, so the figures stay fixed once the last message is in. The tolerance on arrival rates comes
    # from the measurement itself: each message's transport delay lies in [0, latency_ms_max].
    h = harness(watched_topics=['/h1/imu_like', '/h1/text'], expected_rates_hz=[50.0, 0.0], window_s=60.0,
                stale_timeout_s=600.0, rate_tolerance_percent=90.0)
    pub = h.node.create_publisher(Temperature, '/h1/imu_like', 10)
    text = h.node.create_publisher(String, '/h1/text', 10)
    stages = h.node.create_publisher(Float64MultiArray, '/h1/infer/stage_times', 10)
    stamps_ns = []
    wanted = 60

    def tick():
        if len(stamps_ns) >= wanted:
            timer.cancel()
            return
        if not all(p.get_subscription_count() for p in (pub, text, stages)):
            return   # the monitor subscribes once discovery has found the topic: nothing is sent before
        stamp_ns = time.time_ns()
        stamps_ns.append(stamp_ns)
        msg = Temperature()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        pub.publish(msg)
        text.publish(String(data='x' * 200))
        labels, data = stage_times.encode(stage_times.StageReport(stamp_ns - 20_000_000, 1,
                                                                  {'pre': 2.0, 'infer': 5.0, 'post': 1.0}))
        report = Float64MultiArray(data=data)
        report.layout.dim = [MultiArrayDimension(label=name, size=1, stride=1) for name in labels]
        stages.publish(report)
    timer = h.node.create_timer(0.02, tick)   # 50 Hz nominal; the test uses what it actually sent

    def all_in():
        stage = (h.metrics or {}).get('stages', {}).get('/h1/infer/stage_times', {})
        sent = len(stamps_ns)
        return sent == wanted and h.topic('/h1/imu_like').get('count', 0) == sent \
            and h.topic('/h1/text').get('count', 0) == sent and stage.get('reports', 0) == sent
    assert spin(h.executor, all_in, 30.0), (
        f"sent {len(stamps_ns)}, monitor counted {h.topic('/h1/imu_like').get('count')} imu, "
        f"{h.topic('/h1/text').get('count')} text, "
        f"{(h.metrics or {}).get('stages', {}).get('/h1/infer/stage_times', {}).get('reports')} reports")
    elapsed_ms = (time.time_ns() - stamps_ns[0]) / 1e6   # every delay measured so far is below this
    imu, txt = h.topic('/h1/imu_like'), h.topic('/h1/text')
    sent_rate = _span_rate_hz(stamps_ns)
    assert imu['stamp_rate_hz'] == pytest.approx(sent_rate, rel=1e-4)    # header stamps: exact
    delay_ms = imu['latency_ms_max']
    assert 0.0 <= imu['latency_ms_p50'] <= delay_ms <= elapsed_ms
    span_ms = (stamps_ns[-1] - stamps_ns[0]) / 1e6
    slack = 1e-4 * sent_rate   # float32 in the metrics message
    assert (wanted - 1) * 1e3 / (span_ms + delay_ms) - slack <= imu['rate_hz'] \
        <= (wanted - 1) * 1e3 / max(span_ms - delay_ms, 1e-9) + slack
    assert imu['expected_rate_hz'] == 50.0
    assert imu['level'] == 0.0
    assert txt['rate_hz'] > 0.0 and txt['count'] == wanted   # header-less: rate and bandwidth only
    assert math.isnan(txt['latency_ms_p50'])
    assert txt['mean_size_kib'] > 0.19 and txt['bandwidth_mbps'] > 0.0
    stage = h.metrics['stages']['/h1/infer/stage_times']
    assert stage['fps'] > 0.0 and stage['reports'] == wanted
    assert stage['infer_ms_p50'] == 5.0 and stage['total_ms_p99'] == 8.0
    assert 20.0 <= stage['latency_ms_p50'] <= 20.0 + elapsed_ms   # stamped 20 ms before sending
    assert h.metrics['global']['pipeline_fps'] == stage['fps']
    assert h.metrics['global']['topics_watched'] == 2.0
    h.statuses.clear()   # the next /diagnostics is built from the same, complete window
    assert spin(h.executor, lambda: '/h1/imu_like' in h.statuses and '/h1/text' in h.statuses, 5.0)
    kv = values(h.statuses['/h1/imu_like'])
    assert float(kv['frame_rate_node']) == pytest.approx(imu['rate_hz'], rel=1e-3)
    assert kv['expected_frequency'] == '50.000' and 'current_delay_from_realtime_ms' in kv
    assert values(h.statuses['/h1/text'])['current_delay_from_realtime_ms'] == 'N/A'
    assert any(name.startswith('perf_monitor: host ') for name in h.statuses)
    assert any(name == 'perf_monitor: stages /h1/infer/stage_times' for name in h.statuses)


def test_latency_breach_gives_warn_then_ok(harness, spin):
    h = harness(watched_topics=['/h1/late'], max_latency_ms_warn=100.0, window_s=0.5)
    pub = h.node.create_publisher(Temperature, '/h1/late', 10)
    delay_ns = [300_000_000]

    def tick():
        msg = Temperature()
        stamp = time.time_ns() - delay_ns[0]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        pub.publish(msg)
    h.node.create_timer(0.02, tick)

    def level(wanted):
        status = h.statuses.get('/h1/late')
        return status is not None and status.level == wanted
    assert spin(h.executor, lambda: level(DiagnosticStatus.WARN), 6.0), h.statuses.get('/h1/late')
    assert 'max_latency_ms' in h.statuses['/h1/late'].message
    assert h.metrics['global']['alerts_warn'] >= 1.0
    delay_ns[0] = 0
    assert spin(h.executor, lambda: level(DiagnosticStatus.OK), 6.0), h.statuses.get('/h1/late')


def test_vanished_topic_goes_stale_and_recovers(harness, spin):
    h = harness(watched_topics=['/h1/flaky'], stale_timeout_s=0.5)
    pub_node = Node('flaky_pub', context=h.node.context)
    h.executor.add_node(pub_node)
    pub = pub_node.create_publisher(String, '/h1/flaky', 10)
    timer = pub_node.create_timer(0.02, lambda: pub.publish(String(data='x')))

    def level(wanted):
        status = h.statuses.get('/h1/flaky')
        return status is not None and status.level == wanted
    assert spin(h.executor, lambda: level(DiagnosticStatus.OK), 6.0)
    pub_node.destroy_timer(timer)
    pub_node.destroy_publisher(pub)
    assert spin(h.executor, lambda: level(DiagnosticStatus.STALE), 4.0)
    assert 'STALE' in h.statuses['/h1/flaky'].message
    assert h.metrics['global']['topics_stale'] == 1.0
    pub = pub_node.create_publisher(String, '/h1/flaky', 10)
    pub_node.create_timer(0.02, lambda: pub.publish(String(data='x')))
    assert spin(h.executor, lambda: level(DiagnosticStatus.OK), 6.0)
    h.executor.remove_node(pub_node)
    pub_node.destroy_node()


def test_bad_parameters_are_refused_with_a_reason(harness, spin):
    h = harness(watched_topics=['/h1/a'])
    result = h.monitor.set_parameters([Parameter('sample_period_s', value=-1.0)])[0]
    assert not result.successful and result.reason
    result = h.monitor.set_parameters([Parameter('expected_rates_hz', value=[10.0, 20.0])])[0]
    assert not result.successful and 'expected_rates_hz' in result.reason
    result = h.monitor.set_parameters([Parameter('watched_topics', value=['relative/name'])])[0]
    assert not result.successful and 'absolute' in result.reason
    result = h.monitor.set_parameters([Parameter('max_gpu_temperature_c_error', value=50.0)])[0]
    assert not result.successful and 'max_gpu_temperature_c_warn' in result.reason
    assert h.monitor.get_parameter('sample_period_s').value == 0.2

    # The same through the parameter service, as `ros2 param set` does it.
    from rclpy.parameter_client import AsyncParameterClient
    client = AsyncParameterClient(h.node, 'perf_monitor')
    assert client.wait_for_services(timeout_sec=5.0)
    future = client.set_parameters([Parameter('pcie_mode', value='sometimes')])
    assert spin(h.executor, future.done, 5.0)
    refused = future.result().results[0]
    assert not refused.successful and 'pcie_mode' in refused.reason
    future = client.set_parameters([Parameter('watched_topics', value=['/h1/a', '/h1/b'])])
    assert spin(h.executor, future.done, 5.0) and future.result().results[0].successful
    assert list(h.monitor.watches) == ['/h1/a', '/h1/b']


def test_invalid_start_up_parameters_raise_with_the_reason(ros_context):
    with pytest.raises(ValueError, match='expected_rates_hz'):
        PerfMonitor(context=ros_context, parameter_overrides=overrides(
            watched_topics=['/a', '/b', '/c'], expected_rates_hz=[1.0, 2.0]))


def test_config_file_lists_every_parameter_at_its_default():
    from pathlib import Path

    import yaml

    from isaac_perf.nodes.perf_monitor import PARAMS
    config = Path(__file__).resolve().parents[1] / 'config' / 'perf_monitor.yaml'
    text = config.read_text()
    values = yaml.safe_load(text)['/**']['ros__parameters']
    for spec in PARAMS:
        if spec.default == []:
            assert f'# {spec.name}: []' in text     # a params file cannot hold an empty list
        else:
            assert values[spec.name] == spec.default, spec.name
    assert set(values) <= {s.name for s in PARAMS}
    doc = (Path(__file__).resolve().parents[1] / 'docs' / 'monitor.md').read_text()
    assert all(f'`{s.name}' in doc for s in PARAMS)


def test_refused_start_up_leaves_a_destroyable_node_and_main_exits_2(ros_context):
    import os
    import subprocess
    import sys

    from isaac_perf.ros.node_main import StartupError
    half = PerfMonitor.__new__(PerfMonitor)
    with pytest.raises(StartupError, match='expected_rates_hz has 2 values for 3 watched_topics'):
        half.__init__(context=ros_context, parameter_overrides=overrides(
            watched_topics=['/a', '/b', '/c'], expected_rates_hz=[1.0, 2.0]))
    half.destroy_node()  # half-built: must not raise
    result = subprocess.run(
        [sys.executable, '-m', 'isaac_perf.nodes.perf_monitor', '--ros-args', '-p', 'window_s:=0.0'],
        env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'cannot start' in result.stderr and 'window_s' in result.stderr
    assert 'Traceback' not in result.stderr


def test_greenwave_keys_sequence_drops_and_engine_batch_size_exact(harness, spin):
    """A scripted burst: 40 messages stamped exactly 100 ms apart (10 Hz expected), a reliable publisher,
    and stage reports carrying engine_batch_size 2 and 4; every number checked is exact."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    h = harness(watched_topics=['/h1/burst'], expected_rates_hz=[10.0], window_s=60.0)
    pub = h.node.create_publisher(Temperature, '/h1/burst', QoSProfile(depth=100,
                                                                        reliability=ReliabilityPolicy.RELIABLE))
    stages = h.node.create_publisher(Float64MultiArray, '/h1/batcher/stage_times', 10)
    assert spin(h.executor, lambda: h.monitor.watches['/h1/burst'].qos_reliability == 'reliable'
                and pub.get_subscription_count() >= 1 and stages.get_subscription_count() >= 1, 10.0)
    t0 = time.time_ns() - 10 * 1_000_000_000
    for k in range(40):
        msg = Temperature()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t0 + k * 100_000_000, 1_000_000_000)
        pub.publish(msg)
        labels, data = stage_times.encode(stage_times.StageReport(
            time.time_ns(), 1, {'infer': 1.0}, {'engine_batch_size': 2.0 if k % 2 else 4.0}))
        report = Float64MultiArray(data=data)
        report.layout.dim = [MultiArrayDimension(label=name, size=1, stride=1) for name in labels]
        stages.publish(report)

    def ready():
        stage = (h.metrics or {}).get('stages', {}).get('/h1/batcher/stage_times', {})
        return h.topic('/h1/burst').get('count', 0) == 40 and stage.get('reports', 0) == 40 \
            and '/h1/burst' in h.statuses and values(h.statuses['/h1/burst']).get('message_count') == '40'
    assert spin(h.executor, ready, 10.0), h.metrics
    t = h.topic('/h1/burst')
    assert t['drops_sequence'] == 0 and t['drops'] == 0 and t['watch_reliable'] == 1.0
    assert t['frame_rate_msg_hz'] == 10.0 and t['mean_abs_jitter_msg_us'] == 0.0
    assert t['jitter_outliers_msg'] == 0 and t['transport_loss_percent'] == 0.0
    kv = values(h.statuses['/h1/burst'])
    assert (kv['frame_rate_msg'], kv['mean_abs_jitter_msg'], kv['max_abs_jitter_msg']) == ('10.000', '0', '0')
    assert (kv['total_dropped_frames'], kv['drops'], kv['drops_source']) == ('0', '0', 'sequence')
    assert kv['watch_qos'].startswith('reliable: all 1 publisher(s) offer reliable')
    stage = h.metrics['stages']['/h1/batcher/stage_times']
    assert stage['engine_batch_size_mean'] == 3.0 and stage['engine_batch_size_max'] == 4.0
    assert h.metrics['global']['pipeline_engine_batch_size_mean'] == 3.0
