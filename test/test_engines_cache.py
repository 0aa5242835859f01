"""Engine caches and the TensorRT backend up to the API boundary (TensorRT is not installable here):
cache keys, plan/package validation, corrupt files, the FP16 rewrite for strongly typed TensorRT 11,
calibration batches, build progress, and the error when TensorRT is missing."""
import importlib.util
import json
import os

import numpy as np
import pytest

from isaac_perf.core.inference import models
from isaac_perf.core.inference.engines.base import EngineError, EngineOptions, TensorSpec
from isaac_perf.core.inference.engines.cache import validate_artifact, write_artifact
from isaac_perf.core.inference.engines.tensorrt_engine import (
    BuildProgress,
    CalibrationBatches,
    onnx_to_fp16,
    plan_cache_key,
    plan_path,
    profile_shapes,
    trt_major,
)

SPECS = [TensorSpec('images', (-1, 3, 224, 224), 'float32')]


def _key(**over):
    shapes = profile_shapes(SPECS, 1, 4, 8)
    args = dict(model_sha256='ab' * 32, precision='fp16', shapes=shapes, gpu_name='NVIDIA H100 80GB HBM3',
                compute_capability='9.0', trt_version='10.13.0.35', strongly_typed=False)
    args.update(over)
    return plan_cache_key(**args)


def test_profile_shapes_and_errors():
    want = ((1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224))
    assert profile_shapes(SPECS, 1, 4, 8) == {'images': want}
    fixed = [TensorSpec('x', (2, 3, 8, 8), 'float32')]
    assert profile_shapes(fixed, 1, 1, 4)['x'] == ((2, 3, 8, 8),) * 3  # a fixed batch stays fixed
    with pytest.raises(EngineError, match='1 <= min <= opt <= max'):
        profile_shapes(SPECS, 1, 16, 8)
    with pytest.raises(EngineError, match='dynamic non-batch dims'):
        profile_shapes([TensorSpec('x', (-1, 3, -1, -1), 'float32')], 1, 1, 2)
    assert trt_major('10.13.0.35') == 10 and trt_major('11.0.1') == 11 and trt_major('dev') == 0


@pytest.mark.parametrize('field, value', [
    ('model_sha256', 'cd' * 32), ('precision', 'int8'), ('gpu_name', 'NVIDIA A100-SXM4-80GB'),
    ('compute_capability', '8.0'), ('trt_version', '11.0.0'), ('strongly_typed', True),
    ('shapes', profile_shapes(SPECS, 1, 8, 16)),
])
def test_every_key_field_changes_the_plan_file(field, value, tmp_path):
    base, other = _key(), _key(**{field: value})
    assert base != other
    assert plan_path(str(tmp_path), 'm.onnx', base) != plan_path(str(tmp_path), 'm.onnx', other)


def _write_plan(tmp_path, key, payload=b'PLAN' * 1000):
    path = plan_path(str(tmp_path), '/models/resnet50.onnx', key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'wb') as f:
        f.write(payload)
    write_artifact(path + '.tmp', path, key)
    return path


def test_plan_validation_rejects_stale_foreign_and_corrupt_plans(tmp_path):
    key = _key()
    path = _write_plan(tmp_path, key)
    assert os.path.basename(path).startswith('resnet50_fp16_') and path.endswith('.plan')
    assert validate_artifact(path, key) is None
    meta = json.load(open(path + '.json'))
    assert meta['gpu'] == 'NVIDIA H100 80GB HBM3' and meta['bytes'] == 4000 and len(meta['sha256']) == 64
    # the same file asked for by another GPU / TensorRT is refused with the reason
    assert "gpu='NVIDIA H100 80GB HBM3', not 'NVIDIA A100" in validate_artifact(
        path, _key(gpu_name='NVIDIA A100-SXM4-80GB'))
    assert 'tensorrt' in validate_artifact(path, _key(trt_version='10.14.0'))
    # same size, one byte flipped: only the checksum catches it
    with open(path, 'r+b') as f:
        f.seek(100)
        f.write(b'X')
    assert 'checksum does not match' in validate_artifact(path, key)
    with open(path, 'ab') as f:
        f.write(b'more')
    assert 'size does not match' in validate_artifact(path, key)
    with open(path + '.json', 'w') as f:
        f.write('{not json')
    assert 'sidecar is unreadable' in validate_artifact(path, key)
    os.unlink(path + '.json')
    assert 'sidecar is missing' in validate_artifact(path, key)  # e.g. a plan copied in by hand
    os.unlink(path)
    assert validate_artifact(path, key) == 'no cached build'


def test_calibration_batches(tmp_path):
    data = np.random.default_rng(0).random((10, 3, 8, 8)).astype(np.float64)
    batches = CalibrationBatches(data, 4)
    got = list(batches)
    assert len(batches) == 2 and [b.shape for b in got] == [(4, 3, 8, 8)] * 2
    assert got[0].dtype == np.float32 and got[0].flags.c_contiguous
    np.testing.assert_allclose(got[1], data[4:8].astype(np.float32))
    np.save(tmp_path / 'calib.npy', data)
    assert len(CalibrationBatches(str(tmp_path / 'calib.npy'), 5)) == 2
    with pytest.raises(EngineError, match='does not exist'):
        CalibrationBatches(str(tmp_path / 'missing.npy'), 4)
    with pytest.raises(EngineError, match='N >= batch size 16'):
        CalibrationBatches(data, 16)


def test_build_progress_bookkeeping_and_cancel():
    cancelled = []
    progress = BuildProgress(enabled=False, cancel=lambda: bool(cancelled))
    progress.phase_start('Building engine', None, 3)
    progress.phase_start('Tactic timing', 'Building engine', 10)
    assert progress.depth == {'Building engine': 0, 'Tactic timing': 1}
    assert progress.step_complete('Tactic timing', 4) is True
    assert progress.bars['Tactic timing'] == [5, 10]
    progress.phase_finish('Tactic timing')
    cancelled.append(True)
    assert progress.step_complete('Building engine', 0) is False  # asks TensorRT to stop
    progress.phase_finish('Building engine')
    assert progress.finished == ['Tactic timing', 'Building engine'] and progress.bars == {}
    shown = BuildProgress(enabled=True)  # the tqdm path
    shown.phase_start('Building engine', None, 2)
    assert shown.step_complete('Building engine', 1)
    shown.phase_finish('Building engine')


def test_onnx_to_fp16_keeps_fp32_io_and_runs(tmp_path):
    ort = pytest.importorskip('onnxruntime')
    import onnx
    from onnx import TensorProto
    model = models.make_detector(64, 96, num_classes=3)
    half = onnx_to_fp16(model)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in half.graph.output)
    floats = [i for i in half.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(i.data_type == TensorProto.FLOAT16 for i in floats)
    assert [n.op_type for n in half.graph.node][:1] == ['Cast'] and half.graph.node[-1].op_type == 'Cast'
    path = tmp_path / 'half.onnx'
    onnx.save(half, str(path))
    x = np.random.default_rng(1).random((2, 3, 64, 96), dtype=np.float32)
    cpu = ['CPUExecutionProvider']
    ref = ort.InferenceSession(model.SerializeToString(), providers=cpu).run(None, {'images': x})
    try:
        got = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'images': x})
    except Exception as e:  # noqa: BLE001 - some CPU builds lack FP16 kernels for an op
        pytest.skip(f'this onnxruntime cannot run FP16 on the CPU: {e}')
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == np.float32
        assert np.linalg.norm(g - r) / np.linalg.norm(r) < 1e-2


def _real_tensorrt_installed() -> bool:
    spec = importlib.util.find_spec('tensorrt')  # tensorrt-stubs alone gives a namespace package, no origin
    return spec is not None and spec.origin not in (None, 'namespace')


@pytest.mark.skipif(_real_tensorrt_installed(), reason='TensorRT is installed here')
def test_tensorrt_missing_is_a_clear_engine_error(tmp_path):
    from isaac_perf.core.inference.engines.tensorrt_engine import TensorRTEngine
    path = models.build_detector(64, 64, num_classes=2, cache_dir=tmp_path)
    with pytest.raises(EngineError, match="TensorRT is not installed.*backend 'torch'.*'onnxruntime'"):
        TensorRTEngine(str(path), EngineOptions(precision='fp16'))


def test_torch_aoti_keys_differ_by_precision_and_shape(tmp_path):
    pytest.importorskip('torch')
    from isaac_perf.core.inference.engines.torch_engine import TorchEngine
    path = models.build_detector(64, 64, num_classes=2, cache_dir=tmp_path)
    eng = TorchEngine(str(path), EngineOptions(device='cpu', cache_dir=str(tmp_path)))
    k1, k2 = eng.aoti_key(1, 'default'), eng.aoti_key(8, 'default')
    k3 = eng.aoti_key(1, 'max-autotune')
    assert k1['input_shapes'] == [[1, 3, 64, 64]] and k2['input_shapes'] == [[8, 3, 64, 64]]
    assert len({eng.aoti_path(k) for k in (k1, k2, k3)}) == 3
    assert k1['gpu'] == 'cpu' and k1['torch'] and len(k1['model_sha256']) == 64
    assert eng.aoti_path(k1).startswith(str(tmp_path / 'torch_aoti'))
