"""Frames without ROS: pixel encodings, layout checks, and frame sources for the image publisher.

Everything here is numpy (OpenCV for decoding files and resizing, imported only when a file source is
opened), so the same sources serve the `image_source` node, `isaac-perf run` and the benchmarks, and
their tests need no rclpy.

Frame sources give HxWxC numpy arrays (C = 1 for mono) of the configured size and encoding:

- `SyntheticSource`: a moving colour pattern, precomputed once; a frame is a view into it (no copy,
  no per-frame drawing), so the source costs nothing next to the transport it is meant to load.
- `FolderSource`, `VideoSource`, `McapSource`: playback of an image folder, a video file or the
  sensor_msgs/Image messages of an MCAP rosbag. Frames are decoded, resized and converted once, at
  open, into a memory-bounded cache (`cache_mb`), so decoding never limits the publishing rate; a
  recording longer than the budget plays its first frames only (`truncated` says so).
"""
from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# One error type for every image check in the package (preprocessing raises it too), re-exported here.
from isaac_perf.core.inference.preprocess import ImageFormatError

__all__ = ['ENCODINGS', 'FrameSource', 'FrameSourceError', 'ImageFormatError', 'PixelFormat', 'as_array',
           'check_layout', 'convert_encoding', 'open_source', 'pixel_format', 'write_mcap_images']


class FrameSourceError(RuntimeError):
    """A frame source cannot be opened or has no usable frames; the message says what to fix."""


@dataclass(frozen=True)
class PixelFormat:
    """What one sensor_msgs/Image encoding means in memory."""
    channels: int
    dtype: str  # numpy dtype name of one channel
    order: str  # channel order for colour conversion: 'rgb', 'bgr', 'rgba', 'bgra', 'mono', '' (other)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def pixel_bytes(self) -> int:
        return self.channels * self.itemsize


# The encodings of sensor_msgs/image_encodings.hpp that map onto a plain HxWxC array.
# Packed YUV and Bayer encodings are not here: convert them upstream (image_proc, isaac_ros_image_proc).
ENCODINGS: dict[str, PixelFormat] = {
    'rgb8': PixelFormat(3, 'uint8', 'rgb'),
    'bgr8': PixelFormat(3, 'uint8', 'bgr'),
    'rgba8': PixelFormat(4, 'uint8', 'rgba'),
    'bgra8': PixelFormat(4, 'uint8', 'bgra'),
    'mono8': PixelFormat(1, 'uint8', 'mono'),
    'rgb16': PixelFormat(3, 'uint16', 'rgb'),
    'bgr16': PixelFormat(3, 'uint16', 'bgr'),
    'rgba16': PixelFormat(4, 'uint16', 'rgba'),
    'bgra16': PixelFormat(4, 'uint16', 'bgra'),
    'mono16': PixelFormat(1, 'uint16', 'mono'),
    '8UC1': PixelFormat(1, 'uint8', 'mono'),
    '8UC3': PixelFormat(3, 'uint8', 'bgr'),  # OpenCV's default channel order
    '8UC4': PixelFormat(4, 'uint8', 'bgra'),
    '16UC1': PixelFormat(1, 'uint16', 'mono'),
    '32FC1': PixelFormat(1, 'float32', ''),
}

# What a frame source can produce (8-bit colour and mono: what cameras publish to detectors).
SOURCE_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
SOURCE_KINDS = ('synthetic', 'folder', 'video', 'mcap')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')


def pixel_format(encoding: str) -> PixelFormat:
    """The layout of `encoding`; raises ImageFormatError naming the supported ones."""
    fmt = ENCODINGS.get(encoding)
    if fmt is None:
        raise ImageFormatError(
            f'encoding {encoding!r} is not supported: publish one of {", ".join(ENCODINGS)} '
            '(convert packed YUV or Bayer images upstream, e.g. with image_proc)')
    return fmt


def check_layout(encoding: str, width: int, height: int, step: int, data_bytes: int) -> PixelFormat:
    """Validate an image's declared layout against its data; return its PixelFormat.

    Raises ImageFormatError for an unknown encoding, an empty image, a row stride (`step`) shorter
    than one row of pixels or not a whole number of channels, or data whose size is not step*height.
    """
    fmt = pixel_format(encoding)
    if width <= 0 or height <= 0 or data_bytes == 0:
        raise ImageFormatError(
            f'image is empty (width={width}, height={height}, {data_bytes} data bytes): '
            'the publisher sent no pixels')
    row_bytes = width * fmt.pixel_bytes
    if step < row_bytes:
        raise ImageFormatError(
            f'step={step} is less than width*channels*bytes = {width}*{fmt.channels}*{fmt.itemsize} '
            f'= {row_bytes} for {encoding}: the row stride is wrong')
    if step % fmt.itemsize:
        raise ImageFormatError(
            f'step={step} is not a multiple of the {fmt.itemsize}-byte channel size of {encoding}')
    if data_bytes != step * height:
        raise ImageFormatError(
            f'data has {data_bytes} bytes but step*height = {step}*{height} = {step * height}: '
            'the message is truncated or its step/height are wrong')
    return fmt


def as_array(buffer, encoding: str, width: int, height: int, step: int,
             is_bigendian: bool = False) -> np.ndarray:
    """View a raw image buffer as an HxWxC array without copying (padded rows stay a strided view).

    Multi-byte encodings whose byte order differs from this machine's are byte-swapped (a copy).
    Raises ImageFormatError when the layout does not match the buffer.
    """
    raw = np.frombuffer(buffer, dtype=np.uint8)
    fmt = check_layout(encoding, width, height, step, raw.size)
    row_bytes = width * fmt.pixel_bytes
    rows = raw.reshape(height, step)
    if step != row_bytes:
        rows = rows[:, :row_bytes]
    dtype = np.dtype(fmt.dtype)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder('>' if is_bigendian else '<')
    pixels = rows.view(dtype).reshape(height, width, fmt.channels)
    if dtype.itemsize > 1 and not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder('='))
    return pixels


def convert_encoding(frame: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert an 8-bit HxWxC frame between rgb8/bgr8/rgba8/bgra8/mono8 (returns `frame` if equal).

    Mono uses ITU-R BT.601 luma weights, as OpenCV's cvtColor does.
    """
    if src == dst:
        return frame
    src_fmt, dst_fmt = pixel_format(src), pixel_format(dst)
    if src_fmt.order in ('mono', ''):
        rgb = frame[..., :1] if dst_fmt.channels == 1 else np.repeat(frame[..., :1], 3, axis=2)
    elif src_fmt.order.startswith('bgr'):
        rgb = frame[..., [2, 1, 0]]
    else:
        rgb = frame[..., :3]
    if dst_fmt.order == 'mono':
        if rgb.shape[2] == 1:
            return np.ascontiguousarray(rgb)
        luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    out = rgb[..., [2, 1, 0]] if dst_fmt.order.startswith('bgr') else rgb[..., :3]
    if dst_fmt.channels == 4:
        alpha = np.full(out.shape[:2] + (1,), 255, dtype=np.uint8)
        out = np.concatenate([out, alpha], axis=2)
    return np.ascontiguousarray(out, dtype=np.uint8)


def resize_nearest(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize in numpy (exact and dependency-free; OpenCV does area/linear)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.intp), w - 1)
    return frame[rows][:, cols]


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is in requirements/base.txt
        raise FrameSourceError(
            'OpenCV is needed to read image folders and videos: pip install opencv-python-headless '
            '(or apt install python3-opencv)') from exc
    return cv2


def fit_frame(frame: np.ndarray, encoding: str, width: int, height: int, target_encoding: str) -> np.ndarray:
    """Resize (area filter when shrinking, linear when growing) and convert to the target encoding."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.dtype != np.uint8:
        # 16-bit / float images: scale to 8 bits by their own range, so any recording plays.
        lo, hi = float(np.min(frame)), float(np.max(frame))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        frame = np.clip((frame.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)
        encoding = {1: 'mono8', 3: 'rgb8' if encoding.startswith('rgb') else 'bgr8',
                    4: 'rgba8' if encoding.startswith('rgb') else 'bgra8'}[frame.shape[2]]
    if frame.shape[:2] != (height, width):
        cv2 = _cv2()
        shrink = frame.shape[0] * frame.shape[1] > width * height
        resized = cv2.resize(np.ascontiguousarray(frame), (width, height),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        frame = resized[..., None] if resized.ndim == 2 else resized
    return np.ascontiguousarray(convert_encoding(frame, encoding, target_encoding))


class FrameSource(ABC):
    """Frames of one size and encoding, addressed by index; indices past the end wrap around."""

    def __init__(self, width: int, height: int, encoding: str):
        if width <= 0 or height <= 0:
            raise FrameSourceError(f'frame size {width}x{height} is invalid: width and height must be > 0')
        if encoding not in SOURCE_ENCODINGS:
            raise FrameSourceError(
                f'encoding {encoding!r} cannot be produced by a frame source: use one of '
                f'{", ".join(SOURCE_ENCODINGS)}')
        self.width = width
        self.height = height
        self.encoding = encoding
        self.channels = ENCODINGS[encoding].channels

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @abstractmethod
    def __len__(self) -> int:
        """Number of distinct frames before the sequence repeats."""

    @abstractmethod
    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (wrapping), HxWxC uint8; may be a read-only or strided view: copy to keep it."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release what the source holds."""


class SyntheticSource(FrameSource):
    """A diagonal colour pattern that moves `speed_px` pixels right per frame, plus a bouncing bar.

    The pattern repeats every `period_px` columns, so a canvas `width + period_px` wide holds every
    frame: frame i is the window starting at column (i * speed_px) % period_px. `seed` tints the
    pattern so several cameras publish visibly different frames.
    """

    def __init__(self, width: int, height: int, encoding: str = 'rgb8', seed: int = 0,
                 period_px: int = 64, speed_px: int = 4):
        super().__init__(width, height, encoding)
        if period_px <= 0 or speed_px <= 0:
            raise FrameSourceError('period_px and speed_px must be > 0')
        self.period_px = period_px
        self.speed_px = speed_px
        rng = np.random.default_rng(seed)
        tint = rng.uniform(0.3, 1.0, size=3)
        y = np.arange(height, dtype=np.float32)[:, None]
        x = np.arange(width + period_px, dtype=np.float32)[None, :]
        phase = 2 * np.pi * (x + 0.5 * y) / period_px
        rgb = np.empty((height, width + period_px, 3), dtype=np.float32)
        rgb[..., 0] = (0.5 + 0.5 * np.sin(phase)) * tint[0]
        rgb[..., 1] = (0.5 + 0.5 * np.sin(phase + 2.1)) * tint[1]
        rgb[..., 2] = (y / max(height - 1, 1)) * tint[2]
        canvas = (rgb * 255).astype(np.uint8)
        canvas = convert_encoding(canvas, 'rgb8', encoding)
        canvas.setflags(write=False)
        self._canvas = canvas

    def __len__(self) -> int:
        return self.period_px // math.gcd(self.period_px, self.speed_px)

    def frame(self, index: int) -> np.ndarray:
        offset = (index * self.speed_px) % self.period_px
        return self._canvas[:, offset:offset + self.width]


class CachedSource(FrameSource):
    """A source whose frames were decoded once into memory (bounded by `cache_mb`)."""

    def __init__(self, width: int, height: int, encoding: str, frames: Iterator[tuple[np.ndarray, str]],
                 cache_mb: float, description: str, log: Callable[[str], None] | None = None):
        super().__init__(width, height, encoding)
        frame_bytes = width * height * self.channels
        limit = max(1, int(cache_mb * 1024 * 1024 // frame_bytes))
        self.truncated = False
        self.skipped = 0
        cache: list[np.ndarray] = []
        for item in frames:
            if item is None:  # an unreadable element, already logged by the reader
                self.skipped += 1
                continue
            if len(cache) >= limit:
                self.truncated = True
                break
            raw, raw_encoding = item
            frame = fit_frame(raw, raw_encoding, width, height, encoding)
            frame.setflags(write=False)
            cache.append(frame)
        if not cache:
            raise FrameSourceError(f'{description} has no readable frames')
        if self.truncated and log is not None:
            log(f'{description}: only the first {len(cache)} frames fit in cache_mb={cache_mb:g}; '
                'playback loops over those (raise cache_mb to play more)')
        self._frames = cache

    def __len__(self) -> int:
        return len(self._frames)

    def frame(self, index: int) -> np.ndarray:
        return self._frames[index % len(self._frames)]

    def close(self) -> None:
        self._frames = []


def _image_files(path: Path) -> list[Path]:
    if not path.is_dir():
        raise FrameSourceError(
            f'image folder {str(path)!r} does not exist or is not a folder: set source_path')
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FrameSourceError(
            f'image folder {str(path)!r} holds no images ({", ".join(IMAGE_SUFFIXES)})')
    return files


class FolderSource(CachedSource):
    """Every image file of a folder, in name order. Unreadable files are skipped and counted."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, encoding: str = 'rgb8',
                 cache_mb: float = 512.0, log: Callable[[str], None] | None = None):
        files = _image_files(Path(path))
        cv2 = _cv2()

        def read() -> Iterator[tuple[np.ndarray, str] | None]:
            for file in files:
                image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
                if image is None:
                    if log is not None:
                        log(f'cannot decode {file}: skipped')
                    yield None
                    continue
                channels = 1 if image.ndim == 2 else image.shape[2]
                yield image, {1: 'mono8', 3: 'bgr8', 4: 'bgra8'}[channels]

        super().__init__(width, height, encoding, read(), cache_mb, f'image folder {str(path)!r}', log)


class VideoSource(CachedSource):
    """The frames of a video file (any container/codec the installed OpenCV/FFmpeg decodes)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, encoding: str = 'rgb8',
                 cache_mb: float = 512.0, log: Callable[[str], None] | None = None):
        if not Path(path).is_file():
            raise FrameSourceError(f'video file {str(path)!r} does not exist: set source_path')
        cv2 = _cv2()
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise FrameSourceError(f'cannot open video {str(path)!r}: not a video, or a codec FFmpeg lacks')

        def read() -> Iterator[tuple[np.ndarray, str]]:
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield (image, 'bgr8') if image.ndim == 3 else (image, 'mono8')

        try:
            super().__init__(width, height, encoding, read(), cache_mb, f'video {str(path)!r}', log)
        finally:
            capture.release()


IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/Image')


class McapSource(CachedSource):
    """The sensor_msgs/Image messages of one topic of an MCAP rosbag (`ros2 bag record -s mcap`).

    `topic` '' takes the first Image topic in the file. Messages with a bad layout are skipped and
    counted, like unreadable files in a folder.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, encoding: str = 'rgb8',
                 topic: str = '', cache_mb: float = 512.0, log: Callable[[str], None] | None = None):
        if not Path(path).is_file():
            raise FrameSourceError(f'MCAP file {str(path)!r} does not exist: set source_path')
        from mcap.exceptions import McapError
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        with open(path, 'rb') as stream:
            try:
                reader = make_reader(stream, decoder_factories=[DecoderFactory()])
                summary = reader.get_summary()
            except (McapError, ValueError, OSError) as exc:
                raise FrameSourceError(f'{str(path)!r} is not a readable MCAP file: {exc}') from exc
            channels = summary.channels.values() if summary is not None else []
            schemas = summary.schemas if summary is not None else {}
            image_topics = [c.topic for c in channels
                            if c.schema_id in schemas and schemas[c.schema_id].name in IMAGE_TYPES]
            if not image_topics:
                raise FrameSourceError(f'MCAP file {str(path)!r} has no sensor_msgs/Image topic')
            if not topic:
                topic = image_topics[0]
            elif topic not in image_topics:
                raise FrameSourceError(
                    f'MCAP file {str(path)!r} has no Image topic {topic!r}; '
                    f'it has: {", ".join(image_topics)}')
            self.topic = topic

            def read() -> Iterator[tuple[np.ndarray, str] | None]:
                for _schema, _channel, _message, msg in reader.iter_decoded_messages(topics=[topic]):
                    try:
                        pixels = as_array(msg.data, msg.encoding, msg.width, msg.height, msg.step,
                                          bool(msg.is_bigendian))
                    except ImageFormatError as exc:
                        if log is not None:
                            log(f'{topic}: message skipped: {exc}')
                        yield None
                        continue
                    yield pixels, msg.encoding

            super().__init__(width, height, encoding, read(), cache_mb,
                             f'MCAP topic {topic!r} of {str(path)!r}', log)


def open_source(kind: str, width: int, height: int, encoding: str = 'rgb8', path: str = '',
                seed: int = 0, topic: str = '', cache_mb: float = 512.0,
                log: Callable[[str], None] | None = None) -> FrameSource:
    """Open a source by kind ('synthetic', 'folder', 'video', 'mcap'); raises FrameSourceError."""
    if kind == 'synthetic':
        return SyntheticSource(width, height, encoding, seed=seed)
    if kind not in SOURCE_KINDS:
        raise FrameSourceError(f'source {kind!r} is unknown: use one of {", ".join(SOURCE_KINDS)}')
    if not path:
        raise FrameSourceError(f'source {kind!r} needs source_path (the {kind} to play)')
    if kind == 'folder':
        return FolderSource(path, width, height, encoding, cache_mb=cache_mb, log=log)
    if kind == 'video':
        return VideoSource(path, width, height, encoding, cache_mb=cache_mb, log=log)
    return McapSource(path, width, height, encoding, topic=topic, cache_mb=cache_mb, log=log)


# The ROS 2 message definition of sensor_msgs/Image with its dependencies, in the concatenated form
# MCAP's ros2msg schema encoding uses; lets `write_mcap_images` make bags without a ROS install.
IMAGE_MSGDEF = """std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""


def write_mcap_images(path: str | os.PathLike, frames: list[np.ndarray], encoding: str = 'rgb8',
                      topic: str = '/camera_0/image_raw', start_ns: int = 1_700_000_000_000_000_000,
                      period_ns: int = 33_333_333, frame_id: str = 'camera_0') -> None:
    """Write HxWxC frames as sensor_msgs/Image messages to an MCAP file (for tests and demos)."""
    from mcap_ros2.writer import Writer

    with open(path, 'wb') as stream:
        writer = Writer(stream)
        schema = writer.register_msgdef('sensor_msgs/msg/Image', IMAGE_MSGDEF)
        for i, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            stamp = start_ns + i * period_ns
            height, width = frame.shape[:2]
            msg = {
                'header': {'stamp': {'sec': stamp // 1_000_000_000, 'nanosec': stamp % 1_000_000_000},
                           'frame_id': frame_id},
                'height': height, 'width': width, 'encoding': encoding, 'is_bigendian': 0,
                'step': frame.strides[0], 'data': frame.tobytes(),
            }
            writer.write_message(topic, schema, msg, log_time=stamp, publish_time=stamp, sequence=i)
        writer.finish()
