"""The size of the frame a serialized descriptor message describes, read without deserializing it.

A watcher of `<topic>/zero_copy` (perf_monitor, `isaac-perf top`) sees descriptors of a few hundred bytes;
the bandwidth that matters is the frames'. The descriptor is a sensor_msgs/Image whose height and step
describe the frame, so its size is height x step, read from the CDR bytes at known places (XCDR1/XCDR2
plain encodings, either byte order): Header (stamp, frame_id), height, width, encoding, is_bigendian, step.
"""
from __future__ import annotations

import struct

_LE = (0x01, 0x07)
_BE = (0x00, 0x06)


def _align(pos: int, n: int) -> int:
    return pos + (-pos) % n  # CDR aligns relative to the start of the payload, after the 4-byte header


def described_frame_bytes(data: bytes) -> int | None:
    """height * step of a serialized sensor_msgs/Image, or None when `data` is not one."""
    if len(data) < 4 or data[0] != 0 or data[1] not in _LE + _BE:
        return None
    order = '<' if data[1] in _LE else '>'
    u32 = struct.Struct(order + 'I').unpack_from
    body = memoryview(data)[4:]
    try:
        pos = 8  # stamp: sec, nanosec
        (n,) = u32(body, pos)
        pos = _align(pos + 4 + n, 4)  # frame_id
        height, _width = u32(body, pos)[0], u32(body, pos + 4)[0]
        (n,) = u32(body, pos + 8)
        pos = pos + 12 + n + 1  # encoding, then is_bigendian
        (step,) = u32(body, _align(pos, 4))
    except struct.error:
        return None
    return height * step
