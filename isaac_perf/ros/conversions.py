"""sensor_msgs/Image <-> numpy, header stamp helpers, and the result / stage-time messages.

Reading never copies: `image_to_numpy` views the message's own buffer (rclpy stores uint8[] as an
array.array), rows padded past width*channels stay a strided view. Writing copies once: the pixels go
straight into the array.array the message keeps (`fill_image` reuses an existing message's buffer, so
a publisher that sends the same size every time allocates nothing per frame).

Results are std_msgs/Float32MultiArray with a labelled row layout (`results_message`): classification
rows [class_id, score] (dim labels 'classes', 'class_id,score'); detection rows
[x1, y1, x2, y2, score, class_id] ('detections', 'x1,y1,x2,y2,score,class_id'). Stage times are
Float64MultiArray in `isaac_perf.core.telemetry.stage_times`' labelled format (`stage_message`).

Layout problems raise `ImageFormatError` (from isaac_perf.core.inference.frames) with a message that says what
was wrong, so a node can log it, count the frame as dropped and carry on.
"""
from __future__ import annotations

import array
import sys
from collections.abc import Mapping

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray, Header, MultiArrayDimension

from isaac_perf.core.inference.frames import ENCODINGS, ImageFormatError, as_array, check_layout, pixel_format
from isaac_perf.core.inference.node_params import check_model_frame
from isaac_perf.core.inference.runner import FrameResult
from isaac_perf.core.telemetry import stage_times

__all__ = ['ENCODINGS', 'ImageFormatError', 'age_ms', 'check_image', 'check_model_image', 'fill_image',
           'header_with', 'image_to_numpy', 'ns_to_stamp', 'numpy_to_image', 'results_message', 'set_layout',
           'stage_message', 'stamp_to_ns']

CLASS_LABELS = ('classes', 'class_id,score')
DETECTION_LABELS = ('detections', 'x1,y1,x2,y2,score,class_id')

NS_PER_S = 1_000_000_000


def check_image(msg: Image) -> None:
    """Raise ImageFormatError when `msg`'s encoding, step or data size cannot describe its pixels."""
    check_layout(msg.encoding, msg.width, msg.height, msg.step, len(msg.data))


def check_model_image(msg: Image) -> None:
    """`check_image`, and the encoding must be one the model's preprocessing takes (no pixel is read)."""
    check_model_frame(msg.encoding, msg.width, msg.height, msg.step, len(msg.data))


def image_to_numpy(msg: Image) -> np.ndarray:
    """The pixels of `msg` as an HxWxC array that shares the message's memory (C = 1 for mono).

    Raises ImageFormatError for an unsupported encoding, an empty image, a step shorter than a row,
    or data whose size is not step*height.
    """
    return as_array(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))


def _validate_pixels(pixels: np.ndarray, encoding: str) -> np.ndarray:
    fmt = pixel_format(encoding)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] != fmt.channels:
        raise ImageFormatError(
            f'array of shape {pixels.shape} cannot be a {encoding} image: '
            f'expected (height, width, {fmt.channels})')
    if pixels.dtype != np.dtype(fmt.dtype):
        raise ImageFormatError(f'array of dtype {pixels.dtype} cannot be a {encoding} image: '
                               f'expected {fmt.dtype}')
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageFormatError(f'array of shape {pixels.shape} is empty')
    return pixels


def set_layout(msg: Image, pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Set `msg`'s height, width, encoding, step (dense rows) and is_bigendian for `pixels`; return them
    as HxWxC. Raises ImageFormatError when the array's shape or dtype does not fit `encoding`."""
    pixels = _validate_pixels(pixels, encoding)
    height, width, channels = pixels.shape
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 1 if (pixels.itemsize > 1 and sys.byteorder == 'big') else 0
    msg.step = width * channels * pixels.itemsize
    return pixels


def fill_image(msg: Image, pixels: np.ndarray, encoding: str) -> Image:
    """Write `pixels` (HxWxC or HxW) into `msg` with one copy, reusing its buffer when the size matches.

    Sets the layout fields (`set_layout`); the header is left alone. Raises ImageFormatError when the
    array's shape or dtype does not fit `encoding`.
    """
    pixels = set_layout(msg, pixels, encoding)
    nbytes = pixels.nbytes
    data = msg.data
    if isinstance(data, array.array) and len(data) == nbytes and data.typecode == 'B':
        # Same size as last time: overwrite in place, no allocation. Safe because rclpy serializes
        # the message inside publish(), before the caller can fill it again.
        np.copyto(np.frombuffer(data, dtype=pixels.dtype).reshape(pixels.shape), pixels)
    elif pixels.flags['C_CONTIGUOUS']:
        data = array.array('B')
        data.frombytes(pixels.reshape(-1).view(np.uint8))  # one memcpy from the array's memory
    else:
        # A strided view (e.g. a window into a larger canvas): one pass into a fresh buffer.
        data = array.array('B', bytes(nbytes))
        np.copyto(np.frombuffer(data, dtype=pixels.dtype).reshape(pixels.shape), pixels)
    if msg.data is not data:
        msg.data = data  # the generated setter takes an array.array('B') as is, without a copy
    return msg


def numpy_to_image(pixels: np.ndarray, encoding: str, stamp_ns: int | None = None,
                   frame_id: str = '') -> Image:
    """A new Image holding a copy of `pixels` (HxWxC or HxW), stamped `stamp_ns` when given."""
    msg = Image()
    if stamp_ns is not None:
        msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    return fill_image(msg, pixels, encoding)


def stamp_to_ns(stamp: Time) -> int:
    """A builtin_interfaces/Time (or a Header's stamp) as integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds as a builtin_interfaces/Time (negative times are clamped to 0)."""
    sec, nanosec = divmod(max(int(ns), 0), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def header_with(stamp_ns: int, frame_id: str = '') -> Header:
    """A std_msgs/Header for `stamp_ns` and `frame_id`."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def age_ms(stamp: Time, now_ns: int) -> float:
    """Milliseconds from `stamp` to `now_ns` (the latency of a frame stamped at capture)."""
    return (now_ns - stamp_to_ns(stamp)) / 1e6


def results_message(result: FrameResult) -> Float32MultiArray:
    """One frame's result rows as a Float32MultiArray with the labelled row layout (module docstring)."""
    rows = result.rows
    labels = CLASS_LABELS if result.task == 'classification' else DETECTION_LABELS
    cols = rows.shape[1]
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=labels[0], size=rows.shape[0], stride=rows.shape[0] * cols),
                      MultiArrayDimension(label=labels[1], size=cols, stride=cols)]
    msg.data = array.array('f', np.ascontiguousarray(rows, dtype=np.float32).tobytes())  # no per-item checks
    return msg


def stage_message(report: stage_times.StageReport, extra: Mapping[str, float] | None = None
                  ) -> Float64MultiArray:
    """A stage-time report; `extra` fields (name -> value) are appended after the standard ones."""
    labels, values = stage_times.encode(report)
    if extra:
        labels = list(labels) + list(extra)
        values = list(values) + [float(v) for v in extra.values()]
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=1, stride=1) for label in labels]
    msg.data = values
    return msg
