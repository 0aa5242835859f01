"""The CUDA runtime interface implemented over cuda-python (cuda.bindings runtime API).
"""
from __future__ import annotations

import ctypes
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from isaac_perf.core.cuda.base import (
    Block,
    CudaArrayRef,
    CudaError,
    Event,
    Runtime,
    Stream,
    _check_copy,
    _check_kind,
    _host_view,
)

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
