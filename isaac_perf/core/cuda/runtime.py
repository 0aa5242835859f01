"""Pick a CUDA runtime: torch, cuda-python, or the CPU fallback; and list the visible GPUs.
"""
from __future__ import annotations

from isaac_perf.core.cuda.base import BACKENDS, CpuRuntime, Runtime, _log
from isaac_perf.core.cuda.cudapy_runtime import CudaPythonRuntime, _check, _cudart
from isaac_perf.core.cuda.torch_runtime import TorchRuntime

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
