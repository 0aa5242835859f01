"""One small CUDA runtime interface with three implementations: torch, cuda-python, and a CPU fallback.

Everything above this file (stream pool, buffer pools, scheduler, batcher) talks to a `Runtime` and never
to a CUDA binding directly, so the same scheduling and pooling logic runs

- on `torch.cuda` where the torch backend runs (its streams, events and caching allocator interoperate with
  the engine's kernels without any pointer juggling),
- on `cuda.bindings.runtime` (cuda-python, NVIDIA's maintained binding; what TensorRT's own samples use)
  where there is CUDA but no torch,
- on plain numpy when there is no GPU at all: streams are no-ops, events carry host timestamps and are
  always complete, "device" memory is host memory. That is how the logic is tested on a CPU-only machine.

A runtime allocates raw `Block`s (pools in `pools.py` put size classes and reuse on top), creates streams
and events (`streams.py` wraps them), and enqueues copies between blocks.
"""
from __future__ import annotations

import ctypes
import logging
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)

BACKENDS = ('auto', 'torch', 'cuda-python', 'cpu')


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and the error."""


@dataclass(frozen=True)
class CudaArrayRef:
    """A typed view of raw device memory that torch, CuPy and Numba accept (`__cuda_array_interface__`)."""
    ptr: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {'shape': self.shape, 'typestr': np.dtype(self.dtype).str, 'data': (self.ptr, False),
                'version': 3, 'strides': None}


@dataclass
class Block:
    """One raw allocation. `handle` keeps the memory alive (numpy array, torch tensor or a pointer)."""
    nbytes: int
    kind: str  # 'host' (pageable), 'pinned' (page-locked host) or 'device'
    handle: Any
    ptr: int
    host: np.ndarray | None = None  # uint8 view for host kinds


class Event(ABC):
    """A marker in a stream: time it (`elapsed_ms`), fence on it (`Stream.wait`), or ask if it passed."""

    native: Any = None

    @abstractmethod
    def record(self, stream: Stream | None = None) -> Event: ...

    @abstractmethod
    def query(self) -> bool:
        """True once all work enqueued before the record has finished (never blocks)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Block the calling thread until this event has passed (only this event, not the device)."""

    @abstractmethod
    def elapsed_ms(self, end: Event) -> float:
        """Milliseconds from this event to `end`; both must have passed."""


class Stream(ABC):
    """An ordered queue of device work."""

    native: Any = None
    index: int = 0

    @abstractmethod
    def record(self, event: Event | None = None) -> Event:
        """Record `event` (or a new timing event) at the current end of this stream."""

    @abstractmethod
    def wait(self, event: Event) -> None:
        """Make later work on this stream wait for `event` without blocking the host."""

    @abstractmethod
    def query(self) -> bool: ...

    @abstractmethod
    def synchronize(self) -> None: ...

    def use(self) -> AbstractContextManager:
        """Context in which framework calls (torch ops) enqueue on this stream."""
        return nullcontext()


class Runtime(ABC):
    """The primitives the CUDA layer needs; see the module docstring for the three implementations."""

    name = 'base'
    is_gpu = False
    device_index = -1  # the CUDA device ordinal it runs on; -1 = the host (CPU runtime)

    @abstractmethod
    def new_stream(self) -> Stream: ...

    @abstractmethod
    def new_event(self, timing: bool = True) -> Event: ...

    @abstractmethod
    def alloc(self, nbytes: int, kind: str) -> Block:
        """Allocate `nbytes` of 'host', 'pinned' or 'device' memory."""

    @abstractmethod
    def free(self, block: Block) -> None: ...

    @abstractmethod
    def copy_async(self, dst: Block, src: Block, nbytes: int, stream: Stream | None) -> None:
        """Enqueue a copy of the first `nbytes` of `src` into `dst` on `stream`."""

    @abstractmethod
    def view(self, block: Block, shape: tuple[int, ...], dtype: str) -> Any:
        """A typed array over the start of `block`: numpy for host memory, framework-native for device."""

    def to_host_async(self, array: Any, dst: Block, stream: Stream | None) -> np.ndarray:
        """Enqueue a copy of a device array (runtime-native) into host block `dst`; return the numpy view.

        The view holds valid data once an event recorded on `stream` after this call has passed.
        """
        host = np.asarray(array)
        out = dst.host[:host.nbytes].view(host.dtype).reshape(host.shape)
        np.copyto(out, host)
        return out

    def synchronize(self) -> None:  # noqa: B027 - deliberately a no-op where there is no device
        """Wait for the whole device (benchmarks and shutdown only; the pipeline fences on events)."""

    def use_device(self) -> AbstractContextManager:
        """Context in which framework calls allocate and launch on this runtime's device (multi-GPU)."""
        return nullcontext()

    def describe(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------------- CPU


class CpuEvent(Event):
    """Host timestamp taken at record time; CPU work is synchronous, so the event has always passed."""

    def __init__(self) -> None:
        self.t_ns: int | None = None

    def record(self, stream: Stream | None = None) -> CpuEvent:
        self.t_ns = time.perf_counter_ns()
        return self

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None

    def elapsed_ms(self, end: Event) -> float:
        if self.t_ns is None or getattr(end, 't_ns', None) is None:
            raise CudaError('elapsed_ms on an event that was never recorded')
        return (end.t_ns - self.t_ns) / 1e6  # type: ignore[attr-defined]


class CpuStream(Stream):
    def __init__(self, index: int = 0) -> None:
        self.index = index

    def record(self, event: Event | None = None) -> Event:
        return (event or CpuEvent()).record(self)

    def wait(self, event: Event) -> None:
        return None

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None


class CpuRuntime(Runtime):
    """No GPU: numpy buffers, synchronous copies, always-complete events."""

    name = 'cpu'
    is_gpu = False

    def __init__(self) -> None:
        self._streams = 0

    def new_stream(self) -> Stream:
        self._streams += 1
        return CpuStream(self._streams - 1)

    def new_event(self, timing: bool = True) -> Event:
        return CpuEvent()

    def alloc(self, nbytes: int, kind: str) -> Block:
        _check_kind(kind)
        array = np.empty(int(nbytes), dtype=np.uint8)
        return Block(int(nbytes), kind, array, array.ctypes.data, array)

    def free(self, block: Block) -> None:
        block.handle = None
        block.host = None

    def copy_async(self, dst: Block, src: Block, nbytes: int, stream: Stream | None) -> None:
        _check_copy(dst, src, nbytes)
        np.copyto(dst.host[:nbytes], src.host[:nbytes])

    def view(self, block: Block, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return _host_view(block, shape, dtype)


# ------------------------------------------------------------------------------------------- torch


class TorchEvent(Event):
    def __init__(self, torch: Any, timing: bool = True) -> None:
        self.native = torch.cuda.Event(enable_timing=timing)

    def record(self, stream: Stream | None = None) -> TorchEvent:
        if stream is None:
            self.native.record()
        else:
            self.native.record(stream.native)
        return self

    def query(self) -> bool:
        return bool(self.native.query())

    def synchronize(self) -> None:
        self.native.synchronize()

    def elapsed_ms(self, end: Event) -> float:
        return float(self.native.elapsed_time(end.native))


class TorchStream(Stream):
    def __init__(self, torch: Any, index: int, device: Any) -> None:
        self._torch = torch
        self.index = index
        self.native = torch.cuda.Stream(device=device)

    def record(self, event: Event | None = None) -> Event:
        return (event or TorchEvent(self._torch)).record(self)

    def wait(self, event: Event) -> None:
        self.native.wait_event(event.native)

    def query(self) -> bool:
        return bool(self.native.query())

    def synchronize(self) -> None:
        self.native.synchronize()

    def use(self) -> AbstractContextManager:
        return self._torch.cuda.stream(self.native)


class TorchRuntime(Runtime):
    """torch.cuda streams and events; pinned and device blocks are uint8 tensors (torch-native views).

    `allocator='torch'` takes memory from torch's caching allocators (device) and pinned host allocator;
    `allocator='cuda'` calls cudaMalloc / cudaHostAlloc (cuda-python) for every block and wraps it as a
    tensor, so a pool in front of it is measured against the real driver calls (benchmarks/batching.py).
    """

    name = 'torch'
    is_gpu = True

    def __init__(self, device: str = 'cuda', allocator: str = 'torch') -> None:
        import torch
        if not torch.cuda.is_available():
            raise CudaError('torch has no CUDA device here; use the cpu runtime')
        if allocator not in ('torch', 'cuda'):
            raise ValueError(f"allocator {allocator!r}: use 'torch' or 'cuda'")
        self._torch = torch
        self.device = torch.device(device)
        index = self.device.index
        self.device_index = index if index is not None else torch.cuda.current_device()
        self.allocator = allocator
        self._rt = _cudart() if allocator == 'cuda' else None
        self._streams = 0

    def new_stream(self) -> Stream:
        self._streams += 1
        return TorchStream(self._torch, self._streams - 1, self.device)

    def new_event(self, timing: bool = True) -> Event:
        return TorchEvent(self._torch, timing)

    def alloc(self, nbytes: int, kind: str) -> Block:
        _check_kind(kind)
        torch = self._torch
        n = int(nbytes)
        rt = self._rt
        if rt is not None and kind == 'device':
            ptr = int(_check(rt.cudaMalloc(n), 'cudaMalloc'))
            t = torch.as_tensor(CudaArrayRef(ptr, (n,), 'uint8'), device=self.device)
            return Block(n, kind, t, ptr)
        if rt is not None and kind == 'pinned':
            ptr = int(_check(rt.cudaHostAlloc(n, rt.cudaHostAllocDefault), 'cudaHostAlloc'))
            host = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))
            return Block(n, kind, torch.from_numpy(host), ptr, host)
        if kind == 'device':
            t = torch.empty(n, dtype=torch.uint8, device=self.device)
            return Block(n, kind, t, t.data_ptr())
        t = torch.empty(n, dtype=torch.uint8, pin_memory=(kind == 'pinned'))
        return Block(n, kind, t, t.data_ptr(), t.numpy())

    def free(self, block: Block) -> None:
        # allocator='torch': dropping the last reference returns the memory to torch's caching allocator
        # (device) or pinned host allocator. Pools only free blocks whose fences have passed.
        if self._rt is not None and block.handle is not None:
            if block.kind == 'device':
                _check(self._rt.cudaFree(block.ptr), 'cudaFree')
            elif block.kind == 'pinned':
                _check(self._rt.cudaFreeHost(block.ptr), 'cudaFreeHost')
        block.handle = None
        block.host = None

    def copy_async(self, dst: Block, src: Block, nbytes: int, stream: Stream | None) -> None:
        _check_copy(dst, src, nbytes)
        ctx = stream.use() if stream is not None else nullcontext()
        with ctx:
            dst.handle[:nbytes].copy_(src.handle[:nbytes], non_blocking=True)

    def view(self, block: Block, shape: tuple[int, ...], dtype: str) -> Any:
        if block.kind != 'device':
            return _host_view(block, shape, dtype)  # host memory is filled and read with numpy
        torch = self._torch
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if n > block.nbytes:
            raise ValueError(f'view of {n} bytes does not fit a block of {block.nbytes} bytes')
        return block.handle[:n].view(_torch_dtype(torch, dtype)).view(shape)

    def to_host_async(self, array: Any, dst: Block, stream: Stream | None) -> np.ndarray:
        torch = self._torch
        if not isinstance(array, torch.Tensor):
            return super().to_host_async(array, dst, stream)
        array = array.contiguous() if not array.is_contiguous() else array
        n = array.numel() * array.element_size()
        if n > dst.nbytes:
            raise ValueError(f'output of {n} bytes does not fit a host block of {dst.nbytes} bytes')
        target = dst.handle[:n].view(array.dtype).view(array.shape)
        ctx = stream.use() if stream is not None else nullcontext()
        with ctx:
            target.copy_(array, non_blocking=True)
        return target.numpy()

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self.device)

    def use_device(self) -> AbstractContextManager:
        # torch ops without an explicit device (torch.empty in an engine, the preprocessor's constants)
        # go to the *current* device; with one engine per GPU that must be this runtime's GPU.
        return self._torch.cuda.device(self.device)

    def describe(self) -> str:
        return f'torch {self._torch.__version__} on {self._torch.cuda.get_device_name(self.device)}'


# ------------------------------------------------------------------------------------- cuda-python


def _cudart() -> Any:
    from cuda.bindings import runtime as cudart  # cuda-python >= 12.x layout
    return cudart


def _check(result: Any, call: str) -> Any:
    """cuda.bindings returns (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(f'{call} failed: {err!r}')
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class CudaPyEvent(Event):
    def __init__(self, cudart: Any, timing: bool = True) -> None:
        self._rt = cudart
        flags = cudart.cudaEventDefault if timing else cudart.cudaEventDisableTiming
        self.native = _check(cudart.cudaEventCreateWithFlags(flags), 'cudaEventCreateWithFlags')

    def record(self, stream: Stream | None = None) -> CudaPyEvent:
        _check(self._rt.cudaEventRecord(self.native, stream.native if stream is not None else 0),
               'cudaEventRecord')
        return self

    def query(self) -> bool:
        err = self._rt.cudaEventQuery(self.native)[0]
        if err == self._rt.cudaError_t.cudaSuccess:
            return True
        if err == self._rt.cudaError_t.cudaErrorNotReady:
            return False
        raise CudaError(f'cudaEventQuery failed: {err!r}')

    def synchronize(self) -> None:
        _check(self._rt.cudaEventSynchronize(self.native), 'cudaEventSynchronize')

    def elapsed_ms(self, end: Event) -> float:
        return float(_check(self._rt.cudaEventElapsedTime(self.native, end.native), 'cudaEventElapsedTime'))

    def __del__(self) -> None:
        try:
            self._rt.cudaEventDestroy(self.native)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class CudaPyStream(Stream):
    def __init__(self, cudart: Any, index: int) -> None:
        self._rt = cudart
        self.index = index
        # Non-blocking: no implicit synchronisation with the legacy default stream.
        self.native = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                             'cudaStreamCreateWithFlags')

    def record(self, event: Event | None = None) -> Event:
        return (event or CudaPyEvent(self._rt)).record(self)

    def wait(self, event: Event) -> None:
        _check(self._rt.cudaStreamWaitEvent(self.native, event.native, 0), 'cudaStreamWaitEvent')

    def query(self) -> bool:
        err = self._rt.cudaStreamQuery(self.native)[0]
        return err == self._rt.cudaError_t.cudaSuccess

    def synchronize(self) -> None:
        _check(self._rt.cudaStreamSynchronize(self.native), 'cudaStreamSynchronize')

    def __del__(self) -> None:
        try:
            self._rt.cudaStreamDestroy(self.native)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class CudaPythonRuntime(Runtime):
    """cuda.bindings.runtime: cudaMalloc / cudaHostAlloc blocks, device views via __cuda_array_interface__."""

    name = 'cuda-python'
    is_gpu = True

    def __init__(self, device: int = 0) -> None:
        cudart = _cudart()
        count = _check(cudart.cudaGetDeviceCount(), 'cudaGetDeviceCount')
        if not count:
            raise CudaError('cuda-python found no CUDA device; use the cpu runtime')
        _check(cudart.cudaSetDevice(device), 'cudaSetDevice')
        self._rt = cudart
        self.device = device
        self._streams = 0

    def new_stream(self) -> Stream:
        self._streams += 1
        return CudaPyStream(self._rt, self._streams - 1)

    def new_event(self, timing: bool = True) -> Event:
        return CudaPyEvent(self._rt, timing)

    def alloc(self, nbytes: int, kind: str) -> Block:
        _check_kind(kind)
        n = int(nbytes)
        rt = self._rt
        if kind == 'device':
            ptr = int(_check(rt.cudaMalloc(n), 'cudaMalloc'))
            return Block(n, kind, ptr, ptr)
        if kind == 'pinned':
            ptr = int(_check(rt.cudaHostAlloc(n, rt.cudaHostAllocDefault), 'cudaHostAlloc'))
            host = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))
            return Block(n, kind, ptr, ptr, host)
        array = np.empty(n, dtype=np.uint8)
        return Block(n, kind, array, array.ctypes.data, array)

    def free(self, block: Block) -> None:
        if block.kind == 'device' and block.handle is not None:
            _check(self._rt.cudaFree(block.ptr), 'cudaFree')
        elif block.kind == 'pinned' and block.handle is not None:
            _check(self._rt.cudaFreeHost(block.ptr), 'cudaFreeHost')
        block.handle = None
        block.host = None

    def copy_async(self, dst: Block, src: Block, nbytes: int, stream: Stream | None) -> None:
        _check_copy(dst, src, nbytes)
        kinds = self._rt.cudaMemcpyKind
        kind = {('device', 'pinned'): kinds.cudaMemcpyHostToDevice,
                ('device', 'host'): kinds.cudaMemcpyHostToDevice,
                ('pinned', 'device'): kinds.cudaMemcpyDeviceToHost,
                ('host', 'device'): kinds.cudaMemcpyDeviceToHost,
                ('device', 'device'): kinds.cudaMemcpyDeviceToDevice}.get((dst.kind, src.kind),
                                                                            kinds.cudaMemcpyHostToHost)
        _check(self._rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind,
                                        stream.native if stream is not None else 0), 'cudaMemcpyAsync')

    def view(self, block: Block, shape: tuple[int, ...], dtype: str) -> Any:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if n > block.nbytes:
            raise ValueError(f'view of {n} bytes does not fit a block of {block.nbytes} bytes')
        if block.kind == 'device':
            return CudaArrayRef(block.ptr, tuple(int(s) for s in shape), dtype)
        return _host_view(block, shape, dtype)

    def to_host_async(self, array: Any, dst: Block, stream: Stream | None) -> np.ndarray:
        iface = getattr(array, '__cuda_array_interface__', None)
        if iface is None:
            return super().to_host_async(array, dst, stream)
        dtype = np.dtype(iface['typestr'])
        shape = tuple(iface['shape'])
        n = int(np.prod(shape)) * dtype.itemsize
        src = Block(n, 'device', array, int(iface['data'][0]))
        self.copy_async(dst, src, n, stream)
        return dst.host[:n].view(dtype).reshape(shape)

    def synchronize(self) -> None:
        _check(self._rt.cudaDeviceSynchronize(), 'cudaDeviceSynchronize')

    @property
    def device_index(self) -> int:  # type: ignore[override]
        return self.device

    def use_device(self) -> AbstractContextManager:
        _check(self._rt.cudaSetDevice(self.device), 'cudaSetDevice')  # current for this host thread
        return nullcontext()

    def describe(self) -> str:
        props = _check(self._rt.cudaGetDeviceProperties(self.device), 'cudaGetDeviceProperties')
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return f'cuda-python on {name.strip(chr(0))}'


# -------------------------------------------------------------------------------- simulated device


class SimClock:
    """Virtual time for `SimRuntime`: tests advance it explicitly, so device timings are exact numbers."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = int(now_ns)

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ns: int) -> None:
        self.now_ns += int(ns)

    def advance_to(self, t_ns: int) -> None:
        self.now_ns = max(self.now_ns, int(t_ns))


class SimEvent(Event):
    """Passes when the virtual clock reaches the end of the work enqueued before it."""

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self.t_ns: int | None = None

    def record(self, stream: Stream | None = None) -> SimEvent:
        self.t_ns = stream.tail_ns() if isinstance(stream, SimStream) else self._clock.now_ns
        return self

    def query(self) -> bool:
        return self.t_ns is not None and self._clock.now_ns >= self.t_ns

    def synchronize(self) -> None:
        if self.t_ns is not None:
            self._clock.advance_to(self.t_ns)  # the host "waits": virtual time moves to the event

    def elapsed_ms(self, end: Event) -> float:
        if self.t_ns is None or getattr(end, 't_ns', None) is None:
            raise CudaError('elapsed_ms on an event that was never recorded')
        return (end.t_ns - self.t_ns) / 1e6  # type: ignore[attr-defined]


class SimStream(Stream):
    """A stream whose work takes virtual time: `busy(ns)` enqueues `ns` of work after what is queued."""

    def __init__(self, clock: SimClock, index: int) -> None:
        self._clock = clock
        self.index = index
        self._tail_ns = 0

    def tail_ns(self) -> int:
        return max(self._tail_ns, self._clock.now_ns)

    def busy(self, ns: int) -> None:
        self._tail_ns = self.tail_ns() + int(ns)

    def record(self, event: Event | None = None) -> Event:
        return (event or SimEvent(self._clock)).record(self)

    def wait(self, event: Event) -> None:
        t = getattr(event, 't_ns', None)
        if t is not None:
            self._tail_ns = max(self.tail_ns(), t)

    def query(self) -> bool:
        return self._clock.now_ns >= self._tail_ns

    def synchronize(self) -> None:
        self._clock.advance_to(self._tail_ns)


class SimRuntime(CpuRuntime):
    """A simulated device for CPU tests of multi-device routing: host memory and numpy results like
    `CpuRuntime`, but work takes virtual time (a compute function calls `stream.busy(ns)`) and events pass
    only when the shared `SimClock` reaches them, so batches really are "in flight" and load-based routing
    can be checked with exact numbers. Several SimRuntimes sharing one clock are several devices."""

    name = 'sim'

    def __init__(self, clock: SimClock, device_index: int = 0) -> None:
        super().__init__()
        self.clock = clock
        self.device_index = device_index

    def new_stream(self) -> Stream:
        self._streams += 1
        return SimStream(self.clock, self._streams - 1)

    def new_event(self, timing: bool = True) -> Event:
        return SimEvent(self.clock)

    def synchronize(self) -> None:
        return None

    def describe(self) -> str:
        return f'simulated device {self.device_index}'


# ------------------------------------------------------------------------------------------ choose


def visible_gpus() -> list[str]:
    """Names of the CUDA GPUs this process can use, index = position (empty without CUDA).

    torch first (it honours CUDA_VISIBLE_DEVICES like everything else), then cuda-python; any failure
    means "no GPU here".
    """
    try:
        import torch
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - ImportError, driver errors: no torch GPU
        pass
    try:
        cudart = _cudart()
        count = int(_check(cudart.cudaGetDeviceCount(), 'cudaGetDeviceCount') or 0)
        return [f'cuda:{i}' for i in range(count)]
    except Exception:  # noqa: BLE001 - no cuda-python or no driver
        return []


def create_runtime(backend: str = 'auto', device: str = 'cuda', allocator: str = 'torch') -> Runtime:
    """Pick a runtime: 'auto' prefers torch, then cuda-python, then falls back to the CPU with a warning.

    An explicit backend that cannot start also falls back to the CPU (with a warning saying why), so a
    node configured for a GPU keeps running on a machine without one.
    """
    if backend not in BACKENDS:
        raise ValueError(f'runtime backend {backend!r} is not one of {", ".join(BACKENDS)}')
    tried = []
    order = {'auto': ('torch', 'cuda-python'), 'torch': ('torch',), 'cuda-python': ('cuda-python',),
             'cpu': ()}[backend]
    for name in order:
        try:
            if name == 'torch':
                return TorchRuntime(device if device.startswith('cuda') else 'cuda', allocator=allocator)
            index = int(device.split(':', 1)[1]) if ':' in device else 0
            return CudaPythonRuntime(index)
        except Exception as exc:  # noqa: BLE001 - ImportError, no device, driver errors: all mean "not here"
            tried.append(f'{name}: {exc}')
    if tried:
        _log.warning('no CUDA runtime available (%s); using the CPU fallback', '; '.join(tried))
    return CpuRuntime()


# ----------------------------------------------------------------------------------------- helpers


def _check_kind(kind: str) -> None:
    if kind not in ('host', 'pinned', 'device'):
        raise ValueError(f"memory kind {kind!r} is not one of 'host', 'pinned', 'device'")


def _check_copy(dst: Block, src: Block, nbytes: int) -> None:
    if nbytes > dst.nbytes or nbytes > src.nbytes:
        raise ValueError(f'copy of {nbytes} bytes overruns a block (src {src.nbytes}, dst {dst.nbytes})')
    if dst.handle is None or src.handle is None:
        raise ValueError('copy to or from a freed block')


def _host_view(block: Block, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    if block.host is None:
        raise ValueError(f'{block.kind} block has no host view')
    if n > block.nbytes:
        raise ValueError(f'view of {n} bytes does not fit a block of {block.nbytes} bytes')
    return block.host[:n].view(dt).reshape(shape)


def _torch_dtype(torch: Any, dtype: str) -> Any:
    name = dtype if dtype == 'bfloat16' else np.dtype(dtype).name
    # uint16 (mono16 frames) is viewed as int16: torch's uint16 support is partial; BatchPreprocessor
    # undoes the wrap of values >= 32768.
    table = {'uint8': torch.uint8, 'int8': torch.int8, 'float16': torch.float16, 'float32': torch.float32,
             'int32': torch.int32, 'int64': torch.int64, 'bfloat16': torch.bfloat16, 'uint16': torch.int16,
             'int16': torch.int16}
    if name not in table:
        raise ValueError(f'dtype {dtype!r} has no torch view here; use one of {", ".join(table)}')
    return table[name]
