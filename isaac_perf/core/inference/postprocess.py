"""Model outputs -> results: classification top-k, and detection decode + NMS (numpy, and torch on the GPU).

Detection follows the usual single-stage recipe: for each anchor the best class and its score, a score
threshold, the ``pre_nms_top_k`` best candidates, greedy NMS (IoU > threshold suppresses; class-aware by
default, so a car never suppresses a person), then at most ``max_detections`` per image.

The torch path computes the same greedy result without a per-box Python loop: it builds the candidates'
IoU matrix on the device and iterates "Cluster-NMS" (Zheng et al., 2021), which converges to exactly the
greedy keep set in a few matrix steps, so only the final boxes cross to the host.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically safe softmax in float32."""
    z = np.asarray(x, dtype=np.float32)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def topk(logits: np.ndarray, k: int = 5, apply_softmax: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """[N, C] scores -> (class ids [N, k] int64, scores [N, k] float32), best first.

    Ties keep the lower class id, so results are deterministic.
    """
    x = np.asarray(logits, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f'topk expects [N, classes] scores, got shape {x.shape}')
    k = max(1, min(int(k), x.shape[1]))
    probs = softmax(x, axis=1) if apply_softmax else x
    ids = np.argsort(-probs, axis=1, kind='stable')[:, :k]
    return ids.astype(np.int64), np.take_along_axis(probs, ids, axis=1)


@dataclass
class Detections:
    """One image's detections: boxes [M, 4] (x1, y1, x2, y2), scores [M], class_ids [M]; best first."""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [M, 4] with every box in b [K, 4] -> [M, K]; empty boxes give 0, not NaN."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        class_ids: np.ndarray | None = None, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, best score first (stable for equal scores).

    `max_keep` stops once that many boxes are kept: greedy NMS keeps boxes in score order, so the first
    `max_keep` are the same as those of a full run cut to `max_keep`, at a fraction of the cost.

    With `class_ids`, a box only suppresses boxes of its own class (class-aware NMS); the IoU is computed
    on the boxes as given (no coordinate-offset trick, so no float precision is lost for large ids).
    """
    order = np.argsort(-np.asarray(scores, np.float32), kind='stable')
    boxes = np.asarray(boxes, np.float32)
    cls = None if class_ids is None else np.asarray(class_ids)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1 or (max_keep is not None and len(keep) >= max_keep):
            break
        rest = order[1:]
        suppress = box_iou(boxes[i:i + 1], boxes[rest])[0] > iou_threshold
        if cls is not None:
            suppress &= cls[rest] == cls[i]
        order = rest[~suppress]
    return np.asarray(keep, dtype=np.int64)


def _check_det_inputs(boxes_shape, scores_shape) -> None:
    if len(boxes_shape) != 3 or boxes_shape[-1] != 4:
        raise ValueError(f'detection boxes must be [N, anchors, 4], got {tuple(boxes_shape)}')
    if len(scores_shape) != 3 or tuple(scores_shape[:2]) != tuple(boxes_shape[:2]):
        raise ValueError('detection scores must be [N, anchors, classes] matching boxes '
                         f'{tuple(boxes_shape)}, got {tuple(scores_shape)}')


def decode_detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = 0.25,
                      iou_threshold: float = 0.45, max_detections: int = 100, class_aware: bool = True,
                      pre_nms_top_k: int = 1000) -> list[Detections]:
    """boxes [N, A, 4] + scores [N, A, C] -> one Detections per image (numpy)."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    _check_det_inputs(boxes.shape, scores.shape)
    results = []
    for b, s in zip(boxes, scores, strict=True):
        cls = s.argmax(axis=1)
        best = s[np.arange(s.shape[0]), cls]
        cand = np.nonzero(best > score_threshold)[0]
        if cand.size > pre_nms_top_k:
            cand = cand[np.argsort(-best[cand], kind='stable')[:pre_nms_top_k]]
        if cand.size == 0:
            results.append(Detections())
            continue
        keep = nms(b[cand], best[cand], iou_threshold, cls[cand] if class_aware else None,
                   max_keep=max_detections)
        idx = cand[keep]
        results.append(Detections(b[idx].copy(), best[idx].copy(), cls[idx].astype(np.int64)))
    return results


# ----------------------------------------------------------------------------------------------- torch path

def nms_torch(boxes: Any, scores: Any, iou_threshold: float, class_ids: Any = None) -> Any:
    """Greedy NMS on the device (Cluster-NMS iteration; the same keep set as nms()); indices, best first."""
    import torch
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    b = boxes[order].float()
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    over = torch.triu(iou > iou_threshold, diagonal=1)  # over[i, j]: better box i would suppress j
    if class_ids is not None:
        c = class_ids[order]
        over &= c[:, None] == c[None, :]
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    for _ in range(n):  # converges in a handful of steps; n bounds it
        suppressed = (over & keep[:, None]).any(dim=0)
        new_keep = ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]


def decode_detections_torch(boxes: Any, scores: Any, score_threshold: float = 0.25,
                            iou_threshold: float = 0.45, max_detections: int = 100, class_aware: bool = True,
                            pre_nms_top_k: int = 1000) -> list[Detections]:
    """decode_detections() with the work on the tensors' device; only the kept boxes come to the host."""
    import torch
    _check_det_inputs(tuple(boxes.shape), tuple(scores.shape))
    results = []
    for b, s in zip(boxes.float(), scores.float(), strict=True):
        best, cls = s.max(dim=1)
        cand = torch.nonzero(best > score_threshold).flatten()
        if cand.numel() > pre_nms_top_k:
            top = torch.sort(best[cand], descending=True, stable=True).indices[:pre_nms_top_k]
            cand = cand[top]
        if cand.numel() == 0:
            results.append(Detections())
            continue
        cb, cs, cc = b[cand], best[cand], cls[cand]
        keep = nms_torch(cb, cs, iou_threshold, cc if class_aware else None)[:max_detections]
        results.append(Detections(cb[keep].cpu().numpy(), cs[keep].cpu().numpy(),
                                  cc[keep].to(torch.int64).cpu().numpy()))
    return results
