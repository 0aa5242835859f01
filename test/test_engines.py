"""Engines on the CPU: onnxruntime and torch agree on both built-in models; bad models and inputs are refused
with messages that say what to fix; the factory's backend choice and fallbacks. GPU paths are marked gpu."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from isaac_perf.core.inference import models
from isaac_perf.core.inference.engines.base import (
    EngineError,
    EngineOptions,
    TensorSpec,
    check_feeds,
    to_numpy,
)
from isaac_perf.core.inference.engines.factory import create_engine, resolve_backend

torch = pytest.importorskip('torch')

# Stated tolerance for FP32 backends on the same model: |a - b| <= 1e-3 + 1e-4 |b|, and relative L2 < 1e-5.
RTOL, ATOL, REL_L2 = 1e-4, 1e-3, 1e-5


@pytest.fixture(scope='session')
def model_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / 'isaac_perf_models'


@pytest.fixture(scope='module')
def resnet(model_dir):
    return str(models.build_resnet50(image_size=64, cache_dir=model_dir))


@pytest.fixture(scope='module')
def detector(model_dir):
    return str(models.build_detector(height=128, width=160, num_classes=7, cache_dir=model_dir))


def _feeds(engine, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal((batch,) + s.shape[1:]).astype(np.float32) for s in engine.inputs}


def _agree(a, b):
    a, b = to_numpy(a), to_numpy(b)
    assert a.shape == b.shape and a.dtype == np.float32 and b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < REL_L2


@pytest.mark.parametrize('which', ['resnet', 'detector'])
def test_onnxruntime_and_torch_cpu_agree(which, request):
    path = request.getfixturevalue(which)
    ort_engine = create_engine('onnxruntime', path, EngineOptions(device='cpu'))
    torch_engine = create_engine('torch', path, EngineOptions(device='cpu'))
    assert ort_engine.backend == 'onnxruntime' and torch_engine.backend == 'torch'
    assert ort_engine.inputs == torch_engine.inputs and ort_engine.outputs == torch_engine.outputs
    assert ort_engine.inputs[0].dynamic_batch
    assert torch_engine.folded_bn == (53 if which == 'resnet' else 9)  # every BN folded into its conv
    # conv+relu and conv+add+relu chains: 1 stem + 16 blocks x 3 in ResNet-50; 9 in the detector
    assert torch_engine.fused_convs == (49 if which == 'resnet' else 9)
    # ResNet's 4 downsample convs hand their bias to the fused conv+add+relu they feed
    convs = [m for m in torch_engine.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(m.bias is None for m in convs) == (4 if which == 'resnet' else 0)
    for batch in (1, 3):
        feeds = _feeds(ort_engine, batch, seed=batch)
        ref = ort_engine.infer(feeds)
        out = torch_engine.infer(feeds)
        assert set(out) == {s.name for s in ort_engine.outputs}
        for name in ref:
            _agree(out[name], ref[name])
    # infer_async on the CPU runs synchronously with the same result; a torch tensor input works too
    feeds = _feeds(ort_engine, 2, seed=9)
    out = torch_engine.infer_async({k: torch.from_numpy(v) for k, v in feeds.items()})
    ref = ort_engine.infer(feeds)
    for name in ref:
        _agree(out[name], ref[name])


def test_factory_choices_and_fallbacks(resnet):
    logs = []
    engine = create_engine('auto', resnet, EngineOptions(device='cpu'), log=logs.append)
    assert engine.backend == 'onnxruntime' and engine.device == 'cpu' and logs == []
    if not torch.cuda.is_available():
        opts = EngineOptions(device='cuda', precision='fp16', cuda_graphs=True)
        engine = create_engine('torch', resnet, opts, log=logs.append)
        assert engine.backend == 'torch' and engine.device == 'cpu' and engine.precision == 'fp32'
        assert any('no CUDA GPU' in m for m in logs)
        assert any('FP32 on CPU' in m for m in logs)
        logs.clear()
        engine = create_engine('tensorrt', resnet, log=logs.append)
        assert engine.backend == 'onnxruntime'
        assert any("backend 'tensorrt' cannot run" in m and 'TensorRT' in m for m in logs)
        with pytest.raises(EngineError, match='TensorRT'):
            create_engine('tensorrt', resnet, fallback=False)
    with pytest.raises(EngineError, match="unknown backend 'trt'"):
        create_engine('trt', resnet)
    with pytest.raises(EngineError, match="unknown device 'gpu'"):
        resolve_backend('auto', EngineOptions(device='gpu'))


@pytest.mark.parametrize('backend', ['onnxruntime', 'torch'])
def test_missing_empty_and_corrupt_models(backend, resnet, tmp_path):
    with pytest.raises(EngineError, match='does not exist.*model_file_path'):
        create_engine(backend, str(tmp_path / 'missing.onnx'))
    empty = tmp_path / 'empty.onnx'
    empty.write_bytes(b'')
    with pytest.raises(EngineError, match='empty'):
        create_engine(backend, str(empty))
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(EngineError, match='garbage.onnx'):
        create_engine(backend, str(garbage))
    truncated = tmp_path / 'truncated.onnx'
    with open(resnet, 'rb') as f:
        truncated.write_bytes(f.read(1 << 20))
    with pytest.raises(EngineError, match='truncated.onnx'):
        create_engine(backend, str(truncated))


@pytest.mark.parametrize('backend', ['onnxruntime', 'torch'])
def test_name_mismatch_wrong_shapes_and_batch_limit(backend, detector):
    mismatch = r"input tensor name mismatch: configured \['input'\].*\['images'\]"
    with pytest.raises(EngineError, match=mismatch):
        create_engine(backend, detector, EngineOptions(device='cpu', input_names=('input',)))
    with pytest.raises(EngineError, match='output tensor name mismatch'):
        create_engine(backend, detector, EngineOptions(device='cpu', output_names=('scores', 'boxes')))
    engine = create_engine(backend, detector, EngineOptions(device='cpu', max_batch_size=4,
                                                            input_names=('images',)))
    x = np.random.default_rng(1).random((2, 3, 128, 160), dtype=np.float32)
    with pytest.raises(EngineError, match=r"got \['input'\], the model expects \['images'\]"):
        engine.infer({'input': x})
    with pytest.raises(EngineError, match=r'dimension 3 must be 160'):
        engine.infer({'images': x[..., :150]})
    with pytest.raises(EngineError, match='rank 4'):
        engine.infer({'images': x[0]})
    with pytest.raises(EngineError, match='exceeds max_batch_size=4'):
        engine.infer({'images': np.concatenate([x, x, x])})
    # float64 from user code is converted, not refused
    out = engine.infer({'images': x.astype(np.float64)})
    assert to_numpy(out['boxes']).shape == (2, 8 * 10 * 3 + 4 * 5 * 3, 4)
    engine.warmup((1, 2), iterations=1)


def test_check_feeds_exact_messages():
    specs = [TensorSpec('a', (-1, 3), 'float32'), TensorSpec('b', (-1, 2), 'float32')]
    assert check_feeds(specs, {'a': np.zeros((5, 3)), 'b': np.zeros((5, 2))}) == 5
    with pytest.raises(EngineError, match=r'inputs disagree on the batch size \(5 vs 4\)'):
        check_feeds(specs, {'a': np.zeros((5, 3)), 'b': np.zeros((4, 2))})
    with pytest.raises(EngineError, match='empty batch'):
        check_feeds(specs, {'a': np.zeros((0, 3)), 'b': np.zeros((0, 2))})
    with pytest.raises(EngineError, match=r"missing \['b'\]"):
        check_feeds(specs, {'a': np.zeros((5, 3))})


def test_torch_converter_names_unsupported_ops(tmp_path):
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', 3, 8, 8])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', 3, 8, 8])
    node = helper.make_node('LRN', ['x'], ['y'], name='lrn0', size=3)
    model = helper.make_model(helper.make_graph([node], 'g', [x], [y]),
                              opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    path = tmp_path / 'lrn.onnx'
    onnx.save(model, str(path))
    with pytest.raises(EngineError, match="ONNX op 'LRN' .*not supported.*use backend onnxruntime"):
        create_engine('torch', str(path), EngineOptions(device='cpu'))
    ort_engine = create_engine('onnxruntime', str(path))  # the suggested backend runs it
    assert to_numpy(ort_engine.infer({'x': np.ones((1, 3, 8, 8), np.float32)})['y']).shape == (1, 3, 8, 8)


def test_torch_converter_ops_match_onnxruntime(tmp_path):
    """Ops beyond the built-in models (padding, pooling, resize, slice, softmax...) against onnxruntime."""
    rng = np.random.default_rng(5)
    inits = [
        helper.make_tensor('w', TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32)),
        helper.make_tensor('scales', TensorProto.FLOAT, [4], [1, 1, 2, 2]),
        helper.make_tensor('starts', TensorProto.INT64, [1], [1]),
        helper.make_tensor('ends', TensorProto.INT64, [1], [3]),
        helper.make_tensor('axes', TensorProto.INT64, [1], [1]),
        helper.make_tensor('lo', TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor('hi', TensorProto.FLOAT, [], [6.0]),
    ]
    nodes = [
        helper.make_node('Conv', ['x', 'w'], ['c'], pads=[0, 1, 1, 0], strides=[1, 1]),  # asymmetric pads
        helper.make_node('Clip', ['c', 'lo', 'hi'], ['r6']),
        helper.make_node('AveragePool', ['r6'], ['ap'], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node('Resize', ['ap', '', 'scales'], ['up'], mode='nearest',
                         coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
        helper.make_node('Slice', ['up', 'starts', 'ends', 'axes'], ['sl']),
        helper.make_node('LeakyRelu', ['sl'], ['lr'], alpha=0.1),
        helper.make_node('HardSigmoid', ['lr'], ['hs']),
        helper.make_node('GlobalMaxPool', ['hs'], ['gm']),
        helper.make_node('Flatten', ['gm'], ['fl'], axis=1),
        helper.make_node('Softmax', ['fl'], ['y'], axis=-1),
    ]
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', 3, 8, 8])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', 2])
    model = helper.make_model(helper.make_graph(nodes, 'ops', [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    path = tmp_path / 'ops.onnx'
    onnx.save(model, str(path))
    feeds = {'x': rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    ref = create_engine('onnxruntime', str(path)).infer(feeds)['y']
    out = create_engine('torch', str(path), EngineOptions(device='cpu')).infer(feeds)['y']
    _agree(out, ref)


# ------------------------------------------------------------------------------------------------ GPU only

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize('which', ['resnet', 'detector'])
def test_torch_fp16_and_cuda_graphs_agree_with_fp32(which, request):
    path = request.getfixturevalue(which)
    ref_engine = create_engine('onnxruntime', path, EngineOptions(device='cpu'))
    fp32 = create_engine('torch', path, EngineOptions(device='cuda'))
    fp16 = create_engine('torch', path, EngineOptions(device='cuda', precision='fp16'))
    graphs = create_engine('torch', path, EngineOptions(device='cuda', precision='fp16', cuda_graphs=True))
    assert fp16.precision == 'fp16' and fp16.channels_last and graphs.use_graphs
    for seed in (1, 2):  # fresh data on the second round: a graph replaying stale inputs would fail
        feeds = _feeds(ref_engine, 4, seed=seed)
        ref = ref_engine.infer(feeds)
        a, b, c = fp32.infer(feeds), fp16.infer(feeds), graphs.infer(feeds)
        for name, r in ref.items():
            rn = np.linalg.norm(r)
            assert np.linalg.norm(to_numpy(a[name]) - r) / rn < 1e-3  # TF32 convolutions
            assert np.linalg.norm(to_numpy(b[name]) - r) / rn < 1e-2  # FP16
            np.testing.assert_allclose(to_numpy(c[name]), to_numpy(b[name]), rtol=1e-2, atol=1e-2)
    assert graphs.describe()['captured_batch_sizes'] == [4]
    stream = torch.cuda.Stream()
    out = graphs.infer_async(feeds, stream)
    stream.synchronize()
    np.testing.assert_allclose(to_numpy(out[ref_engine.outputs[0].name]),
                               to_numpy(c[ref_engine.outputs[0].name]), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@cuda
def test_torch_aoti_compile_is_cached_and_corrupt_packages_are_rebuilt(detector, tmp_path):
    opts = EngineOptions(device='cuda', precision='fp16', compile='default', max_batch_size=2,
                         cache_dir=str(tmp_path))
    logs = []
    first = create_engine('torch', detector, opts, log=logs.append)
    assert first.compile_seconds[2] > 0
    path = first.aoti_path(first.aoti_key(2, 'default'))
    feeds = _feeds(first, 2)
    ref = first.infer(feeds)
    second = create_engine('torch', detector, opts, log=logs.append)
    assert second.compile_seconds[2] == 0.0  # loaded from the cache, not compiled again
    out = second.infer(feeds)
    for name in ref:
        np.testing.assert_allclose(to_numpy(out[name]), to_numpy(ref[name]), rtol=1e-3, atol=1e-3)
    with open(path, 'r+b') as f:  # flip bytes in the middle of the package: the checksum must catch it
        f.seek(1000)
        f.write(b'\x00' * 16)
    third = create_engine('torch', detector, opts, log=logs.append)
    assert third.compile_seconds[2] > 0
    assert any('checksum does not match' in m for m in logs)
