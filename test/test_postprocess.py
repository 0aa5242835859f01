"""Classification top-k and detection decode + NMS: exact small cases, and numpy vs torch on random ones."""
import numpy as np
import pytest

from isaac_perf.core.inference.postprocess import Detections, box_iou, decode_detections, nms, softmax, topk


def test_topk_exact_and_deterministic_ties():
    logits = np.array([[0.0, 3.0, 1.0, 3.0], [5.0, 0.0, 0.0, 0.0]], np.float32)
    ids, scores = topk(logits, k=3)
    assert ids.tolist() == [[1, 3, 2], [0, 1, 2]]  # equal scores keep the lower class id first
    p = np.exp([0.0, 3.0, 1.0, 3.0]) / np.exp([0.0, 3.0, 1.0, 3.0]).sum()
    np.testing.assert_allclose(scores[0], p[[1, 3, 2]], rtol=1e-6)
    raw_ids, raw = topk(logits, k=1, apply_softmax=False)
    assert raw_ids.tolist() == [[1], [0]] and raw.tolist() == [[3.0], [5.0]]
    assert topk(logits[0], k=10)[0].shape == (1, 4)  # 1-D input, k clipped to the class count
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])  # no overflow
    with pytest.raises(ValueError, match='topk expects'):
        topk(np.zeros((2, 3, 4)))


def test_box_iou_exact():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[25 / 175, 1.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)


def test_nms_greedy_and_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # box 3 (0.95) suppresses 0 (IoU 0.9) and 1 (IoU 0.63 > 0.5); box 2 is far away
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]  # nothing overlaps more than 0.95
    classes = np.array([0, 1, 0, 0])
    assert nms(boxes, scores, 0.5, classes).tolist() == [3, 1, 2]  # class 1 is never suppressed by class 0


def test_decode_detections_threshold_topk_and_max():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]]], np.float32)
    scores = np.array([[[0.9, 0.1], [0.2, 0.85], [0.3, 0.05], [0.6, 0.7]]], np.float32)
    (d,) = decode_detections(boxes, scores, score_threshold=0.5, iou_threshold=0.5)
    assert d.scores.tolist() == pytest.approx([0.9, 0.85, 0.7])
    assert d.class_ids.tolist() == [0, 1, 1] and d.boxes[2].tolist() == [40, 40, 50, 50]
    (agnostic,) = decode_detections(boxes, scores, 0.5, 0.5, class_aware=False)
    assert agnostic.class_ids.tolist() == [0, 1]  # box 1 now suppressed by box 0 across classes
    (top1,) = decode_detections(boxes, scores, 0.5, 0.5, max_detections=1)
    assert len(top1) == 1 and top1.scores[0] == pytest.approx(0.9)
    (pre,) = decode_detections(boxes, scores, 0.5, 0.5, pre_nms_top_k=2)
    assert pre.scores.tolist() == pytest.approx([0.9, 0.85])
    (none,) = decode_detections(boxes, scores, score_threshold=0.95)
    assert len(none) == 0 and isinstance(none, Detections) and none.boxes.shape == (0, 4)
    with pytest.raises(ValueError, match=r'boxes must be \[N, anchors, 4\]'):
        decode_detections(boxes[..., :3], scores)
    with pytest.raises(ValueError, match='scores must be'):
        decode_detections(boxes, scores[:, :3])


def _random_dets(rng, n_img=3, n=400, classes=5):
    xy = rng.uniform(0, 300, (n_img, n, 2))
    wh = rng.uniform(5, 80, (n_img, n, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (n_img, n, classes)).astype(np.float32) ** 3
    return boxes, scores


torch = pytest.importorskip('torch')


@pytest.mark.parametrize('seed', range(6))
def test_torch_nms_equals_numpy_greedy(seed):
    from isaac_perf.core.inference.postprocess import nms_torch
    rng = np.random.default_rng(seed)
    boxes, scores = _random_dets(rng, 1, 300)
    b, s = boxes[0], scores[0].max(1)
    cls = scores[0].argmax(1)
    for thr in (0.3, 0.5, 0.7):
        assert nms_torch(torch.from_numpy(b), torch.from_numpy(s), thr).tolist() == nms(b, s, thr).tolist()
        got = nms_torch(torch.from_numpy(b), torch.from_numpy(s), thr, torch.from_numpy(cls)).tolist()
        assert got == nms(b, s, thr, cls).tolist()


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU')])])
def test_decode_detections_torch_equals_numpy(device):
    from isaac_perf.core.inference.postprocess import decode_detections_torch
    boxes, scores = _random_dets(np.random.default_rng(7))
    for kwargs in (dict(), dict(class_aware=False), dict(score_threshold=0.5, max_detections=7),
                   dict(pre_nms_top_k=50)):
        ref = decode_detections(boxes, scores, **kwargs)
        got = decode_detections_torch(torch.from_numpy(boxes).to(device), torch.from_numpy(scores).to(device),
                                      **kwargs)
        assert len(got) == len(ref) == 3
        for g, r in zip(got, ref, strict=True):
            assert len(g) == len(r) > 0
            np.testing.assert_array_equal(g.class_ids, r.class_ids)
            np.testing.assert_allclose(g.scores, r.scores, rtol=1e-6)
            np.testing.assert_allclose(g.boxes, r.boxes, rtol=1e-6)


def test_nms_max_keep_equals_full_run_cut_short():
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 300, (400, 2)).astype(np.float32)
    wh = rng.uniform(5, 60, (400, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0, 1, 400).astype(np.float32)
    classes = rng.integers(0, 3, 400)
    full = nms(boxes, scores, 0.45, classes)
    assert full.size > 20
    np.testing.assert_array_equal(nms(boxes, scores, 0.45, classes, max_keep=20), full[:20])
