"""inference_node with real DDS: results and stage times out; every bad input dropped, counted, reported."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
onnx = pytest.importorskip('onnx')
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray, Float64MultiArray  # noqa: E402

from isaac_perf.core.telemetry import stage_times  # noqa: E402
from isaac_perf.nodes.inference import InferenceNode  # noqa: E402
from isaac_perf.ros import executors  # noqa: E402
from isaac_perf.ros.conversions import numpy_to_image  # noqa: E402
from isaac_perf.ros.qos import qos_from_name  # noqa: E402

TOPIC = '/cam/image_raw'
RESULTS = '/cam/image_raw/detections'
STAGES = '/inference_node/stage_times'


def tiny_classifier(path, classes=10):
    """Conv(3->4, 3x3) + ReLU + global average pool + Gemm: a real ONNX classifier on [N, 3, 16, 16]."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), 'w'),
             numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), 'fc_w'),
             numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), 'fc_b')]
    nodes = [helper.make_node('Conv', ['images', 'w'], ['c'], pads=[1, 1, 1, 1]),
             helper.make_node('Relu', ['c'], ['r']),
             helper.make_node('GlobalAveragePool', ['r'], ['g']),
             helper.make_node('Flatten', ['g'], ['f']),
             helper.make_node('Gemm', ['f', 'fc_w', 'fc_b'], ['logits'], transB=1)]
    graph = helper.make_graph(
        nodes, 'tiny', [helper.make_tensor_value_info('images', TensorProto.FLOAT, ['batch', 3, 16, 16])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', classes])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def frame(seed=0, h=24, w=32):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Harness:
    """The node under test on a MultiThreadedExecutor, plus a probe node publishing and listening."""

    def __init__(self, context, overrides):
        params = {'input_topics': [TOPIC], 'diagnostics_period_s': 0.1, 'warmup_iterations': 0,
                  'input_qos': 'reliable,depth=50', 'output_qos': 'reliable,depth=100', **overrides}
        self.node = InferenceNode(context=context,
                                  parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.probe = rclpy.create_node('probe', context=context)
        self.pub = self.probe.create_publisher(Image, TOPIC, qos_from_name('reliable', 50))
        self.results, self.stages, self.diagnostics = [], [], []
        qos = qos_from_name('reliable', 100)
        self.probe.create_subscription(Float32MultiArray, RESULTS, self.results.append, qos)
        self.probe.create_subscription(Float64MultiArray, STAGES, self.stages.append, qos)
        self.probe.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 50)
        self.executor = MultiThreadedExecutor(num_threads=3, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)

    def wait_connected(self, spin):
        assert spin(self.executor, lambda: self.pub.get_subscription_count() > 0
                    and self.probe.count_publishers(RESULTS) > 0, 5.0)

    def send(self, msg, stamp_ns=None):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns or time.time_ns(), 1_000_000_000)
        self.pub.publish(msg)

    def status(self):
        """The node's latest /diagnostics status."""
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name.startswith('inference_node'):
                    return status
        return None

    def close(self):
        executors.shutdown(self.executor)
        self.probe.destroy_node()
        self.node.destroy_node()


def status_values(h):
    return {kv.key: kv.value for kv in h.status().values}


@pytest.fixture
def harness(ros_context, tmp_path, monkeypatch):
    monkeypatch.setenv('ISAAC_PERF_CACHE', str(tmp_path / 'cache'))
    made = []

    def make(**overrides):
        h = Harness(ros_context, overrides)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def expected_classes(model_path, image, top_k):
    """What the node must publish: the same preprocessing, onnxruntime and top-k, done directly."""
    import onnxruntime as ort

    from isaac_perf.core.inference.postprocess import topk
    from isaac_perf.core.inference.preprocess import PreprocessConfig, preprocess_numpy
    batch, _ = preprocess_numpy([(image, 'rgb8')], PreprocessConfig(width=16, height=16))
    session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    logits = session.run(None, {'images': batch})[0]
    ids, scores = topk(logits, top_k)
    return ids[0], scores[0]


def test_classification_results_and_stage_times(harness, spin, tmp_path):
    model = tiny_classifier(tmp_path / 'tiny.onnx')
    h = harness(model='', model_file_path=model, top_k=3)
    assert spin(h.executor, h.node.engine_ready.is_set, 10.0), h.node.engine_error
    h.wait_connected(spin)
    image = frame(1)
    stamp = 1_700_000_000_123_456_789
    h.send(numpy_to_image(image, 'rgb8'), stamp)
    assert spin(h.executor, lambda: h.results and h.stages, 5.0)
    msg = h.results[0]
    layout = [(d.label, d.size, d.stride) for d in msg.layout.dim]
    assert layout == [('classes', 3, 6), ('class_id,score', 2, 2)]
    rows = np.array(msg.data, np.float32).reshape(3, 2)
    ids, scores = expected_classes(model, image, 3)
    assert rows[:, 0].tolist() == ids.tolist()
    np.testing.assert_allclose(rows[:, 1], scores, rtol=1e-5)
    report = stage_times.decode([d.label for d in h.stages[0].layout.dim], list(h.stages[0].data))
    assert report.stamp_ns == stamp and report.batch_size == 1
    assert list(report.stages_ms) == ['transport', 'queue', 'pre', 'infer', 'post']
    assert all(v >= 0 for v in report.stages_ms.values()) and report.stages_ms['infer'] > 0
    assert spin(h.executor, lambda: h.status() is not None
                and {kv.key: kv.value for kv in h.status().values}['results_published'] == '1', 3.0)
    assert h.status().level == DiagnosticStatus.OK
    assert {kv.key: kv.value for kv in h.status().values}['backend'] == 'onnxruntime'


def test_detection_rows_are_boxes_in_image_pixels(harness, spin):
    h = harness(model='detector', input_width=64, input_height=64, score_threshold=0.3, max_detections=20)
    assert spin(h.executor, h.node.engine_ready.is_set, 20.0), h.node.engine_error
    h.wait_connected(spin)
    h.send(numpy_to_image(frame(2, h=96, w=128), 'rgb8'))
    assert spin(h.executor, lambda: h.results, 5.0)
    msg = h.results[0]
    assert [d.label for d in msg.layout.dim] == ['detections', 'x1,y1,x2,y2,score,class_id']
    n = msg.layout.dim[0].size
    assert msg.layout.dim[0].stride == 6 * n and len(msg.data) == 6 * n
    rows = np.array(msg.data, np.float32).reshape(n, 6)
    assert ((rows[:, 0] >= 0) & (rows[:, 2] <= 128) & (rows[:, 1] >= 0) & (rows[:, 3] <= 96)).all()
    assert (rows[:, 4] > 0.3).all() and (np.diff(rows[:, 4]) <= 0).all()  # best first
    assert (rows[:, 5] == np.round(rows[:, 5])).all() and n <= 20


def test_bad_frames_are_dropped_counted_and_reported(harness, spin, tmp_path):
    h = harness(model='', model_file_path=tiny_classifier(tmp_path / 'tiny.onnx'))
    assert spin(h.executor, h.node.engine_ready.is_set, 10.0), h.node.engine_error
    h.wait_connected(spin)
    good = numpy_to_image(frame(3), 'rgb8')
    bad = {
        'wrong encoding': (Image(height=2, width=2, encoding='yuv422', step=4, data=[0] * 8),
                           "encoding 'yuv422' cannot be fed to the model"),
        'encoding the model cannot take': (numpy_to_image(np.ones((2, 2), np.float32), '32FC1'),
                                           "encoding '32FC1' cannot be fed to the model"),
        'short step': (Image(height=2, width=4, encoding='rgb8', step=10, data=[0] * 20),
                       'step=10 is less than'),
        'size mismatch': (Image(height=2, width=4, encoding='rgb8', step=12, data=[0] * 23),
                          'data has 23 bytes but step*height'),
        'empty data': (Image(height=2, width=4, encoding='rgb8', step=12, data=[]), 'image is empty'),
    }
    for count, (name, (msg, words)) in enumerate(bad.items(), start=1):
        h.send(msg)
        assert spin(h.executor, lambda c=count: h.node.drops.by_reason['bad_input'] == c, 3.0), name
        assert words in h.node.last_error, (name, h.node.last_error)
        assert spin(h.executor, lambda w=words: h.status() is not None and h.status().level ==
                    DiagnosticStatus.ERROR and w in h.status().message, 3.0), name
    h.send(good)  # the node is still running
    assert spin(h.executor, lambda: len(h.results) == 1, 5.0)
    assert h.node.frames_received == len(bad) + 1 and h.node.drops.total == len(bad)
    assert spin(h.executor, lambda: status_values(h)['results_published'] == '1', 3.0)
    values = {kv.key: kv.value for kv in h.status().values}
    assert values['dropped_bad_input'] == str(len(bad)) and values['total_dropped_frames'] == str(len(bad))


def test_missing_then_corrupt_then_valid_model(harness, spin, tmp_path):
    h = harness(model='', model_file_path=str(tmp_path / 'missing.onnx'))
    assert spin(h.executor, lambda: 'missing.onnx' in h.node.engine_error, 10.0)
    assert 'does not exist' in h.node.engine_error
    h.wait_connected(spin)
    h.send(numpy_to_image(frame(), 'rgb8'))
    assert spin(h.executor, lambda: h.node.drops.by_reason['no_engine'] == 1, 3.0)
    assert spin(h.executor, lambda: h.status() is not None and h.status().level == DiagnosticStatus.ERROR
                and 'missing.onnx' in h.status().message, 3.0)
    # A path that does not exist is refused outright at `ros2 param set` time ...
    result = h.node.set_parameters([Parameter('model_file_path', value=str(tmp_path / 'nope.onnx'))])[0]
    assert not result.successful and 'does not exist' in result.reason
    # ... a corrupt file is taken, fails to load, and is reported.
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x01garbage that is not a protobuf model')
    assert h.node.set_parameters([Parameter('model_file_path', value=str(corrupt))])[0].successful
    assert spin(h.executor, lambda: 'corrupt.onnx' in h.node.engine_error, 10.0)
    assert 'not a valid ONNX model' in h.node.engine_error or 'cannot load' in h.node.engine_error
    h.send(numpy_to_image(frame(), 'rgb8'))
    assert spin(h.executor, lambda: h.node.drops.by_reason['no_engine'] == 2, 3.0)
    # Fixing the parameter recovers without a restart.
    model = tiny_classifier(tmp_path / 'tiny.onnx')
    assert h.node.set_parameters([Parameter('model_file_path', value=model)])[0].successful
    assert spin(h.executor, h.node.engine_ready.is_set, 10.0)
    assert h.node.engine_error == ''
    h.send(numpy_to_image(frame(), 'rgb8'))
    assert spin(h.executor, lambda: h.results, 5.0)


def test_input_tensor_name_mismatch(harness, spin, tmp_path):
    model = tiny_classifier(tmp_path / 'tiny.onnx')
    h = harness(model='', model_file_path=model, input_tensor_names=['input_tensor'])
    assert spin(h.executor, lambda: 'tensor name mismatch' in h.node.engine_error, 10.0)
    assert "['images']" in h.node.engine_error  # it names what the model really has
    h.wait_connected(spin)
    h.send(numpy_to_image(frame(), 'rgb8'))
    assert spin(h.executor, lambda: h.node.drops.by_reason['no_engine'] == 1, 3.0)
    assert h.node.set_parameters([Parameter('input_tensor_names', value=['images'])])[0].successful
    assert spin(h.executor, h.node.engine_ready.is_set, 10.0)
    h.send(numpy_to_image(frame(), 'rgb8'))
    assert spin(h.executor, lambda: h.results, 5.0)


def test_unavailable_backend_falls_back_with_warning(harness, spin, tmp_path):
    from isaac_perf.core.inference.engines.factory import tensorrt_available
    if tensorrt_available():
        pytest.skip('TensorRT is installed here: nothing to fall back from')
    h = harness(model='', model_file_path=tiny_classifier(tmp_path / 'tiny.onnx'), backend='tensorrt',
                engine_file_path=str(tmp_path / 'other_gpu.plan'))
    assert spin(h.executor, h.node.engine_ready.is_set, 10.0), h.node.engine_error
    assert h.node._engine.backend == 'onnxruntime'
    assert spin(h.executor, lambda: h.status() is not None and h.status().level == DiagnosticStatus.WARN
                and 'tensorrt' in h.status().message.lower(), 3.0)
    h.wait_connected(spin)
    h.send(numpy_to_image(frame(), 'rgb8'))
    assert spin(h.executor, lambda: h.results, 5.0)


def test_slow_engine_drops_oldest_frames_and_counts_them(harness, spin, tmp_path):
    # ResNet-50 on the CPU (tens of ms a frame) is far slower than a burst of 30 sends, whatever the load.
    h = harness(model='resnet50', max_batch_size=1, queue_depth=1)
    assert spin(h.executor, h.node.engine_ready.is_set, 60.0), h.node.engine_error
    h.wait_connected(spin)
    big = numpy_to_image(frame(4, h=480, w=640), 'rgb8')
    for _ in range(30):
        h.send(big)
    assert spin(h.executor, lambda: h.node.frames_received == 30 and not h.node._pending(), 30.0)
    spin(h.executor, lambda: False, 0.5)
    node = h.node
    assert node.drops.by_reason['queue_overflow'] > 0
    assert node.frames_processed + node.drops.total == node.frames_received == 30
    assert len(h.results) == node.frames_processed


def test_out_of_range_parameters_are_refused_through_the_service(harness, spin, tmp_path):
    h = harness(model='', model_file_path=tiny_classifier(tmp_path / 'tiny.onnx'))
    client = h.probe.create_client(SetParameters, '/inference_node/set_parameters')
    assert client.wait_for_service(timeout_sec=5.0)
    cases = {
        'top_k': Parameter('top_k', value=0),
        'score_threshold': Parameter('score_threshold', value=1.5),
        'task': Parameter('task', value='segmentation'),
        'backend': Parameter('backend', value='tpu'),
        'input_qos': Parameter('input_qos', value='SENSOR_DAT'),
        'output_topic': Parameter('output_topic', value='/x'),  # fine alone: accepted
    }
    results = {}
    for name, param in cases.items():
        future = client.call_async(SetParameters.Request(parameters=[param.to_parameter_msg()]))
        assert spin(h.executor, future.done, 5.0), name
        results[name] = future.result().results[0]
    for name in ('top_k', 'score_threshold', 'task', 'backend', 'input_qos'):
        assert not results[name].successful, name
    assert 'segmentation' in results['task'].reason and 'tpu' in results['backend'].reason
    assert results['output_topic'].successful
    assert h.node.get_parameter('top_k').value == 5


@pytest.mark.gpu
def test_gpu_torch_backend_matches_cpu(harness, spin, tmp_path):
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA GPU')
    model = tiny_classifier(tmp_path / 'tiny.onnx')
    h = harness(model='', model_file_path=model, backend='torch', device='cuda', top_k=3)
    assert spin(h.executor, h.node.engine_ready.is_set, 60.0), h.node.engine_error
    assert str(h.node._engine.device).startswith('cuda') and h.node._runner._torch_pre is not None
    h.wait_connected(spin)
    image = frame(5)
    h.send(numpy_to_image(image, 'rgb8'))
    assert spin(h.executor, lambda: h.results, 10.0)
    rows = np.array(h.results[0].data, np.float32).reshape(3, 2)
    ids, scores = expected_classes(model, image, 3)
    assert rows[:, 0].tolist() == ids.tolist()
    np.testing.assert_allclose(rows[:, 1], scores, rtol=1e-3, atol=1e-4)


def test_replaceable_publishers_carry_no_event_handlers(ros_context):
    """A publisher a parameter change may destroy under a multi-threaded executor has no waitables to race on
    (rclpy gives a plain one default incompatible-QoS handlers)."""
    from std_msgs.msg import String

    from isaac_perf.ros.qos import replaceable_publisher
    node = rclpy.create_node('replaceable_publisher_probe', context=ros_context)
    try:
        plain = node.create_publisher(String, '/replaceable_plain', 10)
        assert plain.event_handlers  # what the race was on
        assert replaceable_publisher(node, String, '/replaceable', 10).event_handlers == []
    finally:
        node.destroy_node()
