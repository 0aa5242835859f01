"""What stream_batcher needs around a loaded engine, with no ROS: the preprocessing configuration the
model's input implies, the task (classification or detection), and one batch's post-processing into
result rows per frame (boxes mapped back to each camera's own pixels)."""
from __future__ import annotations

from typing import Any

import numpy as np

from isaac_perf.core.batching.batcher import Frame
from isaac_perf.core.inference.engines.base import Engine, EngineError
from isaac_perf.core.inference.postprocess import decode_detections, topk
from isaac_perf.core.inference.preprocess import PreprocessConfig, fit
from isaac_perf.core.inference.runner import FrameResult as ResultRows
from isaac_perf.core.inference.runner import detection_rows


class ModelPlan:
    """What a loaded engine needs around it: preprocessing config, task, and the batch post-processing."""

    def __init__(self, engine: Engine, values: dict[str, Any]) -> None:
        if not engine.inputs or len(engine.inputs[0].shape) != 4 or engine.inputs[0].shape[1] not in (1, 3):
            shape = engine.inputs[0].shape if engine.inputs else ()
            raise EngineError(f'the model input has shape {shape}: stream_batcher feeds images as '
                              '[N, 3, H, W] (or [N, 1, H, W]); use a model with such an input')
        self.engine = engine
        spec = engine.inputs[0]
        outputs = engine.outputs
        task = values['task']
        names = {o.name for o in outputs}
        if task == 'auto':
            task = 'detection' if {'boxes', 'scores'} <= names else 'classification'
        if task == 'detection':
            if not {'boxes', 'scores'} <= names:
                raise EngineError(f'detection needs outputs boxes and scores; the model has {sorted(names)}')
        elif len(outputs[0].shape) != 2:
            raise EngineError(f"output '{outputs[0].name}' has shape {outputs[0].shape}: classification "
                              'needs [N, classes]; set task to detection for a detector')
        self.task = task
        self.logits = outputs[0].name
        model_h, model_w = spec.shape[2], spec.shape[3]
        width = model_w if model_w > 0 else (values['input_width'] or 224)
        height = model_h if model_h > 0 else (values['input_height'] or 224)
        channels = spec.shape[1]
        if task == 'detection':
            base = PreprocessConfig.for_detector(width, height)
            mean, std = (base.mean[:channels], base.std[:channels])
        else:
            imagenet = PreprocessConfig()
            mean, std = ((0.449,), (0.226,)) if channels == 1 else (imagenet.mean, imagenet.std)
        self.config = PreprocessConfig(width=width, height=height, resize=values['resize'], mean=mean,
                                       std=std, channels=channels)
        self.values = values

    def post(self, outputs: dict[str, np.ndarray], frames: list[Frame]) -> list[ResultRows]:
        """One batch's outputs -> result rows per frame, boxes in each camera's own pixels."""
        v = self.values
        n = len(frames)
        if self.task == 'classification':
            if 'topk_ids' in outputs:  # reduced on the device by EngineCompute
                ids, scores = outputs['topk_ids'][:n], outputs['topk_scores'][:n]
            else:
                ids, scores = topk(np.asarray(outputs[self.logits], np.float32)[:n], int(v['top_k']))
            return [ResultRows(np.stack([ids[i].astype(np.float32), scores[i]], axis=1), 'classification')
                    for i in range(n)]
        detections = decode_detections(outputs['boxes'][:n], outputs['scores'][:n],
                                       score_threshold=v['score_threshold'],
                                       iou_threshold=v['nms_iou_threshold'],
                                       max_detections=v['max_detections'])
        return [ResultRows(detection_rows(det, fit(frame.data.shape[1], frame.data.shape[0], self.config)),
                           'detection')
                for det, frame in zip(detections, frames, strict=True)]
