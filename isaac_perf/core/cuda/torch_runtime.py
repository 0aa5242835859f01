"""The CUDA runtime interface implemented over torch (streams, events, pinned and device memory).
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
from isaac_perf.core.cuda.cudapy_runtime import _check, _cudart

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
