"""The slot table both rings share: a small shared-memory control file per publisher segment.

File layout (little endian): a 256-byte header (magic, layout version, memory kind, slot count, slot
capacity, owner pid, CUDA device, owner start time, topic), then per slot (generation u64, nbytes u64).
The host ring's pixel slots follow in the same file, each 4096-aligned; the CUDA ring's file holds only
the table plus the IPC handles (the allocation's, then one event's per slot), so that a reader can refuse
a descriptor whose handles are not the publisher's; its slots live in one device allocation at
`slot * stride`.

Concurrency, without atomics (see locks.py): one lock byte per slot past the end of the data.
- Writer: take a non-blocking WRITE lock on the slot (skip slots readers hold; all held: refuse), set the
  generation to 0 (a writer dying mid-write leaves an invalid slot, never a torn valid one), write,
  set nbytes and the new generation, unlock.
- Reader: take a non-blocking READ lock (fails while the writer writes: stale), compare generations
  (changed: stale), and keep the lock until the last view of the slot is released. The fcntl calls
  order the table stores between processes.
A writer also holds a write lock on a liveness byte for its whole life (segments.clean_stale_segments).
"""
from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from isaac_perf.core.transport import locks
from isaac_perf.core.transport.descriptor import (
    HANDLE_BYTES,
    MEMORY_CODES,
    MEMORY_NAMES,
    Descriptor,
    DescriptorError,
    segment_name_problem,
)
from isaac_perf.core.transport.errors import TransportUnavailable
from isaac_perf.core.transport.segments import ROOT_ENV, process_start_time, segment_name, transport_root

SEGMENT_MAGIC = b'IPFS'
LAYOUT_VERSION = 1
PAGE = 4096
TABLE_OFFSET = 256
TOPIC_MAX = 200
MAX_SLOTS = 1024
_HEADER = struct.Struct('<4sHBxIQIiQH')  # + topic bytes; ends before TABLE_OFFSET
_MiB = 1 << 20
# Map every page at once: the writer touches all slots anyway, and a reader then takes no page fault per
# frame (one 1080p slot is ~1500 pages: ~1.5 ms of first-touch faults otherwise).
_POPULATE = getattr(mmap, 'MAP_POPULATE', 0)


def _align(n: int, to: int = PAGE) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class Layout:
    memory: str
    slots: int
    capacity: int
    owner_pid: int
    owner_start: int
    topic: str = ''
    device: int = -1  # the CUDA device of a cuda segment

    @property
    def stride(self) -> int:
        return _align(self.capacity)

    @property
    def data_offset(self) -> int:
        return _align(TABLE_OFFSET + 16 * self.slots)

    @property
    def size(self) -> int:
        if self.memory == 'host':
            return self.data_offset + self.slots * self.stride
        return self.handles_offset + HANDLE_BYTES * (1 + self.slots)

    @property
    def handles_offset(self) -> int:
        """cuda: the allocation's IPC handle here, then slot i's event handle at + 64 * (1 + i)."""
        return TABLE_OFFSET + 16 * self.slots

    def slot_offset(self, slot: int) -> int:
        """Where the slot's bytes start: in this file (host) or in the device allocation (cuda)."""
        return (self.data_offset if self.memory == 'host' else 0) + slot * self.stride

    def lock_offset(self, slot: int) -> int:
        return self.size + slot

    @property
    def liveness_offset(self) -> int:
        return self.size + self.slots

    def header(self) -> bytes:
        topic = self.topic.encode('utf-8', 'replace')[:TOPIC_MAX]
        return _HEADER.pack(SEGMENT_MAGIC, LAYOUT_VERSION, MEMORY_CODES[self.memory], self.slots,
                            self.capacity, self.owner_pid, self.device, self.owner_start, len(topic)) + topic


def parse_layout(raw: bytes, file_size: int) -> Layout:
    """The layout in a header; ValueError says what is wrong with it."""
    if len(raw) < _HEADER.size or raw[:4] != SEGMENT_MAGIC:
        raise ValueError('not an isaac_perf segment (header magic)')
    _, version, memory, slots, capacity, pid, device, start, topic_len = _HEADER.unpack_from(raw)
    if version != LAYOUT_VERSION:
        raise ValueError(f'segment layout version {version}, this isaac_perf reads {LAYOUT_VERSION}: '
                         'update isaac_perf on both ends')
    if memory not in MEMORY_NAMES or not 0 < slots <= MAX_SLOTS or capacity <= 0 or topic_len > TOPIC_MAX:
        raise ValueError(f'segment header out of range (memory {memory}, slots {slots}, capacity {capacity})')
    topic = raw[_HEADER.size:_HEADER.size + topic_len].decode('utf-8', 'replace')
    layout = Layout(MEMORY_NAMES[memory], slots, capacity, pid, start, topic, device)
    if file_size < layout.size:
        raise ValueError(f'segment file is {file_size} bytes, its header needs {layout.size}')
    return layout


def read_layout(fd: int, file_size: int) -> Layout | None:
    try:
        return parse_layout(os.pread(fd, TABLE_OFFSET, 0), file_size)
    except (OSError, ValueError):
        return None


def _reserve(fd: int, size: int, folder: str) -> None:
    """Back the file with real pages now: a full tmpfs would otherwise SIGBUS on the first write."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    advice = ('use fewer zero_copy_slots or smaller frames, give the container a bigger /dev/shm '
              '(e.g. docker run --shm-size=1g), or turn the zero-copy transport off')
    if size > free:
        raise TransportUnavailable(f'zero-copy segment needs {size / _MiB:.1f} MiB but {folder} has '
                                   f'{free / _MiB:.1f} MiB free: {advice}')
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise TransportUnavailable(f'zero-copy segment needs {size / _MiB:.1f} MiB in {folder} '
                                       f'({free / _MiB:.1f} MiB free) and reserving it failed ({e}): '
                                       f'{advice}') from None
        os.ftruncate(fd, size)  # a file system without fallocate: sized, not reserved


class WriterTable:
    """The publisher's side of one segment: created, reserved, mapped, its liveness lock held."""

    def __init__(self, topic: str, memory: str, slots: int, capacity: int, root: str | None = None,
                 index: int = 0, device: int = -1) -> None:
        if not 0 < slots <= MAX_SLOTS:
            raise ValueError(f'slots must be in 1..{MAX_SLOTS}, got {slots}')
        if capacity <= 0:
            raise ValueError(f'slot_bytes must be positive, got {capacity}')
        self.folder = transport_root(root)
        pid = os.getpid()
        self.layout = Layout(memory, int(slots), int(capacity), pid, process_start_time(pid) or 0, topic,
                             device)
        self.fd, self.index = self._create(topic, index)
        self.name = segment_name(pid, topic, self.index)
        self.path = os.path.join(self.folder, self.name)
        try:
            _reserve(self.fd, self.layout.size, self.folder)
            os.pwrite(self.fd, self.layout.header(), 0)
            self.mm = mmap.mmap(self.fd, self.layout.size, flags=mmap.MAP_SHARED | _POPULATE)
            locks.try_lock(self.fd, self.layout.liveness_offset, write=True)
        except BaseException:
            self.close()
            raise
        self.table = np.frombuffer(self.mm, dtype='<u8', count=2 * slots, offset=TABLE_OFFSET)
        self.held: set[int] = set()  # slots this writer has locked (its own locks never conflict)

    def _create(self, topic: str, index: int) -> tuple[int, int]:
        pid = os.getpid()
        for n in range(index, index + 1000):  # another writer of this topic in this process took `n`
            path = os.path.join(self.folder, segment_name(pid, topic, n))
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), n
            except FileExistsError:
                continue
            except OSError as e:
                raise TransportUnavailable(f'cannot create a zero-copy segment in {self.folder} ({e}): '
                                           f'set {ROOT_ENV} to a writable tmpfs or turn the '
                                           'zero-copy transport off') from None
        raise TransportUnavailable(f'no free segment name for topic {topic!r} in {self.folder}')

    def claim(self, start: int) -> int | None:
        """Write-lock the first free slot from `start` on (round robin); None when readers hold them all."""
        slots = self.layout.slots
        for k in range(slots):
            slot = (start + k) % slots
            if slot not in self.held and locks.try_lock(self.fd, self.layout.lock_offset(slot), write=True):
                self.held.add(slot)
                self.table[2 * slot] = 0  # invalid until committed
                return slot
        return None

    def commit(self, slot: int, nbytes: int, generation: int) -> None:
        self.table[2 * slot + 1] = nbytes
        self.table[2 * slot] = generation
        self.release(slot)

    def release(self, slot: int) -> None:
        self.held.discard(slot)
        locks.unlock(self.fd, self.layout.lock_offset(slot))

    def close(self) -> None:
        """Unlink and unmap; idempotent. Readers keep their own mappings of an unlinked file."""
        fd, self.fd = getattr(self, 'fd', -1), -1
        if fd < 0:
            return
        path = getattr(self, 'path', None)
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.table = None
        mm = getattr(self, 'mm', None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views into it are still alive; the mapping goes with them
        os.close(fd)


class ReaderSegment:
    """One segment as a reader sees it: validated header, read-only mapping, per-slot lease counts."""

    def __init__(self, folder: str, name: str, memory: str) -> None:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise DescriptorError('stale', f'segment {name} no longer exists (its publisher exited or '
                                           're-created it for larger frames)') from None
        except OSError as e:
            raise DescriptorError('forged', f'segment {name} cannot be opened in {folder}: {e}') from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DescriptorError('forged', f'segment {name} is not a regular file')
            try:
                self.layout = parse_layout(os.pread(fd, TABLE_OFFSET, 0), st.st_size)
            except ValueError as e:
                raise DescriptorError('forged', f'segment {name}: {e}') from None
            if self.layout.memory != memory:
                raise DescriptorError('forged', f'memory: segment {name} holds {self.layout.memory} '
                                                f'frames, this reader reads {memory} frames')
            self.mm = mmap.mmap(fd, self.layout.size, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise
        self.name, self.fd, self.ino = name, fd, (st.st_dev, st.st_ino)
        self.table = np.frombuffer(self.mm, dtype='<u8', count=2 * self.layout.slots, offset=TABLE_OFFSET)
        self.refs = [0] * self.layout.slots
        self.held = 0
        self.retired = False
        self.on_close: list[Callable[[], None]] = []  # e.g. the CUDA reader's cudaIpcCloseMemHandle

    def check(self, d: Descriptor) -> None:
        """Refuse a descriptor that does not fit this segment ('forged', naming the field)."""
        lay = self.layout
        if d.publisher_pid != lay.owner_pid:
            raise DescriptorError('forged', f'publisher_pid {d.publisher_pid} is not the owner '
                                            f'({lay.owner_pid}) of segment {self.name}')
        if not 0 <= d.slot < lay.slots:
            raise DescriptorError('forged', f'slot {d.slot} is out of range: segment {self.name} has '
                                            f'{lay.slots} slots')
        if not 0 <= d.nbytes <= lay.capacity:
            raise DescriptorError('forged', f'nbytes {d.nbytes} exceeds the slot capacity {lay.capacity} '
                                            f'of segment {self.name}')
        if d.memory == 'cuda':
            self._check_cuda(d)

    def _check_cuda(self, d: Descriptor) -> None:
        lay, at = self.layout, self.layout.handles_offset
        if d.offset != lay.slot_offset(d.slot):
            raise DescriptorError('forged', f'offset {d.offset} is not slot {d.slot}\'s offset '
                                            f'{lay.slot_offset(d.slot)} in segment {self.name}')
        if d.device != lay.device:
            raise DescriptorError('forged', f'device {d.device} is not the device ({lay.device}) of '
                                            f'segment {self.name}')
        if d.mem_handle != self.mm[at:at + HANDLE_BYTES]:
            raise DescriptorError('forged', f'mem_handle is not the allocation handle of segment {self.name}')
        at += HANDLE_BYTES * (1 + d.slot)
        if d.event_handle != self.mm[at:at + HANDLE_BYTES]:
            raise DescriptorError('forged', f'event_handle is not slot {d.slot}\'s event handle in segment '
                                            f'{self.name}')

    def acquire(self, d: Descriptor) -> None:
        """Pin the slot for `d` (read lock on first use); DescriptorError('stale') if it was rewritten."""
        slot = d.slot
        self.refs[slot] += 1  # pin first: a finalizer re-entering release() cannot drop the lock under us
        self.held += 1
        if self.refs[slot] == 1 and not locks.try_lock(self.fd, self.layout.lock_offset(slot), write=False):
            self._unpin(slot)
            raise DescriptorError('stale', f'slot {slot} of {self.name} is being rewritten (frame '
                                           f'{d.generation} is gone)')
        current = int(self.table[2 * slot])
        if current != d.generation:
            self._unpin(slot)
            raise DescriptorError('stale', f'slot {slot} of {self.name} holds frame {current}, not frame '
                                           f'{d.generation}: it was overwritten before it was opened')

    def _unpin(self, slot: int) -> None:
        self.refs[slot] -= 1
        self.held -= 1
        if self.refs[slot] == 0 and self.fd >= 0:
            locks.unlock(self.fd, self.layout.lock_offset(slot))

    def close(self) -> None:
        """Drop the mapping and the descriptor (and with it any lock still held); idempotent."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        for hook in self.on_close:
            try:
                hook()
            except Exception:  # noqa: BLE001 - closing must finish (interpreter shutdown, a lost device)
                pass
        self.table = None
        try:
            self.mm.close()
        except BufferError:
            pass  # arrays still map it; the mapping goes with the last of them
        os.close(fd)


class SegmentCache:
    """A reader's open segments by name, re-opened when the file is replaced, closed when unneeded.

    Thread-safe: one re-entrant lock (a lease finalizer may run inside an allocation of another call).
    """

    def __init__(self, memory: str, root: str | None = None) -> None:
        self.memory = memory
        self.folder = transport_root(root)
        self.segments: dict[str, ReaderSegment] = {}
        self.lock = threading.RLock()

    def acquire(self, d: Descriptor) -> ReaderSegment:
        """The validated, pinned segment for `d` (release with `release(segment, d.slot)`)."""
        if d.memory != self.memory:
            raise DescriptorError('forged', f'memory: descriptor is for {d.memory!r} frames, this reader '
                                            f'reads {self.memory!r} frames')
        problem = segment_name_problem(d.segment)
        if problem:
            raise DescriptorError('forged', problem)
        with self.lock:
            seg = self._segment(d.segment)
            seg.check(d)
            seg.acquire(d)
            return seg

    def _segment(self, name: str) -> ReaderSegment:
        seg = self.segments.get(name)
        try:
            st = os.stat(os.path.join(self.folder, name), follow_symlinks=False)
            ino = (st.st_dev, st.st_ino)
        except OSError:
            ino = None
        if seg is not None and seg.ino == ino:
            return seg
        if seg is not None:
            self._retire(name)
        self._sweep()
        seg = ReaderSegment(self.folder, name, self.memory)
        self.segments[name] = seg
        return seg

    def _sweep(self) -> None:
        """Close cached segments whose file is gone or replaced (their publisher moved on or died)."""
        for name, seg in list(self.segments.items()):
            try:
                st = os.stat(os.path.join(self.folder, name), follow_symlinks=False)
                gone = (st.st_dev, st.st_ino) != seg.ino
            except OSError:
                gone = True
            if gone:
                self._retire(name)

    def _retire(self, name: str) -> None:
        seg = self.segments.pop(name, None)
        if seg is None:
            return
        seg.retired = True
        if seg.held == 0:
            seg.close()

    def release(self, seg: ReaderSegment, slot: int) -> None:
        with self.lock:
            seg._unpin(slot)
            if seg.retired and seg.held == 0:
                seg.close()

    def close_segment(self, name: str) -> None:
        """Forget segment `name`; it closes now, or when its last lease ends."""
        with self.lock:
            self._retire(name)

    def close(self) -> None:
        with self.lock:
            for name in list(self.segments):
                self._retire(name)
