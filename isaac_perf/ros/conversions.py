"""sensor_msgs/Image <-> numpy, and header stamp helpers.

Reading never copies: `image_to_numpy` views the message's own buffer (rclpy stores uint8[] as an
array.array), rows padded past width*channels stay a strided view. Writing copies once: the pixels go
straight into the array.array the message keeps (`fill_image` reuses an existing message's buffer, so
a publisher that sends the same size every time allocates nothing per frame).

Layout problems raise `ImageFormatError` (from isaac_perf.core.inference.frames) with a message that says what
was wrong, so a node can log it, count the frame as dropped and carry on.
"""
from __future__ import annotations

import array
import sys

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from isaac_perf.core.inference.frames import ENCODINGS, ImageFormatError, as_array, check_layout, pixel_format

__all__ = ['ENCODINGS', 'ImageFormatError', 'age_ms', 'check_image', 'fill_image', 'header_with',
           'image_to_numpy', 'ns_to_stamp', 'numpy_to_image', 'stamp_to_ns']

NS_PER_S = 1_000_000_000


def check_image(msg: Image) -> None:
    """Raise ImageFormatError when `msg`'s encoding, step or data size cannot describe its pixels."""
    check_layout(msg.encoding, msg.width, msg.height, msg.step, len(msg.data))


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


def fill_image(msg: Image, pixels: np.ndarray, encoding: str) -> Image:
    """Write `pixels` (HxWxC or HxW) into `msg` with one copy, reusing its buffer when the size matches.

    Sets height, width, encoding, step (dense rows) and is_bigendian (this machine's order); the header
    is left alone. Raises ImageFormatError when the array's shape or dtype does not fit `encoding`.
    """
    pixels = _validate_pixels(pixels, encoding)
    height, width, channels = pixels.shape
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
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 1 if (pixels.itemsize > 1 and sys.byteorder == 'big') else 0
    msg.step = width * channels * pixels.itemsize
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
