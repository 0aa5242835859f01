"""The ROS-free half of inference_node: preprocess -> engine -> postprocess for one batch of frames.

`InferenceRunner` takes decoded frames (numpy arrays with their encodings), preprocesses them on the GPU
when the engine runs there (else in numpy), runs the engine and returns one `FrameResult` per frame with
per-stage times. The node (isaac_perf.nodes.inference) only turns ROS messages into frames and results
into messages; the batcher and the benchmarks use the runner directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from isaac_perf.core.inference.engines.base import Engine, EngineError
from isaac_perf.core.inference.preprocess import Letterbox, PreprocessConfig, preprocess_numpy


@dataclass
class FrameResult:
    rows: np.ndarray  # [M, 2] (class_id, score) or [M, 6] (x1, y1, x2, y2, score, class_id), float32
    task: str


class InferenceRunner:
    """Runs batches of HxWxC frames through an engine and returns per-frame result rows and stage times.

    Preprocessing runs on the engine's device: torch on CUDA for GPU engines (one upload of the raw
    frames), numpy otherwise. Detection boxes are mapped back to each frame's own pixels.
    """

    def __init__(self, engine: Engine, task: str = 'auto', resize: str = 'letterbox', top_k: int = 5,
                 score_threshold: float = 0.25, nms_iou_threshold: float = 0.45, max_detections: int = 100,
                 input_size: tuple[int, int] | None = None, log: Callable[[str], None] | None = None):
        self.engine = engine
        if not engine.inputs:
            raise EngineError('the model has no inputs')
        if len(engine.inputs) > 1:
            # Only the image is fed: a second input would fail every frame after a load that looked fine.
            names = ', '.join(f"'{i.name}'" for i in engine.inputs)
            raise EngineError(f'the model has {len(engine.inputs)} inputs ({names}): the inference node '
                              'feeds one image tensor; export the model with the image as its only input')
        self.input = engine.inputs[0]
        if self.input.dtype not in ('float32', 'float16'):
            # An int64 input would get the normalised float pixels truncated to integers.
            raise EngineError(f"input '{self.input.name}' is {self.input.dtype}: the inference node feeds "
                              'normalised float32/float16 images; use a model with a float image input')
        shape = self.input.shape
        if len(shape) != 4 or shape[1] not in (1, 3):
            raise EngineError(f"input '{self.input.name}' has shape {shape}: the inference node feeds images "
                              'as [N, 3, H, W] (or [N, 1, H, W]); use a model with such an input')
        self.task = self._task(task)
        model_h, model_w = shape[2], shape[3]
        want_w, want_h = input_size or (0, 0)
        if model_h > 0 and model_w > 0:
            if log is not None and ((want_w and want_w != model_w) or (want_h and want_h != model_h)):
                log(f'the model takes {model_w}x{model_h} inputs: '
                    f'input_width/height {want_w}x{want_h} ignored')
            width, height = model_w, model_h
        else:
            width = want_w or 224
            height = want_h or 224
        if self.task == 'detection':
            base = PreprocessConfig.for_detector(width, height)
            self.config = PreprocessConfig(width=width, height=height, resize=resize, mean=base.mean,
                                           std=base.std, channels=shape[1])
        else:
            imagenet = PreprocessConfig()
            mean, std = ((0.449,), (0.226,)) if shape[1] == 1 else (imagenet.mean, imagenet.std)
            self.config = PreprocessConfig(width=width, height=height, resize=resize, mean=mean, std=std,
                                           channels=shape[1])
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.max_detections = max_detections
        dynamic = self.input.dynamic_batch
        self.max_batch = max(1, engine.max_batch_size) if dynamic else max(1, shape[0])
        self.static_batch = 0 if dynamic else max(1, shape[0])
        self.on_gpu = str(engine.device).startswith('cuda')
        self._torch_pre = None
        if self.on_gpu and engine.backend in ('torch', 'tensorrt'):
            try:
                import torch

                from isaac_perf.core.inference.preprocess import TorchPreprocessor
                dtype = torch.float16 if self.input.dtype == 'float16' else torch.float32
                self._torch_pre = TorchPreprocessor(self.config, device=str(engine.device), dtype=dtype)
            except Exception as exc:  # noqa: BLE001 - any torch/CUDA trouble: numpy preprocessing still works
                if log is not None:
                    log(f'GPU preprocessing unavailable ({exc}): preprocessing on the CPU')
        self._buffer = np.empty((self.max_batch, shape[1], height, width), np.float32)

    def _task(self, task: str) -> str:
        outputs = self.engine.outputs
        if task == 'auto':
            names = {o.name for o in outputs}
            has_boxes = any(len(o.shape) == 3 and o.shape[-1] == 4 for o in outputs)
            task = 'detection' if ({'boxes', 'scores'} <= names or (has_boxes and len(outputs) >= 2)) \
                else 'classification'
        if task == 'detection':
            self._boxes_name, self._scores_name = self._detection_outputs()
        else:
            self._logits_name = outputs[0].name
            if len(outputs[0].shape) != 2:
                raise EngineError(f"output '{outputs[0].name}' has shape {outputs[0].shape}: classification "
                                  'needs [N, classes]; set task to detection for a detector')
        return task

    def _detection_outputs(self) -> tuple[str, str]:
        outputs = self.engine.outputs
        by_name = {o.name: o for o in outputs}
        if 'boxes' in by_name and 'scores' in by_name:
            return 'boxes', 'scores'
        boxes = [o for o in outputs if len(o.shape) == 3 and o.shape[-1] == 4]
        scores = [o for o in outputs if len(o.shape) == 3 and o not in boxes]
        if not boxes or not scores:
            raise EngineError('detection needs outputs boxes [N, A, 4] and scores [N, A, classes]; '
                              f'the model has {[(o.name, o.shape) for o in outputs]}')
        return boxes[0].name, scores[0].name

    def run(self, frames: Sequence[tuple[np.ndarray, str]]) -> tuple[list[FrameResult], dict[str, float]]:
        """Run one batch (len(frames) <= max_batch); returns per-frame results and pre/infer/post in ms."""
        t0 = time.perf_counter()
        n = len(frames)
        if self._torch_pre is not None:
            batch, placements = self._torch_pre(list(frames))
        else:
            batch, placements = preprocess_numpy(list(frames), self.config, out=self._buffer)
            if self.input.dtype == 'float16':
                batch = batch.astype(np.float16)
        if self.static_batch and n < self.static_batch:
            batch = _pad(batch, self.static_batch)
        t1 = time.perf_counter()
        outputs = self.engine.infer({self.input.name: batch})
        t2 = time.perf_counter()
        results = self._post(outputs, n, placements)
        t3 = time.perf_counter()
        return results, {'pre': (t1 - t0) * 1e3, 'infer': (t2 - t1) * 1e3, 'post': (t3 - t2) * 1e3}

    def _post(self, outputs: dict[str, Any], n: int, placements: list[Letterbox]) -> list[FrameResult]:
        from isaac_perf.core.inference.engines.base import to_numpy
        from isaac_perf.core.inference.postprocess import decode_detections, decode_detections_torch, topk
        if self.task == 'classification':
            logits = to_numpy(outputs[self._logits_name])[:n].astype(np.float32, copy=False)
            ids, scores = topk(logits, self.top_k)
            return [FrameResult(np.stack([ids[i].astype(np.float32), scores[i]], axis=1), 'classification')
                    for i in range(n)]
        boxes, scores = outputs[self._boxes_name], outputs[self._scores_name]
        kwargs = dict(score_threshold=self.score_threshold, iou_threshold=self.nms_iou_threshold,
                      max_detections=self.max_detections)
        if hasattr(boxes, 'device') and str(getattr(boxes, 'device', 'cpu')).startswith('cuda'):
            detections = decode_detections_torch(boxes[:n], scores[:n], **kwargs)
        else:
            detections = decode_detections(to_numpy(boxes)[:n], to_numpy(scores)[:n], **kwargs)
        return [FrameResult(detection_rows(det, placement), 'detection')
                for det, placement in zip(detections, placements, strict=True)]


def _pad(batch: Any, size: int) -> Any:
    """Repeat the last item so a fixed-batch engine gets a full batch (the extra results are ignored)."""
    n = batch.shape[0]
    index = list(range(n)) + [n - 1] * (size - n)
    return batch[index]



class DropCounter:
    """Dropped frames by reason (a plain dict under the node's lock); REASONS are always reported, others
    (zero-copy descriptors refused: zero_copy_stale, ...) from their first occurrence."""

    REASONS = ('queue_overflow', 'bad_input', 'no_engine', 'engine_error')

    def __init__(self) -> None:
        self.by_reason = dict.fromkeys(self.REASONS, 0)

    def add(self, reason: str, count: int = 1) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + count

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def detection_rows(det: Any, placement: Letterbox) -> np.ndarray:
    """[M, 6] rows (x1, y1, x2, y2, score, class_id) with boxes mapped back to source-image pixels."""
    rows = np.zeros((len(det), 6), np.float32)
    if len(det):
        rows[:, :4] = placement.to_source(det.boxes)
        rows[:, 4] = det.scores
        rows[:, 5] = det.class_ids
    return rows
