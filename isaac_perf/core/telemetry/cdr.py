"""Fields read straight from serialized (CDR) messages, so a watcher never deserializes what it measures.

Plain CDR (XCDR1) and plain CDR2 (XCDR2, final types) put no parameter headers before the first field;
after the 4-byte encapsulation header, fields sit at known, 4-aligned places:

- `header_stamp_ns`: the stamp of any message whose first field is a std_msgs/Header;
- `described_frame_bytes`: height x step of a sensor_msgs/Image: Header (stamp, frame_id), height, width,
  encoding, is_bigendian, step. A zero-copy descriptor (core.transport) is such an Image whose data is the
  descriptor, so a watcher of `<topic>/zero_copy` reports the described frame's size, not its own few
  hundred bytes.
"""
from __future__ import annotations

import struct

_PLAIN_BE = (0x00, 0x06)
_PLAIN_LE = (0x01, 0x07)
_STAMP = {'<': struct.Struct('<iI').unpack_from, '>': struct.Struct('>iI').unpack_from}
_U32 = {'<': struct.Struct('<I').unpack_from, '>': struct.Struct('>I').unpack_from}


def _order(data: bytes) -> str | None:
    """'<' or '>' for a plain CDR payload, None for anything else."""
    if len(data) < 4 or data[0] != 0:
        return None
    return '<' if data[1] in _PLAIN_LE else '>' if data[1] in _PLAIN_BE else None


def header_stamp_ns(data: bytes) -> int | None:
    """The header stamp (ns) of a serialized message whose first field is std_msgs/Header, else None."""
    order = _order(data)
    if order is None or len(data) < 12:
        return None
    sec, nanosec = _STAMP[order](data, 4)
    return sec * 1_000_000_000 + nanosec


def _align(pos: int, n: int) -> int:
    return pos + (-pos) % n  # CDR aligns relative to the start of the payload, after the 4-byte header


def described_frame_bytes(data: bytes) -> int | None:
    """height * step of a serialized sensor_msgs/Image, or None when `data` is not one."""
    order = _order(data)
    if order is None:
        return None
    u32 = _U32[order]
    body = memoryview(data)[4:]
    try:
        pos = 8  # stamp: sec, nanosec
        (n,) = u32(body, pos)
        pos = _align(pos + 4 + n, 4)  # frame_id
        height = u32(body, pos)[0]
        (n,) = u32(body, pos + 8)  # after width: the encoding's length
        pos = pos + 12 + n + 1  # encoding, then is_bigendian
        (step,) = u32(body, _align(pos, 4))
    except struct.error:
        return None
    return height * step
