"""stream_batcher over real DDS: three cameras, a small ONNX detector on onnxruntime (CPU).

Checks that every camera's results arrive on its own topic, in capture order and equal to per-frame
inference; that a camera which stops drains and is marked stopped while the others go on; that a live
max_batch_size change takes effect; and that bad parameter values are refused with a reason.
"""
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray, Float64MultiArray  # noqa: E402

from isaac_perf.core.batching.batcher import Frame  # noqa: E402
from isaac_perf.core.batching.model import ModelPlan  # noqa: E402
from isaac_perf.core.inference.engines.factory import create_engine  # noqa: E402
from isaac_perf.core.inference.models import build_detector  # noqa: E402
from isaac_perf.core.inference.preprocess import preprocess_numpy  # noqa: E402
from isaac_perf.nodes.stream_batcher import StreamBatcher, result_topic  # noqa: E402
from isaac_perf.ros.conversions import numpy_to_image  # noqa: E402

pytestmark = pytest.mark.ros

CAMS = ['/sbt/cam0/image_raw', '/sbt/cam1/image_raw', '/sbt/cam2/image_raw']
H, W = 48, 64


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return str(build_detector(64, 64, num_classes=4, cache_dir=tmp_path_factory.mktemp('models')))


def node_params(model_path, **over):
    values = dict(camera_topics=CAMS, input_reliability='reliable', queue_depth=50, max_batch_size=4,
                  max_queue_delay_ms=100.0, num_streams=2, model='', model_file_path=model_path,
                  backend='onnxruntime', device='cpu', enable_fp16=False, task='detection',
                  score_threshold=0.0, max_detections=5, warmup_iterations=0, camera_timeout_s=0.4,
                  diagnostics_period_s=0.1)
    values.update(over)
    return [Parameter(k, value=v) for k, v in values.items()]


class Harness(Node):
    """Publishes camera frames; records results per camera and stage reports."""

    def __init__(self, context):
        super().__init__('sbt_harness', context=context)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {c: self.create_publisher(Image, c, reliable) for c in CAMS}
        self.results = {c: [] for c in CAMS}
        for c in CAMS:
            self.create_subscription(Float32MultiArray, result_topic(c, 'detections'),
                                     lambda m, c=c: self.results[c].append(np.array(m.data, np.float32)),
                                     reliable)
        self.reports = []
        self.create_subscription(Float64MultiArray, '/stream_batcher/stage_times',
                                 lambda m: self.reports.append(dict(zip([d.label for d in m.layout.dim],
                                                                        m.data, strict=True))), reliable)

    def send(self, cam, frame, stamp_ns):
        self.pubs[cam].publish(numpy_to_image(frame, 'rgb8', stamp_ns=stamp_ns))


def expected_rows(model_path, frame):
    """What inference_node-style post-processing gives for one frame run alone."""
    engine = create_engine('onnxruntime', model_path)
    values = {p.name: p.value for p in node_params(model_path)}
    values.update(resize='letterbox', top_k=5, nms_iou_threshold=0.45)
    plan = ModelPlan(engine, values)
    x, _ = preprocess_numpy([(frame, 'rgb8')], plan.config)
    rows = plan.post(engine.infer({'images': x}), [Frame('c', 0, 0, 0, frame)])[0].rows
    return rows.reshape(-1)


def test_cameras_batched_results_in_order_stop_drain_and_live_batch_size(ros_context, spin, model):
    node = StreamBatcher(context=ros_context, parameter_overrides=node_params(model))
    harness = Harness(ros_context)
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    executor.add_node(node)
    executor.add_node(harness)
    rng = np.random.default_rng(11)
    frames = {c: [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(8)] for c in CAMS}
    try:
        assert node.engine_ready.wait(20.0), node.engine_error
        assert spin(executor, lambda: all(p.get_subscription_count() == 1 for p in harness.pubs.values())
                    and all(len(harness.get_publishers_info_by_topic(result_topic(c, 'detections'))) == 1
                            for c in CAMS), 10.0)
        # Round 1: all three cameras, three frames each, sent together like a synchronised rig.
        for k in range(3):
            for i, c in enumerate(CAMS):
                harness.send(c, frames[c][k], stamp_ns=(k + 1) * 1_000_000_000 + i)
        assert spin(executor, lambda: all(len(harness.results[c]) == 3 for c in CAMS), 15.0), \
            {c: len(r) for c, r in harness.results.items()}
        for c in CAMS:
            for k in range(3):
                np.testing.assert_allclose(harness.results[c][k], expected_rows(model, frames[c][k]),
                                           rtol=1e-4, atol=1e-4)
        assert spin(executor, lambda: len(harness.reports) == 9, 5.0)
        first = list(harness.reports)
        assert max(r['engine_batch_size'] for r in first) > 1  # frames of several cameras shared a batch
        for i in range(len(CAMS)):  # stage reports: per camera in capture order, stamps carried
            stamps = [int(r['stamp_sec']) for r in first if r['camera_index'] == i]
            assert stamps == [1, 2, 3]
        assert {'transport_ms', 'queue_ms', 'pre_ms', 'infer_ms', 'post_ms', 'total_ms'} <= set(first[0])

        # Camera 2 stops; the others go on. Its last frame drains by the delay rule, it is marked stopped.
        harness.send(CAMS[2], frames[CAMS[2]][3], stamp_ns=4_000_000_002)
        for k in (3, 4):
            for c in CAMS[:2]:
                harness.send(c, frames[c][k], stamp_ns=(k + 1) * 1_000_000_000)
        assert spin(executor, lambda: len(harness.results[CAMS[2]]) == 4
                    and all(len(harness.results[c]) == 5 for c in CAMS[:2]), 15.0)
        assert spin(executor, lambda: node.batcher.stats().cameras[CAMS[2]].stopped, 5.0)
        np.testing.assert_allclose(harness.results[CAMS[2]][3], expected_rows(model, frames[CAMS[2]][3]),
                                   rtol=1e-4, atol=1e-4)

        # Live max_batch_size change: from now on every batch holds one frame.
        result = node.set_parameters([Parameter('max_batch_size', value=1)])[0]
        assert result.successful and node.batcher.policy.max_batch_size == 1
        assert spin(executor, lambda: len(harness.reports) == 9 + 5, 5.0)
        n_reports = len(harness.reports)
        for k in (5, 6):
            for c in CAMS[:2]:
                harness.send(c, frames[c][k], stamp_ns=(k + 1) * 1_000_000_000)
        assert spin(executor, lambda: all(len(harness.results[c]) == 7 for c in CAMS[:2])
                    and len(harness.reports) == n_reports + 4, 15.0)
        later = harness.reports[n_reports:]
        assert len(later) == 4 and all(r['engine_batch_size'] == 1 for r in later)
        for c in CAMS[:2]:
            np.testing.assert_allclose(harness.results[c][6], expected_rows(model, frames[c][6]),
                                       rtol=1e-4, atol=1e-4)
        assert node.diagnostics_values()['dropped_overload'] == 0
    finally:
        executor.shutdown()
        node.destroy_node()
        harness.destroy_node()


def test_bad_parameter_values_are_refused_and_reliability_change_recreates_subscriptions(ros_context,
                                                                                        model, spin):
    node = StreamBatcher(context=ros_context, parameter_overrides=node_params(model, warmup_iterations=0))
    try:
        bad = [('max_batch_size', 0), ('max_batch_size', 300), ('max_queue_delay_ms', -1.0),
               ('num_streams', 17), ('queue_depth', 0), ('input_reliability', 'sometimes'),
               ('preferred_batch_sizes', [4, 300]), ('camera_topics', ['']),
               ('camera_topics', ['/a/image', '/a/image/'])]
        for name, value in bad:
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful, (name, value)
            assert result.reason, (name, value)
        assert node.batcher.policy.max_batch_size == 4 and node.batcher.policy.queue_depth == 50
        # A trailing / is refused by rclpy's own topic rules (checked before the batcher's own rules).
        assert 'must not end with a forward slash' in node.set_parameters(
            [Parameter('camera_topics', value=['/a/image', '/a/image/'])])[0].reason
        ok = node.set_parameters([Parameter('preferred_batch_sizes', value=[2, 4]),
                                  Parameter('max_queue_delay_ms', value=2.5),
                                  Parameter('queue_depth', value=3)])
        assert all(r.successful for r in ok)
        assert node.batcher.policy.preferred_batch_sizes == (2, 4)
        assert node.batcher.policy.max_queue_delay_ns == 2_500_000 and node.batcher.policy.queue_depth == 3
        # The cameras are subscribed once the engine is ready (on the executor thread), not before.
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        assert spin(executor, lambda: node._listening, 30.0), 'cameras never subscribed'
        executor.remove_node(node)
        executor.shutdown()
        before = list(node._frame_subs)
        assert before
        assert node.set_parameters([Parameter('input_reliability', value='best_effort')])[0].successful
        assert node._frame_subs and all(s not in before for s in node._frame_subs)
        info = node.get_subscriptions_info_by_topic(CAMS[0] + '/zero_copy')  # the transport's descriptors
        assert info and info[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert node.set_parameters([Parameter('num_streams', value=3)])[0].successful
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (node.pipeline.scheduler is None
                                               or node.pipeline.scheduler.num_streams != 3):
            time.sleep(0.02)
        assert node.pipeline.scheduler.num_streams == 3
    finally:
        node.destroy_node()


def test_a_malformed_image_is_counted_and_the_node_keeps_running(ros_context, spin, model):
    node = StreamBatcher(context=ros_context, parameter_overrides=node_params(model))
    try:
        msg = numpy_to_image(np.zeros((H, W, 3), np.uint8), 'rgb8')
        msg.step = 10  # shorter than a row
        node._on_image(CAMS[0], msg)
        msg = numpy_to_image(np.zeros((H, W, 3), np.uint8), 'rgb8')
        msg.encoding = 'yuv422'
        node._on_image(CAMS[0], msg)
        values = node.diagnostics_values()
        assert values['dropped_bad_input'] == 2 and values['frames_received'] == 2
        assert 'yuv422' in node.last_error
        assert node._worker.is_alive()
    finally:
        node.destroy_node()


def test_params_file_lists_every_parameter_at_its_default():
    import yaml

    from isaac_perf.core.paths import config_file
    from isaac_perf.nodes.stream_batcher import PARAMS
    values = yaml.safe_load(config_file('stream_batcher.yaml').read_text())['/**']['ros__parameters']
    assert values == {p.name: p.default for p in PARAMS}


def test_launch_file_wires_n_cameras_to_the_batcher_and_the_monitor():
    launch = pytest.importorskip('launch')
    pytest.importorskip('launch_ros')
    import importlib.util

    from isaac_perf.core.paths import share_dir
    path = share_dir() / 'launch' / 'batcher.launch.py'
    spec = importlib.util.spec_from_file_location('batcher_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, launch.LaunchDescription)
