"""qos_tuner under real DDS: it changes a running node's parameters through its parameter services.

The target is a real rclpy node of this test's own: it declares the stream_batcher's knobs and publishes a
real /performance_metrics (the perf_monitor's labelled layout) whose numbers come from
BatchedPipelineModel evaluated at its *current* parameters, so a change the tuner makes shows up in the
next metrics message exactly as it would with a real batcher.
"""
import itertools
import json
import time

import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension, String  # noqa: E402

from isaac_perf.core.telemetry import metrics  # noqa: E402
from isaac_perf.core.tuning.plant import BatchedPipelineModel  # noqa: E402
from isaac_perf.nodes.qos_tuner import QosTuner  # noqa: E402
from isaac_perf.ros.qos import qos_from_name  # noqa: E402

START = {'max_batch_size': 32, 'max_queue_delay_ms': 0.0, 'num_streams': 4, 'queue_depth': 4,
         'input_reliability': 'best_effort'}
_ids = itertools.count()


class FakeBatcher(Node):
    """Declares the batcher's knobs; publishes metrics computed from them every 50 ms."""

    def __init__(self, context, name, metrics_topic, min_depth=1):
        super().__init__(name, context=context)
        for key, value in START.items():
            self.declare_parameter(key, value)
        self.declare_parameter('camera_topics', [f'/camera_{i}/image_raw' for i in range(8)])
        self.min_depth = min_depth
        self.depths_seen = set()
        self.add_on_set_parameters_callback(self._check)
        self.model = BatchedPipelineModel()
        self.pub = self.create_publisher(Float32MultiArray, metrics_topic, 10)
        self.create_timer(0.05, self._publish)
        self.last = None

    def _check(self, params):
        for p in params:
            if p.name == 'queue_depth' and p.value < self.min_depth:
                return SetParametersResult(successful=False,
                                           reason=f'queue_depth={p.value} is below {self.min_depth}')
        return SetParametersResult(successful=True)

    def config(self):
        return {k: self.get_parameter(k).value for k in START}

    def _publish(self):
        cfg = self.config()
        self.depths_seen.add(cfg['queue_depth'])
        m = self.model.evaluate(cfg)
        self.last = m
        labels, values = metrics.flatten({'pipeline_fps': m.throughput_fps,
                                          'pipeline_latency_ms_p99': m.latency_p99_ms,
                                          'pipeline_latency_ms_p50': m.latency_p50_ms,
                                          'gpu_util_percent_max': m.gpu_util_pct}, [])
        msg = Float32MultiArray(data=values)
        msg.layout.dim = [MultiArrayDimension(label=label, size=1, stride=1) for label in labels]
        self.pub.publish(msg)


class Harness:
    def __init__(self, context, tmp_path, min_depth=1, **tuner_params):
        n = next(_ids)
        self.metrics_topic = f'/tuner_test_metrics_{n}'
        self.target = FakeBatcher(context, f'fake_batcher_{n}', self.metrics_topic, min_depth)
        self.yaml_path = tmp_path / 'tuned.yaml'
        params = {'target_node': f'/fake_batcher_{n}', 'metrics_topic': self.metrics_topic,
                  'latency_budget_ms': 33.0, 'settle_s': 0.3, 'cooldown_s': 0.3, 'control_period_s': 0.05,
                  'headroom': 0.5, 'confirm_windows': 1, 'output_config_path': str(self.yaml_path),
                  'output_dir': str(tmp_path),
                  **tuner_params}
        self.tuner = QosTuner(context=context, parameter_overrides=[Parameter(k, value=v)
                                                                     for k, v in params.items()])
        self.probe = rclpy.create_node(f'probe_{n}', context=context)
        self.decisions = []
        self.probe.create_subscription(String, '/qos_tuner/decisions',
                                       lambda m: self.decisions.append(json.loads(m.data)), 50)
        self.executor = SingleThreadedExecutor(context=context)
        for node in (self.target, self.tuner, self.probe):
            self.executor.add_node(node)

    def actions(self):
        return [d['action'] for d in self.decisions]

    def close(self):
        self.executor.shutdown()
        for node in (self.probe, self.tuner, self.target):
            node.destroy_node()


def test_tuner_changes_the_running_node_and_writes_yaml(ros_context, spin, tmp_path):
    h = Harness(ros_context, tmp_path)
    try:
        assert h.target.model.evaluate(START).latency_p99_ms == pytest.approx(39.4)  # over the 33 ms budget
        assert spin(h.executor, lambda: 'converged' in h.actions(), 10.0), h.decisions
        # the change went through the target's own parameter service and took effect there
        assert h.target.config() == {**START, 'queue_depth': 2}
        assert h.target.last.latency_p99_ms == pytest.approx(20.2)
        applied = [d for d in h.decisions if d['action'] == 'applied']
        assert len(applied) == 1 and applied[0]['change']['set'] == {'queue_depth': 2}
        change = next(d for d in h.decisions if d['action'] == 'change')
        assert change['reason'].startswith('p99 39.4 ms is 6.4 ms over the 33 ms budget: a queue of 4 frames')
        assert change['change']['expected'].startswith('queue wait falls')
        assert h.tuner.counts['applied'] == 1 and h.tuner.counts['rejected'] == 0
        written = yaml.safe_load(h.yaml_path.read_text())
        assert written == {h.tuner.p['target_node']: {'ros__parameters': h.target.config()}}
        assert h.yaml_path.read_text().splitlines()[1].startswith('# Tuned by /qos_tuner on ')
        # the file is a params file a node accepts (what the launch file passes to the batcher)
        reloaded = rclpy.create_node(h.target.get_name(), context=ros_context,
                                     cli_args=['--ros-args', '--params-file', str(h.yaml_path)],
                                     automatically_declare_parameters_from_overrides=True)
        try:
            assert {k: reloaded.get_parameter(k).value for k in START} == h.target.config()
        finally:
            reloaded.destroy_node()
    finally:
        h.close()


def test_advise_only_changes_nothing(ros_context, spin, tmp_path):
    h = Harness(ros_context, tmp_path, advise_only=True)
    try:
        assert spin(h.executor, lambda: h.actions().count('change') >= 2, 10.0), h.decisions
        assert h.target.config() == START
        assert 'applied' not in h.actions() and h.tuner.counts['applied'] == 0
        advice = [d for d in h.decisions if d['action'] == 'change']
        assert all(d['advise_only'] for d in advice)
        assert advice[0]['change']['set'] == advice[1]['change']['set'] == {'queue_depth': 2}
        assert not h.yaml_path.exists()
    finally:
        h.close()


def test_a_refused_change_is_reported_and_never_retried(ros_context, spin, tmp_path):
    h = Harness(ros_context, tmp_path, min_depth=4)
    try:
        assert spin(h.executor, lambda: 'converged' in h.actions(), 10.0), h.decisions
        rejected = [d for d in h.decisions if d['action'] == 'rejected']
        assert len(rejected) == 1 and rejected[0]['reason'] == 'queue_depth=2 is below 4'
        assert h.target.depths_seen == {4}
        assert h.target.config() == {**START, 'max_batch_size': 16}  # the next cut the controller tried
        assert h.target.last.latency_p99_ms <= 33.0
    finally:
        h.close()


def test_incompatible_qos_pair_is_reported_with_the_reason(ros_context, spin, tmp_path):
    h = Harness(ros_context, tmp_path, watch_topics=['/tuner_test_camera'], graph_check_period_s=0.2,
                advise_only=True)
    try:
        h.probe.create_publisher(String, '/tuner_test_camera', qos_from_name('SENSOR_DATA'))
        h.probe.create_subscription(String, '/tuner_test_camera', lambda m: None, qos_from_name('reliable'))
        assert spin(h.executor, lambda: 'qos_incompatible' in h.actions(), 10.0), h.decisions
        report = next(d for d in h.decisions if d['action'] == 'qos_incompatible')
        assert report['publisher'].endswith(h.probe.get_name()) and report['topic'] == '/tuner_test_camera'
        assert 'reliability: the subscription requests reliable but the publisher offers best effort' in \
            report['reason']
        assert '/tuner_test_camera' in h.tuner._watchers  # its own watcher is best effort: compatible
    finally:
        h.close()


def test_bad_parameters_are_refused_with_a_reason(ros_context, tmp_path):
    h = Harness(ros_context, tmp_path)
    try:
        result = h.tuner.set_parameters([Parameter('batch_size_min', value=128)])[0]
        assert not result.successful and result.reason == 'batch_size_min=128 is above batch_size_max=64'
        result = h.tuner.set_parameters([Parameter('tune_params', value=['max_batch_size', 'speed'])])[0]
        assert not result.successful and "tune_params ['speed']" in result.reason
        result = h.tuner.set_parameters([Parameter('target_node', value='stream_batcher')])[0]
        assert not result.successful and 'fully qualified name' in result.reason
        assert h.tuner.set_parameters([Parameter('latency_budget_ms', value=50.0)])[0].successful
        assert h.tuner._controller.requirements.max_latency_ms == 50.0
    finally:
        h.close()


def test_config_file_loads_and_malformed_metrics_are_counted(ros_context, spin, tmp_path):
    from isaac_perf.core.paths import config_file
    text = config_file('qos_tuner.yaml').read_text()
    text = text.replace('latency_budget_ms: 33.0', 'latency_budget_ms: 50.0')
    path = tmp_path / 'qos_tuner.yaml'
    path.write_text(text)
    tuner = QosTuner(context=ros_context, cli_args=['--ros-args', '--params-file', str(path)])
    try:
        assert tuner.p['latency_budget_ms'] == 50.0 and tuner.p['settle_s'] == 6.0
    finally:
        tuner.destroy_node()
    h = Harness(ros_context, tmp_path)
    try:
        bad = h.probe.create_publisher(Float32MultiArray, h.metrics_topic, 10)
        msg = Float32MultiArray(data=[1.0, 2.0])
        msg.layout.dim = [MultiArrayDimension(label='pipeline_fps', size=1, stride=1)]
        h.probe.create_timer(0.05, lambda: bad.publish(msg))
        assert spin(h.executor, lambda: h.tuner.counts['malformed_metrics'] >= 3, 5.0)
        assert spin(h.executor, lambda: 'converged' in h.actions(), 10.0)  # good messages still count
    finally:
        h.close()


def test_missing_target_waits_without_deciding(ros_context, spin):
    tuner = QosTuner(context=ros_context, parameter_overrides=[
        Parameter('target_node', value='/no_such_batcher'), Parameter('control_period_s', value=0.05)])
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(tuner)
    try:
        spin(executor, lambda: False, 0.5)
        assert tuner._config is None and tuner.counts['decisions'] == 0
        assert tuner._log.said('wait-target')
    finally:
        executor.shutdown()
        tuner.destroy_node()


def test_diagnostics_say_waiting_then_tuning(ros_context, spin, tmp_path):
    """/diagnostics through the Updater: WARN while the target is unknown, OK once its knobs are read."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    statuses = {}
    lonely = QosTuner(context=ros_context, parameter_overrides=[
        Parameter('target_node', value='/no_such_batcher'), Parameter('diagnostics_period_s', value=0.1)])
    listener = Node('diag_listener', context=ros_context)
    listener.create_subscription(DiagnosticArray, '/diagnostics',
                                 lambda m: statuses.update({s.name: s for s in m.status}), 50)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(lonely)
    executor.add_node(listener)
    try:
        assert spin(executor, lambda: 'qos_tuner: tuning' in statuses, 5.0)
        status = statuses['qos_tuner: tuning']
        assert status.level == DiagnosticStatus.WARN and 'waiting for /no_such_batcher' in status.message
        assert {kv.key: kv.value for kv in status.values}['config'] == 'unknown'
    finally:
        executor.shutdown()
        lonely.destroy_node()
        listener.destroy_node()
    h = Harness(ros_context, tmp_path, diagnostics_period_s=0.1)
    listener = Node('diag_listener2', context=ros_context)
    h.executor.add_node(listener)
    statuses.clear()
    listener.create_subscription(DiagnosticArray, '/diagnostics',
                                 lambda m: statuses.update({s.name: s for s in m.status}), 50)
    try:
        assert spin(h.executor, lambda: h.tuner._config is not None and 'qos_tuner: tuning' in statuses
                    and statuses['qos_tuner: tuning'].level == DiagnosticStatus.OK, 10.0)
        values = {kv.key: kv.value for kv in statuses['qos_tuner: tuning'].values}
        assert 'max_batch_size=' in values['config'] and values['target_node'] == h.tuner.p['target_node']
    finally:
        h.close()
        listener.destroy_node()


def test_start_up_refusal_is_a_startup_error_and_destroy_is_safe(ros_context):
    from isaac_perf.ros.node_main import StartupError
    with pytest.raises(StartupError, match='batch_size_min=32 is above batch_size_max=8'):
        QosTuner(context=ros_context, parameter_overrides=[Parameter('batch_size_min', value=32),
                                                           Parameter('batch_size_max', value=8)])
    # The half-built node is destroyed when the fixture shuts the context down: a raise there fails this.


def test_main_refuses_bad_start_up_parameters_with_exit_code_2():
    import os
    import subprocess
    import sys
    result = subprocess.run(
        [sys.executable, '-m', 'isaac_perf.nodes.qos_tuner', '--ros-args', '-p', 'margin:=0.5',
         '-p', 'headroom:=0.1'], env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'margin=0.5 must not exceed headroom=0.1' in result.stderr and 'Traceback' not in result.stderr


def test_stage_windows_wait_for_the_first_results(ros_context, spin, tmp_path):
    """A target that has delivered nothing yet (engine still loading) is not tuned: no window, no change,
    where 'nothing for 3 x max_window_s after a change' would otherwise read as a 1e6 ms window."""
    h = Harness(ros_context, tmp_path, window_source='stage_times', min_settle_s=0.05, min_window_s=0.05,
                max_window_s=0.1)
    stage_pub = h.probe.create_publisher(Float64MultiArray, f'{h.tuner.p["target_node"]}/stage_times', 50)
    try:
        assert spin(h.executor, lambda: h.tuner._config is not None, 10.0)
        spin(h.executor, lambda: False, 1.0)  # 10 x max_window_s of silence
        assert h.tuner._log.said('wait-results')
        assert h.tuner.counts['decisions'] == 0 and h.target.config() == START

        def report():  # one frame's stage report: stamp (s, ns) = now, 10 ms ago
            now = time.time_ns() - 10_000_000
            stage_pub.publish(Float64MultiArray(data=[float(now // 10**9), float(now % 10**9), 1.0]))
        h.probe.create_timer(0.005, report)
        assert spin(h.executor, lambda: h.tuner.counts['decisions'] > 0, 10.0)  # results: it tunes
    finally:
        h.close()
