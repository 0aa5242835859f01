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


def test_rate_headerless_topic_and_stage_times_reach_performance_metrics(harness, spin):
    h = harness(watched_topics=['/h1/imu_like', '/h1/text'], expected_rates_hz=[50.0, 0.0])
    pub = h.node.create_publisher(Temperature, '/h1/imu_like', 10)
    text = h.node.create_publisher(String, '/h1/text', 10)
    stages = h.node.create_publisher(Float64MultiArray, '/h1/infer/stage_times', 10)

    def tick():
        msg = Temperature()
        msg.header.stamp = h.node.get_clock().now().to_msg()
        pub.publish(msg)
        text.publish(String(data='x' * 200))
        labels, data = stage_times.encode(stage_times.StageReport(time.time_ns() - 20_000_000, 1,
                                                                  {'pre': 2.0, 'infer': 5.0, 'post': 1.0}))
        report = Float64MultiArray(data=data)
        report.layout.dim = [MultiArrayDimension(label=name, size=1, stride=1) for name in labels]
        stages.publish(report)
    h.node.create_timer(0.02, tick)   # 50 Hz

    def ready():
        stage = (h.metrics or {}).get('stages', {}).get('/h1/infer/stage_times', {})
        return h.topic('/h1/imu_like').get('count', 0) >= 60 and h.topic('/h1/text').get('count', 0) >= 60 \
            and stage.get('reports', 0) >= 60
    assert spin(h.executor, ready, 10.0), h.metrics
    imu, txt = h.topic('/h1/imu_like'), h.topic('/h1/text')
    assert imu['rate_hz'] == pytest.approx(50.0, rel=0.15)
    assert imu['expected_rate_hz'] == 50.0
    assert 0.0 <= imu['latency_ms_p50'] < 50.0          # same host: stamp-to-receipt is small
    assert imu['level'] == 0.0
    assert txt['rate_hz'] == pytest.approx(50.0, rel=0.15)   # header-less: rate and bandwidth only
    assert math.isnan(txt['latency_ms_p50'])
    assert txt['mean_size_kib'] > 0.19 and txt['bandwidth_mbps'] > 0.0
    stage = h.metrics['stages']['/h1/infer/stage_times']
    assert stage['fps'] == pytest.approx(50.0, rel=0.15)
    assert stage['infer_ms_p50'] == 5.0 and stage['total_ms_p99'] == 8.0
    assert 20.0 <= stage['latency_ms_p50'] < 70.0
    assert h.metrics['global']['pipeline_fps'] == stage['fps']
    assert h.metrics['global']['topics_watched'] == 2.0
    assert spin(h.executor, lambda: '/h1/imu_like' in h.statuses and '/h1/text' in h.statuses, 2.0)
    kv = values(h.statuses['/h1/imu_like'])
    assert float(kv['frame_rate_node']) == pytest.approx(50.0, rel=0.15)
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
