"""Image payloads -> normalized NCHW batches, in numpy (CPU) and in torch (on the GPU).

The steps, identical in both paths so their outputs agree to float rounding:

1. ``decode_image`` turns a ROS-style payload (data, width, height, encoding, step, is_bigendian) into an
   H x W x C view of the buffer (no copy when rows are not padded), after validating it.
2. The image is resized with bilinear interpolation (align_corners=False, no antialias: exactly
   ``torch.nn.functional.interpolate(mode='bilinear')``), either stretched to the model's size or
   letterboxed (aspect kept, centred, padded with ``pad_value``).
3. Channels become RGB (or mono), values are scaled to [0, 1] by the encoding's full scale
   (255, or 65535 for mono16) and normalized with (x - mean) / std.

Resizing before normalizing means the per-pixel arithmetic runs at the model's resolution, not the
camera's. On the GPU the uint8 frames of a batch are staged in one pinned buffer and uploaded with a single
copy; everything after that runs on the device.

Validation errors (unknown encoding, wrong step or size, empty data) raise ImageFormatError, a ValueError,
with a message naming the field and the expected value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class ImageFormatError(ValueError):
    """An image payload that cannot be decoded; the message names the wrong field and the expected value."""


# encoding -> (channels, numpy dtype, index of R,G,B in the source channels (None for mono), full scale)
ENCODINGS: dict[str, tuple[int, str, tuple[int, int, int] | None, float]] = {
    'rgb8': (3, 'uint8', (0, 1, 2), 255.0),
    'bgr8': (3, 'uint8', (2, 1, 0), 255.0),
    'rgba8': (4, 'uint8', (0, 1, 2), 255.0),
    'bgra8': (4, 'uint8', (2, 1, 0), 255.0),
    'mono8': (1, 'uint8', None, 255.0),
    'mono16': (1, 'uint16', None, 65535.0),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """What the model wants: its input size, how to fit the image in, and the normalization."""
    width: int = 224
    height: int = 224
    resize: str = 'letterbox'  # 'letterbox' (keep aspect, pad) or 'stretch'
    mean: tuple[float, ...] = IMAGENET_MEAN  # in [0, 1] units, per output channel
    std: tuple[float, ...] = IMAGENET_STD
    pad_value: float = 114.0 / 255.0  # letterbox border, in [0, 1] units before normalization
    channels: int = 3  # 3: RGB (mono is replicated), 1: mono (colour is converted with BT.601 weights)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f'model input size {self.width}x{self.height}: both must be >= 1')
        if self.resize not in ('letterbox', 'stretch'):
            raise ValueError(f"resize='{self.resize}': use 'letterbox' or 'stretch'")
        if self.channels not in (1, 3):
            raise ValueError(f'channels={self.channels}: use 3 (RGB) or 1 (mono)')
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f'mean/std need {self.channels} values each, got {self.mean} / {self.std}')
        if any(s <= 0 for s in self.std):
            raise ValueError(f'std values must be > 0, got {self.std}')

    @classmethod
    def for_detector(cls, width: int = 320, height: int = 320) -> PreprocessConfig:
        """Pixels scaled to [0, 1] with no mean/std, letterboxed: what the built-in detector expects."""
        return cls(width=width, height=height, resize='letterbox', mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass(frozen=True)
class Letterbox:
    """How one source image was placed in the model input: maps boxes back to source pixels."""
    src_width: int
    src_height: int
    new_width: int  # the resized image's size inside the model input
    new_height: int
    pad_x: int
    pad_y: int

    @property
    def scale_x(self) -> float:
        return self.new_width / self.src_width

    @property
    def scale_y(self) -> float:
        return self.new_height / self.src_height

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """[M, 4] (x1, y1, x2, y2) in model-input pixels -> source-image pixels, clipped to the image."""
        b = np.asarray(boxes, dtype=np.float32).copy()
        b[..., [0, 2]] = (b[..., [0, 2]] - self.pad_x) / self.scale_x
        b[..., [1, 3]] = (b[..., [1, 3]] - self.pad_y) / self.scale_y
        b[..., [0, 2]] = b[..., [0, 2]].clip(0, self.src_width)
        b[..., [1, 3]] = b[..., [1, 3]].clip(0, self.src_height)
        return b


def fit(src_width: int, src_height: int, cfg: PreprocessConfig) -> Letterbox:
    """Where a src_width x src_height image goes in the model input for `cfg`."""
    if cfg.resize == 'stretch':
        return Letterbox(src_width, src_height, cfg.width, cfg.height, 0, 0)
    s = min(cfg.width / src_width, cfg.height / src_height)
    nw = min(cfg.width, max(1, int(round(src_width * s))))
    nh = min(cfg.height, max(1, int(round(src_height * s))))
    return Letterbox(src_width, src_height, nw, nh, (cfg.width - nw) // 2, (cfg.height - nh) // 2)


def decode_image(data: Any, width: int, height: int, encoding: str, step: int,
                 is_bigendian: bool = False) -> np.ndarray:
    """Validate a raw payload and view it as an H x W x C array (uint8, or uint16 for mono16).

    `data` is anything with the buffer protocol (bytes, bytearray, array.array as rclpy gives it,
    memoryview, numpy). Rows padded beyond width * pixel size (step > that) are handled by striding.
    """
    if encoding not in ENCODINGS:
        raise ImageFormatError(f"unsupported encoding '{encoding}': use one of {', '.join(ENCODINGS)}")
    ch, dtype, _, _ = ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    if width <= 0 or height <= 0:
        raise ImageFormatError(f'image size {width}x{height}: width and height must be > 0')
    row = width * ch * itemsize
    if step < row:
        raise ImageFormatError(f'step {step} is smaller than width x bytes per pixel = '
                               f"{width} x {ch * itemsize} = {row} for '{encoding}': "
                               f'set step to at least {row}')
    if step % itemsize:
        raise ImageFormatError(f"step {step} is not a multiple of {itemsize} bytes ('{encoding}')")
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as e:
        raise ImageFormatError(f'image data is not a byte buffer ({type(data).__name__}): {e}') from e
    if buf.size == 0:
        raise ImageFormatError(f'image data is empty: expected height x step = {height} x {step} = '
                               f'{height * step} bytes')
    if buf.size != height * step:
        raise ImageFormatError(f'image data has {buf.size} bytes but height x step = {height} x {step} = '
                               f'{height * step}: the payload does not match its header')
    rows = buf.reshape(height, step)[:, :row]
    if itemsize == 1:
        return rows.reshape(height, width, ch)
    want = '>u2' if is_bigendian else '<u2'
    arr = np.ascontiguousarray(rows).view(want).reshape(height, width, ch)
    return arr.astype(np.uint16, copy=False)


def image_to_array(img: Any) -> np.ndarray:
    """decode_image() for any object with sensor_msgs/Image's fields (the message itself works)."""
    return decode_image(img.data, int(img.width), int(img.height), str(img.encoding), int(img.step),
                        bool(getattr(img, 'is_bigendian', False)))


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # torch's bilinear, align_corners=False, size given: src = (dst + 0.5) * in/out - 0.5, clamped at 0.
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """H x W x C -> out_h x out_w x C float32, bilinear, the same arithmetic as torch's interpolate."""
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.astype(np.float32)
    y0, y1, wy = _axis_weights(h, out_h)
    x0, x1, wx = _axis_weights(w, out_w)
    # Rows first (gathering only the rows needed), then columns: work scales with the output size.
    top = img[y0].astype(np.float32)
    bot = img[y1].astype(np.float32)
    rows = top + (bot - top) * wy[:, None, None]
    left = rows[:, x0]
    right = rows[:, x1]
    return left + (right - left) * wx[None, :, None]


def _to_channels(resized: np.ndarray, encoding: str, channels: int) -> np.ndarray:
    """Pick/convert channels: h x w x Csrc -> h x w x channels (RGB order, or luma)."""
    _, _, rgb, _ = ENCODINGS[encoding]
    if rgb is None:
        return np.repeat(resized, channels, axis=2) if channels == 3 else resized
    out = resized[:, :, list(rgb)]
    if channels == 1:
        return (out @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    return out


def preprocess_numpy(images: Sequence[tuple[np.ndarray, str]], cfg: PreprocessConfig,
                     out: np.ndarray | None = None) -> tuple[np.ndarray, list[Letterbox]]:
    """A batch of (H x W x C array, encoding) -> ([N, C, H, W] float32, placement of each image).

    `out` lets a caller reuse one preallocated batch buffer (its shape must be [>=N, C, H, W]).
    """
    if not images:
        raise ValueError('preprocess_numpy needs at least one image')
    n = len(images)
    shape = (n, cfg.channels, cfg.height, cfg.width)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape[0] < n or out.shape[1:] != shape[1:] or out.dtype != np.float32:
        raise ValueError(f'out buffer {out.shape} {out.dtype} cannot hold a float32 batch {shape}')
    mean = np.asarray(cfg.mean, np.float32)
    inv_std = 1.0 / np.asarray(cfg.std, np.float32)
    pad = (cfg.pad_value - mean) * inv_std
    boxes = []
    for i, (arr, encoding) in enumerate(images):
        if encoding not in ENCODINGS:
            raise ImageFormatError(f"unsupported encoding '{encoding}': use one of {', '.join(ENCODINGS)}")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        lb = fit(arr.shape[1], arr.shape[0], cfg)
        full = ENCODINGS[encoding][3]
        x = _to_channels(resize_bilinear(arr, lb.new_height, lb.new_width), encoding, cfg.channels)
        x = (x * (1.0 / full) - mean) * inv_std  # h x w x C
        dst = out[i]
        if lb.pad_x or lb.pad_y or lb.new_width != cfg.width or lb.new_height != cfg.height:
            dst[:] = pad[:, None, None]
        dst[:, lb.pad_y:lb.pad_y + lb.new_height, lb.pad_x:lb.pad_x + lb.new_width] = x.transpose(2, 0, 1)
        boxes.append(lb)
    return out[:n], boxes


class TorchPreprocessor:
    """The same preprocessing on a torch device: one upload of the uint8 frames, the rest on the device.

    ``dtype`` is the model's input precision (float16 for an FP16 engine); arithmetic runs in float32
    and is cast once at the end, so FP16 only rounds the result. ``channels_last`` returns an NHWC-strided
    tensor for channels-last engines (no later copy).
    """

    def __init__(self, cfg: PreprocessConfig, device: str = 'cuda', dtype: Any = None,
                 channels_last: bool = False) -> None:
        import torch
        self.torch = torch
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.channels_last = channels_last
        self._mean = torch.tensor(cfg.mean, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(cfg.std, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=self.device)
        self._luma = luma.view(3, 1, 1)
        self._pin = self.device.type == 'cuda'
        self._staging = None  # pinned host buffer, grown on demand
        self._staging_ready = None  # event: the last upload from the staging buffer has finished

    def _stage(self, arrays: list[np.ndarray]):
        """Copy all frames into one (pinned) host buffer and upload it with a single copy."""
        torch = self.torch
        # Each frame starts on a 16-byte boundary so mono16 frames can be viewed as int16 on the device.
        offsets = []
        total = 0
        for a in arrays:
            offsets.append(total)
            total += (a.nbytes + 15) // 16 * 16
        if self._pin:
            if self._staging_ready is not None:
                self._staging_ready.synchronize()  # never overwrite bytes a previous upload still reads
            if self._staging is None or self._staging.numel() < total:
                self._staging = torch.empty(max(total, 1 << 20), dtype=torch.uint8, pin_memory=True)
            host = self._staging[:total].numpy()
        else:
            host = np.empty(total, np.uint8)
        for off, a in zip(offsets, arrays, strict=True):
            host[off:off + a.nbytes] = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
        dev = torch.from_numpy(host).to(self.device, non_blocking=self._pin)
        if self._pin:
            self._staging_ready = torch.cuda.Event()
            self._staging_ready.record()
        return dev, offsets

    def __call__(self, images: Sequence[tuple[np.ndarray, str]], stream: Any = None):
        """A batch of (H x W x C array, encoding) -> ([N, C, H, W] tensor on the device, placements)."""
        torch = self.torch
        if not images:
            raise ValueError('TorchPreprocessor needs at least one image')
        for _, enc in images:
            if enc not in ENCODINGS:
                raise ImageFormatError(f"unsupported encoding '{enc}': use one of {', '.join(ENCODINGS)}")
        if stream is not None:
            with torch.cuda.stream(stream):
                return self._run(images)
        return self._run(images)

    def _run(self, images):
        torch = self.torch
        F = torch.nn.functional
        cfg = self.cfg
        arrays = [a if a.ndim == 3 else a[:, :, None] for a, _ in images]
        # Upload as bytes; mono16 frames are reinterpreted as int16 on the device (values >= 32768
        # wrap negative and are fixed below), since torch has limited uint16 support.
        raw, offsets = self._stage(arrays)
        n = len(images)
        pad = (cfg.pad_value - self._mean) * self._inv_std
        out = torch.empty((n, cfg.channels, cfg.height, cfg.width), dtype=torch.float32, device=self.device)
        placements = []
        for i, (arr, (_, enc)) in enumerate(zip(arrays, images, strict=True)):
            h, w, c = arr.shape
            chunk = raw[offsets[i]:offsets[i] + arr.nbytes]
            if ENCODINGS[enc][1] == 'uint16':
                x = chunk.view(torch.int16).to(torch.float32)
                x = torch.where(x < 0, x + 65536.0, x)
            else:
                x = chunk.to(torch.float32)
            x = x.view(1, h, w, c).permute(0, 3, 1, 2)  # 1 x C x H x W
            lb = fit(w, h, cfg)
            if (lb.new_height, lb.new_width) != (h, w):
                x = F.interpolate(x, size=(lb.new_height, lb.new_width), mode='bilinear', align_corners=False)
            x = x[0]
            rgb = ENCODINGS[enc][2]
            if rgb is None:
                x = x.expand(cfg.channels, -1, -1)
            else:
                x = x[list(rgb)]
                if cfg.channels == 1:
                    x = (x * self._luma).sum(0, keepdim=True)
            x = (x * (1.0 / ENCODINGS[enc][3]) - self._mean) * self._inv_std
            if lb.pad_x or lb.pad_y or lb.new_width != cfg.width or lb.new_height != cfg.height:
                out[i] = pad
            out[i, :, lb.pad_y:lb.pad_y + lb.new_height, lb.pad_x:lb.pad_x + lb.new_width] = x
            placements.append(lb)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out.to(self.dtype), placements
