"""The compute step of a batch: preprocess a stack of same-size camera frames, then run the engine.

Frames of one batch share height, width and encoding (the batcher groups them by that key), so the whole
batch is preprocessed at once: one bilinear resize over an N x C x H x W tensor instead of N small ones.
The arithmetic is the one of :mod:`isaac_perf.core.inference.preprocess` (same fit/letterbox, same
interpolation,
same normalisation), so `BatchPreprocessor` agrees with `preprocess_numpy` to float rounding, which
test/test_scheduler.py checks on the CPU.

On a GPU runtime the input is the device tensor the scheduler uploaded (uint8 frames: 4x fewer bytes over
PCIe than float32) and everything runs on the lane's compute stream; on the CPU runtime it is numpy.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from isaac_perf.core.inference.preprocess import ENCODINGS, Letterbox, PreprocessConfig, fit, preprocess_numpy


def key_encoding(key: Hashable, default: str = 'rgb8') -> str:
    """The encoding of a batch key (height, width, encoding); `default` for other keys."""
    if isinstance(key, tuple) and len(key) == 3 and isinstance(key[2], str):
        return key[2]
    return default


class BatchPreprocessor:
    """N x H x W x C frames of one encoding -> N x C x h x w model input (numpy or torch)."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self._torch_consts: dict[Any, tuple[Any, Any, Any]] = {}

    def placement(self, width: int, height: int) -> Letterbox:
        return fit(width, height, self.cfg)

    def numpy(self, frames: np.ndarray, encoding: str, dtype: str = 'float32') -> np.ndarray:
        if frames.ndim == 3:
            frames = frames[..., None]
        out, _ = preprocess_numpy([(f, encoding) for f in frames], self.cfg)
        return out.astype(dtype, copy=False)

    def torch(self, frames: Any, encoding: str, dtype: Any = None, channels_last: bool = False) -> Any:
        """`frames`: N x H x W x C torch tensor (uint8; uint16 data viewed as int16) on any device."""
        import torch
        F = torch.nn.functional
        if encoding not in ENCODINGS:
            raise ValueError(f"unsupported encoding '{encoding}': use one of {', '.join(ENCODINGS)}")
        cfg = self.cfg
        if frames.dim() == 3:
            frames = frames.unsqueeze(-1)
        n, h, w, _ = frames.shape
        mean, inv_std, luma = self._consts(frames.device)
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        if ENCODINGS[encoding][1] == 'uint16' and frames.dtype == torch.int16:
            x = torch.where(x < 0, x + 65536.0, x)  # int16 view of uint16 data: undo the wrap
        lb = fit(w, h, cfg)
        if (lb.new_height, lb.new_width) != (h, w):
            x = F.interpolate(x, size=(lb.new_height, lb.new_width), mode='bilinear', align_corners=False)
        rgb = ENCODINGS[encoding][2]
        if rgb is None:
            x = x.expand(-1, cfg.channels, -1, -1)
        else:
            if tuple(rgb) != tuple(range(x.shape[1])):
                x = x[:, list(rgb)]  # a gather: skipped when the channels are already R, G, B
            if cfg.channels == 1:
                x = (x * luma).sum(1, keepdim=True)
        x = (x * (1.0 / ENCODINGS[encoding][3]) - mean) * inv_std
        if lb.pad_x or lb.pad_y or (lb.new_width, lb.new_height) != (cfg.width, cfg.height):
            pad = (cfg.pad_value - mean) * inv_std
            out = pad.expand(n, cfg.channels, cfg.height, cfg.width).contiguous()
            out[:, :, lb.pad_y:lb.pad_y + lb.new_height, lb.pad_x:lb.pad_x + lb.new_width] = x
            x = out
        memory = torch.channels_last if channels_last else torch.contiguous_format
        return x.to(dtype or torch.float32).contiguous(memory_format=memory)

    def _consts(self, device: Any) -> tuple[Any, Any, Any]:
        import torch
        if device not in self._torch_consts:
            cfg = self.cfg
            mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            inv_std = 1.0 / torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=device).view(1, 3, 1, 1)
            self._torch_consts[device] = (mean, inv_std, luma)
        return self._torch_consts[device]


def topk_numpy(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax top-k per row, best first, in O(classes) per row (argpartition, then sort k).

    The same ids and scores as `postprocess.topk` except among exactly equal scores.
    """
    x = np.asarray(logits, dtype=np.float32)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    k = max(1, min(int(k), probs.shape[1]))
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind='stable')
    ids = np.take_along_axis(part, order, axis=1)
    return ids.astype(np.int64), np.take_along_axis(probs, ids, axis=1)


class EngineCompute:
    """`compute(x, stream, batch)` for BatchScheduler: preprocess the uploaded frames, run the engine.

    On a GPU runtime (torch) this enqueues on the lane's stream through `engine.infer_async`; on the CPU
    runtime it runs `engine.infer` on numpy. The engine's own input dtype (e.g. float16) is produced
    directly, so no extra cast pass runs.
    """

    def __init__(self, engine: Any, cfg: PreprocessConfig, gpu: bool, default_encoding: str = 'rgb8',
                 buckets: tuple[int, ...] = (), topk: int | Callable[[], int] = 0) -> None:
        self.engine = engine
        # Classification: softmax + top-k on the device, so k values per frame come back instead of all
        # class scores (and the host skips a sort per frame). Outputs 'topk_ids' and 'topk_scores' then
        # replace the logits. An int, or a callable read at every batch (a live top_k parameter).
        self.topk = topk
        outs = engine.outputs
        self.logits_name = outs[0].name if len(outs) == 1 and len(outs[0].shape) == 2 else ''
        # Batch sizes the engine is prepared for (e.g. one CUDA graph each): a batch is padded with zeros
        # up to the smallest bucket that holds it; rows past the real frames are ignored downstream.
        self.buckets = tuple(sorted(set(buckets)))
        self.padded_frames = 0
        self.pre = BatchPreprocessor(cfg)
        self.gpu = gpu
        self.default_encoding = default_encoding
        spec = engine.inputs[0]
        self.input_name = spec.name
        self.input_dtype = spec.dtype if spec.dtype in ('float16', 'float32', 'bfloat16') else 'float32'
        self.batches = 0

    def __call__(self, x: Any, stream: Any, batch: Any) -> dict[str, Any]:
        encoding = key_encoding(getattr(batch, 'key', None), self.default_encoding)
        self.batches += 1
        if self.gpu:
            import torch
            dtype = getattr(self.engine, 'dtype', None) or getattr(torch, self.input_dtype)
            channels_last = bool(getattr(self.engine, 'channels_last', False))
            with torch.inference_mode():
                inp = self.pre.torch(x, encoding, dtype=dtype, channels_last=channels_last)
                extra = self._padding(inp.shape[0])
                if extra:
                    inp = torch.cat([inp, inp.new_zeros((extra,) + tuple(inp.shape[1:]))])
                outs = self.engine.infer_async({self.input_name: inp}, stream=stream.native)
                k = self._k()
                if k and self.logits_name in outs:
                    probs = torch.softmax(outs.pop(self.logits_name).float(), dim=1)
                    scores, ids = probs.topk(min(k, probs.shape[1]), dim=1)
                    outs['topk_ids'], outs['topk_scores'] = ids.to(torch.int32), scores
                return outs
        inp = self.pre.numpy(np.asarray(x), encoding, self.input_dtype if self.input_dtype != 'bfloat16'
                             else 'float32')
        extra = self._padding(inp.shape[0])
        if extra:
            inp = np.concatenate([inp, np.zeros((extra,) + inp.shape[1:], inp.dtype)])
        outs = dict(self.engine.infer({self.input_name: inp}))
        k = self._k()
        if k and self.logits_name in outs:
            ids, scores = topk_numpy(outs.pop(self.logits_name), k)
            outs['topk_ids'], outs['topk_scores'] = ids.astype(np.int32), scores
        return outs

    def _k(self) -> int:
        return int(self.topk()) if callable(self.topk) else int(self.topk)

    def _padding(self, n: int) -> int:
        bucket = next((b for b in self.buckets if b >= n), n)
        self.padded_frames += bucket - n
        return bucket - n
