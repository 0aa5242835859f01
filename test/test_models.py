"""The model builder: deterministic ONNX files, structure, MAC counts and the detector's anchor layout."""
import hashlib

import numpy as np
import onnx
import pytest

from isaac_perf.core.inference import models


@pytest.fixture(scope='session')
def model_dir(tmp_path_factory):
    # Under the session's base temp dir so every test file reuses the same generated files.
    return tmp_path_factory.getbasetemp() / 'isaac_perf_models'


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resnet50_is_deterministic_cached_and_about_4_gmac(model_dir, tmp_path):
    p = models.build_resnet50(cache_dir=model_dir)
    m = onnx.load(str(p))
    assert [i.name for i in m.graph.input] == ['images']
    assert [o.name for o in m.graph.output] == ['logits']
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == 'batch' and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    n_params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    # torchvision's ResNet-50 has 25,557,032 parameters; BN running stats add 2 x 26,560
    assert n_params == 25_557_032 + 53_120
    # Conv + Gemm MACs of ResNet-50 v1.5 at 224x224 (torchvision's figure: 4.09 GMAC)
    assert models.model_macs(p) == 4_089_184_256
    assert models.model_flops(p, batch=8) == 2 * 8 * 4_089_184_256
    # Cached: the same parameters return the same file without rewriting it.
    mtime = p.stat().st_mtime_ns
    assert models.build_resnet50(cache_dir=model_dir) == p and p.stat().st_mtime_ns == mtime
    # Deterministic: a fresh build elsewhere gives identical bytes; another seed does not.
    assert _sha(models.build_resnet50(cache_dir=tmp_path)) == _sha(p)
    other = models.make_resnet50(image_size=64, seed=1)
    same = models.make_resnet50(image_size=64, seed=0)
    assert other.graph.initializer[0].raw_data != same.graph.initializer[0].raw_data


def test_detector_layout_matches_anchors(model_dir):
    ort = pytest.importorskip('onnxruntime')
    p = models.build_detector(cache_dir=model_dir)
    layout = models.DetectorLayout(320, 320)
    assert layout.num_anchors == 20 * 20 * 3 + 10 * 10 * 3 == 1500
    sess = ort.InferenceSession(str(p), providers=['CPUExecutionProvider'])
    x = np.random.default_rng(3).random((2, 3, 320, 320), dtype=np.float32)
    boxes, scores = sess.run(['boxes', 'scores'], {'images': x})
    assert boxes.shape == (2, 1500, 4) and scores.shape == (2, 1500, 80)
    assert ((scores > 0) & (scores < 1)).all()
    anchors = layout.anchors()
    strides = np.array([16] * 1200 + [32] * 300, np.float32)
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    w = boxes[..., 2] - boxes[..., 0]
    # decode: centre within one stride of its anchor, width in (0, 2 x anchor side)
    assert (np.abs(cx - anchors[:, 0]) <= strides + 1e-3).all()
    assert (np.abs(cy - anchors[:, 1]) <= strides + 1e-3).all()
    assert ((w > 0) & (w < 2 * anchors[:, 2] + 1e-3)).all()
    # first anchor: cell (0, 0) of stride 16, scale 2 -> centre (8, 8), side 32
    assert anchors[0].tolist() == [8.0, 8.0, 32.0, 32.0]
    assert anchors[1200].tolist() == [16.0, 16.0, 64.0, 64.0]


def test_model_macs_of_detector_and_small_resnet():
    det = models.make_detector(64, 96, num_classes=3)
    assert models.model_macs(det) > 0
    # ResNet MACs scale with the pixel count (except the fixed FC layer: 2048 x 1000)
    small, big = models.make_resnet50(image_size=64), models.make_resnet50(image_size=128)
    fc = 2048 * 1000
    assert (models.model_macs(big) - fc) == pytest.approx(4 * (models.model_macs(small) - fc), rel=0.02)


def test_bad_parameters_and_unknown_model_names(tmp_path):
    with pytest.raises(ValueError, match='multiples of 32'):
        models.make_detector(100, 320)
    with pytest.raises(ValueError, match='too small'):
        models.make_resnet50(image_size=16)
    with pytest.raises(FileNotFoundError, match='built-in model'):
        models.resolve_model(str(tmp_path / 'nope.onnx'))
    assert models.resolve_model('detector', cache_dir=tmp_path, height=64, width=64).is_file()
