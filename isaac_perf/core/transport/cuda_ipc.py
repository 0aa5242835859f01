"""GPU frame ring over CUDA IPC: frames stay on the device; only a descriptor crosses processes.

Why: a frame already on the GPU (decoded, preprocessed) would otherwise go device -> host -> DDS -> host
-> device. Here the publisher copies it device-to-device into a slot of one cudaMalloc allocation that
every subscriber maps once (cudaIpcOpenMemHandle), and the subscriber's stream waits on the slot's
interprocess event, so no host thread ever waits for the copy.

Slot ownership uses the same slot table and OFD locks as the host ring (slots.py); the table file also
holds the IPC handles, so a descriptor naming another allocation or event is refused as forged.

Ordering, both ways:
- producer -> consumer: `write` enqueues cudaMemcpyAsync on the caller's stream, then records the slot's
  event there; `CudaIpcReader.open(d, stream)` makes `stream` wait on it (cudaStreamWaitEvent). Use the
  frame on that stream (or one ordered after it): `__cuda_array_interface__` says stream None because the
  wait has already been enqueued.
- consumer -> producer: the read lock is what stops the producer reusing the slot, and the consumer's
  kernels may still be reading when the Python object goes away. So release records a plain event on the
  consumer's stream and waits for it (cudaEventSynchronize; microseconds when the work is done) before
  dropping the lock. A producer also orders its own copies into one slot through the slot's event.

Limits: a frame larger than slot_bytes is refused (ValueError), not grown: the old allocation could
only be freed once every subscriber has closed it. cudaIpcOpenMemHandle cannot open a handle in the
process that exported it, so writer and reader are in different processes. Device ordinals in the
descriptor are the producer's: both ends must see the same devices (same CUDA_VISIBLE_DEVICES).
"""
from __future__ import annotations

import ctypes
import weakref
from typing import Any

from isaac_perf.core.cuda.base import CudaError
from isaac_perf.core.transport import locks
from isaac_perf.core.transport.descriptor import HANDLE_BYTES, Descriptor, DescriptorError, decode
from isaac_perf.core.transport.errors import TransportUnavailable
from isaac_perf.core.transport.segments import clean_stale_segments
from isaac_perf.core.transport.slots import ReaderSegment, SegmentCache, WriterTable

READER_REASONS = ('malformed', 'version', 'forged', 'stale')


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise TransportUnavailable(f'the CUDA IPC transport needs cuda-python ({e}): pip install '
                                   'cuda-python, or use the host shared-memory transport') from None
    return cudart


def _err_name(err: Any) -> str:
    return getattr(err, 'name', None) or repr(err)


def _call(result: Any, call: str, unavailable: bool = False) -> Any:
    """cuda.bindings returns (err, *values): the values, or an error naming the call and the CUDA error.

    `unavailable`: set-up and IPC calls, whose failure means this transport cannot run here (no driver, a
    container that forbids CUDA IPC): TransportUnavailable. Per-frame calls raise CudaError.
    """
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        message = f'{call} failed: {_err_name(err)}'
        if unavailable:
            raise TransportUnavailable(f'{message}; CUDA IPC is not usable here (containers need '
                                       '--ipc=host and the same GPU in both processes): use the host '
                                       'shared-memory transport')
        raise CudaError(message)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def handle_bytes(handle: Any) -> bytes:
    """The 64 raw bytes of a cudaIpcMemHandle_t / cudaIpcEventHandle_t (read from the struct itself, so
    a NUL inside the handle cannot truncate it the way a char[] -> bytes conversion would)."""
    raw = ctypes.string_at(int(handle.getPtr()), HANDLE_BYTES)
    return raw


def handle_from_bytes(kind: Any, raw: bytes) -> Any:
    """A cudaIpc*Handle_t (`kind`) holding exactly the 64 bytes `raw`."""
    handle = kind()
    ctypes.memmove(int(handle.getPtr()), raw, HANDLE_BYTES)
    return handle


def _set_device(rt: Any, device: int) -> None:
    count = _call(rt.cudaGetDeviceCount(), 'cudaGetDeviceCount', unavailable=True)
    if not 0 <= device < count:
        raise TransportUnavailable(f'CUDA device {device} does not exist here ({count} visible): set '
                                   'the same CUDA_VISIBLE_DEVICES for publisher and subscriber')
    _call(rt.cudaSetDevice(device), 'cudaSetDevice', unavailable=True)


def _free_writer(rt: Any, table: WriterTable, base: list[int], events: list[Any]) -> None:
    """Unlink the table; free the allocation only if no reader holds a slot (freeing memory another
    process still reads is undefined; a process exit reclaims it anyway)."""
    try:
        lay = table.layout
        unread = table.fd >= 0 and all(locks.try_lock(table.fd, lay.lock_offset(i), write=True)
                                       for i in range(lay.slots))
        for ev in events:
            rt.cudaEventDestroy(ev)
        if unread and base:
            rt.cudaFree(base[0])
    except Exception:  # noqa: BLE001 - interpreter shutdown, a lost device
        pass
    finally:
        table.close()


class CudaIpcWriter:
    """The publisher's ring of `slots` device slots of `slot_bytes` on `device`."""

    def __init__(self, topic: str, slots: int, slot_bytes: int, device: int = 0,
                 root: str | None = None) -> None:
        self._rt = rt = _cudart()
        _set_device(rt, device)
        self.topic, self.device = topic, device
        self.removed_stale = clean_stale_segments(root)
        self.counters = {'written': 0, 'busy': 0, 'grown': 0}
        self._table = table = WriterTable(topic, 'cuda', slots, slot_bytes, root, device=device)
        lay = table.layout
        self.name, self.slots, self.slot_bytes = table.name, lay.slots, lay.capacity
        base: list[int] = []
        self._events: list[Any] = []
        try:
            base.append(int(_call(rt.cudaMalloc(lay.slots * lay.stride), 'cudaMalloc', unavailable=True)))
            self.mem_handle = handle_bytes(_call(rt.cudaIpcGetMemHandle(base[0]), 'cudaIpcGetMemHandle',
                                                 unavailable=True))
            flags = rt.cudaEventInterprocess | rt.cudaEventDisableTiming
            self.event_handles = []
            for _ in range(lay.slots):
                ev = _call(rt.cudaEventCreateWithFlags(flags), 'cudaEventCreateWithFlags', unavailable=True)
                self._events.append(ev)
                self.event_handles.append(handle_bytes(_call(rt.cudaIpcGetEventHandle(ev),
                                                             'cudaIpcGetEventHandle', unavailable=True)))
            table.mm[lay.handles_offset:lay.size] = self.mem_handle + b''.join(self.event_handles)
        except BaseException:
            _free_writer(rt, table, base, self._events)
            raise
        self._base = base[0]
        self._finalizer = weakref.finalize(self, _free_writer, rt, table, base, self._events)
        self._generation = 0
        self._last = -1

    def write(self, src_ptr: int, nbytes: int, stream: int = 0) -> Descriptor | None:
        """Copy `nbytes` from device pointer `src_ptr` into a free slot on `stream`; the descriptor, or None
        when readers hold every slot. Returns before the copy completes (readers wait on the slot event)."""
        if self._table is None:
            raise RuntimeError(f'CudaIpcWriter for {self.topic!r} is closed')
        if not 0 <= nbytes <= self.slot_bytes:
            raise ValueError(f'a frame of {nbytes} bytes does not fit the {self.slot_bytes}-byte CUDA IPC '
                             f'slots of {self.topic!r}: create the writer with a larger slot_bytes')
        table, rt = self._table, self._rt
        slot = table.claim(self._last + 1)
        if slot is None:
            self.counters['busy'] += 1
            return None
        offset = table.layout.slot_offset(slot)
        event = self._events[slot]
        try:
            _call(rt.cudaStreamWaitEvent(stream, event, 0), 'cudaStreamWaitEvent')  # our last copy here
            _call(rt.cudaMemcpyAsync(self._base + offset, src_ptr, nbytes,
                                     rt.cudaMemcpyKind.cudaMemcpyDefault, stream), 'cudaMemcpyAsync')
            _call(rt.cudaEventRecord(event, stream), 'cudaEventRecord')
        except BaseException:
            table.release(slot)  # generation stays 0: the slot reads as invalid
            raise
        self._generation += 1
        table.commit(slot, nbytes, self._generation)
        self._last = slot
        self.counters['written'] += 1
        return Descriptor('cuda', table.name, slot, self._generation, nbytes, table.layout.owner_pid,
                          self.device, self.mem_handle, self.event_handles[slot], offset)

    def write_tensor(self, tensor: Any) -> Descriptor | None:
        """write() for a contiguous torch CUDA tensor on this writer's device, on its current stream."""
        import torch

        if not tensor.is_cuda or tensor.device.index != self.device:
            raise ValueError(f'write_tensor needs a tensor on cuda:{self.device}, got {tensor.device}')
        if not tensor.is_contiguous():
            raise ValueError('write_tensor needs a contiguous tensor (call .contiguous() first)')
        stream = torch.cuda.current_stream(tensor.device).cuda_stream
        return self.write(tensor.data_ptr(), tensor.numel() * tensor.element_size(), stream)

    def close(self) -> None:
        """Unlink the table and free the device memory (kept if a reader still holds a slot); idempotent."""
        if self._table is not None:
            self._table = None
            self._finalizer()

    def __enter__(self) -> CudaIpcWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CudaFrame:
    """One received frame in device memory: `ptr`, `nbytes`, `device`; usable from torch/CuPy/Numba."""

    __slots__ = ('ptr', 'nbytes', 'device', 'descriptor', '_finalizer', '__weakref__')

    def __init__(self, ptr: int, nbytes: int, device: int, descriptor: Descriptor) -> None:
        self.ptr, self.nbytes, self.device, self.descriptor = ptr, nbytes, device, descriptor
        self._finalizer: weakref.finalize | None = None

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # stream None: the wait on the producer's event is already on the stream given to open()
        return {'shape': (self.nbytes,), 'typestr': '|u1', 'data': (self.ptr, False), 'version': 3,
                'strides': None, 'stream': None}

    def as_torch(self, shape: tuple[int, ...] | None = None, dtype: Any = None) -> Any:
        """A torch tensor over the slot (no copy); it keeps this frame, and so its lease, alive."""
        import torch

        t = torch.as_tensor(self, device=f'cuda:{self.device}')
        if dtype is not None:
            t = t.view(dtype)
        return t if shape is None else t.view(shape)

    def to_host(self, stream: int = 0) -> Any:
        """A host copy (1-D uint8 numpy array) for a consumer that reads frames on the CPU: one
        device-to-host copy on `stream` (ordered after the producer's copy by open()), then a wait for it."""
        import numpy as np

        rt = _cudart()
        out = np.empty(self.nbytes, np.uint8)
        _call(rt.cudaMemcpyAsync(out.ctypes.data, self.ptr, self.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), 'cudaMemcpyAsync')
        _call(rt.cudaStreamSynchronize(stream), 'cudaStreamSynchronize')
        return out

    @property
    def alive(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def release(self) -> None:
        """End the lease now (idempotent): waits for the consumer stream's work, then unlocks the slot."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> CudaFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CudaIpcReader:
    """A subscriber's view of any number of publishers' CUDA rings."""

    def __init__(self, root: str | None = None) -> None:
        self._rt = _cudart()
        self._cache = SegmentCache('cuda', root)
        self.counters = dict.fromkeys(READER_REASONS, 0)
        self._bases: dict[ReaderSegment, int] = {}             # segment -> opened base pointer
        self._events: dict[tuple[ReaderSegment, int], Any] = {}  # (segment, slot) -> opened IPC event
        self._spare: list[Any] = []                   # plain events for release fences (one per release)

    def open(self, d: Descriptor, stream: int = 0) -> CudaFrame:
        """The frame of `d`, ordered after the producer's copy on `stream`; DescriptorError (counted)
        when refused, TransportUnavailable when CUDA IPC fails here."""
        try:
            seg = self._cache.acquire(d)
        except DescriptorError as e:
            self.counters[e.reason] = self.counters.get(e.reason, 0) + 1
            raise
        try:
            rt = self._rt
            _call(rt.cudaSetDevice(d.device), 'cudaSetDevice')
            base = self._bases.get(seg) or self._open_base(seg, d)
            event = self._events.get((seg, d.slot)) or self._open_event(seg, d)
            _call(rt.cudaStreamWaitEvent(stream, event, 0), 'cudaStreamWaitEvent')
            frame = CudaFrame(base + d.offset, d.nbytes, d.device, d)
        except BaseException:
            self._cache.release(seg, d.slot)
            raise
        frame._finalizer = weakref.finalize(frame, self._release, seg, d.slot, d.device, stream)
        return frame

    def open_bytes(self, data: Any, stream: int = 0) -> tuple[Descriptor, CudaFrame]:
        try:
            d = decode(data)
        except DescriptorError as e:
            self.counters[e.reason] = self.counters.get(e.reason, 0) + 1
            raise
        return d, self.open(d, stream)

    def _open_base(self, seg: ReaderSegment, d: Descriptor) -> int:
        rt = self._rt
        handle = handle_from_bytes(rt.cudaIpcMemHandle_t, d.mem_handle)
        base = int(_call(rt.cudaIpcOpenMemHandle(handle, rt.cudaIpcMemLazyEnablePeerAccess),
                         'cudaIpcOpenMemHandle', unavailable=True))
        self._bases[seg] = base
        seg.on_close.append(lambda: (self._bases.pop(seg, None), rt.cudaIpcCloseMemHandle(base)))
        return base

    def _open_event(self, seg: ReaderSegment, d: Descriptor) -> Any:
        rt = self._rt
        handle = handle_from_bytes(rt.cudaIpcEventHandle_t, d.event_handle)
        event = _call(rt.cudaIpcOpenEventHandle(handle), 'cudaIpcOpenEventHandle', unavailable=True)
        key = (seg, d.slot)
        self._events[key] = event
        seg.on_close.append(lambda: (self._events.pop(key, None), rt.cudaEventDestroy(event)))
        return event

    def _release(self, seg: ReaderSegment, slot: int, device: int, stream: int) -> None:
        rt = self._rt
        try:
            rt.cudaSetDevice(device)
            fence = self._spare.pop() if self._spare else _call(
                rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), 'cudaEventCreateWithFlags')
            _call(rt.cudaEventRecord(fence, stream), 'cudaEventRecord')
            _call(rt.cudaEventSynchronize(fence), 'cudaEventSynchronize')
            self._spare.append(fence)
        except Exception:  # noqa: BLE001 - a lost device or interpreter shutdown: nothing left to fence
            pass
        finally:
            self._cache.release(seg, slot)

    def close_segment(self, name: str) -> None:
        self._cache.close_segment(name)

    def close(self) -> None:
        """cudaIpcCloseMemHandle and destroy the events of every segment (now, or at its last release)."""
        self._cache.close()
        for fence in self._spare:
            self._rt.cudaEventDestroy(fence)
        self._spare.clear()

    def __enter__(self) -> CudaIpcReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
