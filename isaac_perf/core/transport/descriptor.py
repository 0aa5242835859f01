"""The frame descriptor: the few hundred bytes that travel instead of the pixels.

Why a fixed binary struct: the ROS adapter carries it as the `data` of a sensor_msgs/Image, so it must be
small, decodable without pickle (a descriptor comes from another process and is untrusted), and versioned
so that two ends running different isaac_perf releases fail with a message that says so instead of
misreading each other's fields. `decode` raises `DescriptorError` and nothing else for any input.

Layout (little endian): MAGIC, version u16, memory u8, pad, slot u32, generation u64, nbytes u64,
publisher_pid u32, device i32, offset u64, mem_handle 64 bytes, event_handle 64 bytes, segment length u16,
then the segment name (ASCII, at most 200 bytes).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

MAGIC = b'IPFT'
VERSION = 1
VERSIONS_UNDERSTOOD = (VERSION,)
SEGMENT_MAX = 200
SEGMENT_PATTERN = re.compile(r'isaac_perf\.[A-Za-z0-9._-]*\Z')
REASONS = ('malformed', 'version', 'forged', 'stale', 'busy')
MEMORY_CODES = {'host': 0, 'cuda': 1}
MEMORY_NAMES = {v: k for k, v in MEMORY_CODES.items()}
HANDLE_BYTES = 64

_PREFIX = struct.Struct('<4sH')
_BODY = struct.Struct('<4sHBxIQQIiQ64s64sH')
MIN_SIZE = _BODY.size
MAX_SIZE = _BODY.size + SEGMENT_MAX
_U32 = 2**32
_U64 = 2**64


class DescriptorError(ValueError):
    """A descriptor was refused; `reason` is one of REASONS, the message says which field and why."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f'unknown DescriptorError reason {reason!r}; one of {", ".join(REASONS)}')
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Descriptor:
    memory: str            # 'host' or 'cuda'
    segment: str           # file name of the (host control) segment under the transport root
    slot: int
    generation: int        # > 0, unique per write within a segment
    nbytes: int            # payload bytes in the slot
    publisher_pid: int
    device: int = -1       # CUDA device ordinal for memory == 'cuda'
    mem_handle: bytes = b''    # 64-byte cudaIpcMemHandle of the slot's allocation (cuda only)
    event_handle: bytes = b''  # 64-byte cudaIpcEventHandle of the slot's event (cuda only)
    offset: int = 0        # byte offset of the slot inside mem_handle's allocation (cuda only)


def segment_name_problem(name: object) -> str | None:
    """Why `name` cannot be a segment file name, or None when it can (no '/', no '..', fixed prefix)."""
    if not isinstance(name, str):
        return f'segment must be a str, got {type(name).__name__}'
    if len(name) > SEGMENT_MAX:
        return f'segment name is {len(name)} characters, at most {SEGMENT_MAX}'
    if not SEGMENT_PATTERN.match(name):
        return (f'segment name {name[:60]!r} must start with "isaac_perf." and use only '
                'letters, digits, ".", "_" and "-"')
    return None


def _field_problem(d: Descriptor) -> str | None:
    if d.memory not in MEMORY_CODES:
        return f'memory {d.memory!r} is not one of {", ".join(MEMORY_CODES)}'
    ranges = (('slot', d.slot, 0, _U32), ('generation', d.generation, 1, _U64), ('nbytes', d.nbytes, 0, _U64),
              ('publisher_pid', d.publisher_pid, 1, _U32), ('device', d.device, -1, 2**31),
              ('offset', d.offset, 0, _U64))
    for name, value, low, high in ranges:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
            return f'{name} {value!r} is outside [{low}, {high})'
    if d.memory == 'cuda':
        if d.device < 0:
            return f'device {d.device} must be a CUDA device ordinal (>= 0) for memory "cuda"'
        for name, handle in (('mem_handle', d.mem_handle), ('event_handle', d.event_handle)):
            if not isinstance(handle, bytes) or len(handle) != HANDLE_BYTES:
                return f'{name} must be {HANDLE_BYTES} bytes for memory "cuda"'
    elif d.mem_handle or d.event_handle or d.offset or d.device != -1:
        return 'a host descriptor has no device, offset or CUDA handles'
    return segment_name_problem(d.segment)


def encode(d: Descriptor) -> bytes:
    """The wire form of `d`; DescriptorError('malformed') names a field out of range."""
    problem = _field_problem(d)
    if problem:
        raise DescriptorError('malformed', f'cannot encode descriptor: {problem}')
    segment = d.segment.encode('ascii')
    return _BODY.pack(MAGIC, VERSION, MEMORY_CODES[d.memory], d.slot, d.generation, d.nbytes,
                      d.publisher_pid, d.device, d.offset, d.mem_handle.ljust(HANDLE_BYTES, b'\0'),
                      d.event_handle.ljust(HANDLE_BYTES, b'\0'), len(segment)) + segment


def _as_bytes(data: object) -> bytes:
    try:
        view = memoryview(data)  # type: ignore[arg-type]
        if view.ndim != 1 or view.format != 'B':
            view = view.cast('B')
        if view.nbytes > MAX_SIZE:
            raise DescriptorError('malformed', f'descriptor is {view.nbytes} bytes, at most {MAX_SIZE}')
        return view.tobytes()
    except (TypeError, ValueError, BufferError) as e:
        if isinstance(e, DescriptorError):
            raise
        raise DescriptorError('malformed', f'descriptor is not a contiguous byte buffer '
                                           f'({type(data).__name__}: {e})') from None


def decode(data: object) -> Descriptor:
    """Parse a descriptor from bytes/bytearray/memoryview/array('B'); DescriptorError for anything else."""
    raw = _as_bytes(data)
    if len(raw) < _PREFIX.size or raw[:4] != MAGIC:
        raise DescriptorError('malformed', f'not an isaac_perf frame descriptor ({len(raw)} bytes, '
                                           f'starts {raw[:4]!r}, expected magic {MAGIC!r})')
    version = _PREFIX.unpack_from(raw)[1]
    if version not in VERSIONS_UNDERSTOOD:
        understood = ', '.join(map(str, VERSIONS_UNDERSTOOD))
        raise DescriptorError('version', f'frame descriptor version {version} is not understood: this '
                                         f'isaac_perf reads version(s) {understood}; update isaac_perf '
                                         'on both ends (publisher and subscriber) to the same release')
    if len(raw) < _BODY.size:
        raise DescriptorError('malformed', f'descriptor truncated: {len(raw)} bytes, at least {_BODY.size}')
    (_, _, memory, slot, generation, nbytes, pid, device, offset, mem_handle, event_handle,
     seg_len) = _BODY.unpack_from(raw)
    if len(raw) != _BODY.size + seg_len:
        raise DescriptorError('malformed', f'descriptor length {len(raw)} does not match its segment name '
                                           f'length {seg_len} (expected {_BODY.size + seg_len} bytes)')
    if memory not in MEMORY_NAMES:
        raise DescriptorError('malformed', f'memory code {memory} is not one of {sorted(MEMORY_NAMES)}')
    cuda = MEMORY_NAMES[memory] == 'cuda'
    d = Descriptor(MEMORY_NAMES[memory], raw[_BODY.size:].decode('latin-1'), slot, generation, nbytes, pid,
                   device, mem_handle if cuda else b'', event_handle if cuda else b'', offset)
    problem = _field_problem(d)
    if problem:
        raise DescriptorError('malformed', f'descriptor refused: {problem}')
    return d
