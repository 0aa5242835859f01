"""The CUDA runtime interface (blocks, events, streams, runtimes) and its CPU implementation.
"""
from __future__ import annotations

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
