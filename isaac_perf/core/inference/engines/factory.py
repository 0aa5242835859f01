"""Pick and build an inference backend: one call for nodes, the CLI and benchmarks.

``create_engine('auto', ...)`` takes TensorRT when it is importable and there is a GPU, else torch when
CUDA is available, else onnxruntime on the CPU. An explicit backend whose library or GPU is missing falls
back the same way with a warning through `log` (``fallback=False`` raises EngineError instead), because a
robot should keep perceiving on a slower path rather than stop. A missing or corrupt model is never
fallen back from: it raises EngineError saying what to fix.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

from isaac_perf.core.inference.engines.base import (
    Engine,
    EngineError,
    EngineOptions,
    check_model_file,
    log_warning,
)

BACKENDS = ('auto', 'onnxruntime', 'torch', 'tensorrt')


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    """True when a CUDA GPU can be used from this process (torch first, NVML as the torch-less check)."""
    if _has_module('torch'):
        try:
            import torch
            return bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 - a broken CUDA install must read as 'no GPU', not crash
            return False
    from isaac_perf.core.telemetry.gpu import gpu_count
    return gpu_count() > 0


def tensorrt_available() -> bool:
    """True when the full TensorRT Python API (builder + ONNX parser) can be imported."""
    if not _has_module('tensorrt'):
        return False
    try:
        import tensorrt as trt
        return hasattr(trt, 'Builder') and hasattr(trt, 'OnnxParser')
    except Exception:  # noqa: BLE001
        return False


def available_backends() -> dict[str, bool]:
    """Which backends can run here, for `isaac-perf` status output and docs."""
    return {'onnxruntime': _has_module('onnxruntime'), 'torch': _has_module('torch'),
            'tensorrt': tensorrt_available(), 'cuda': cuda_available()}


def resolve_backend(backend: str, options: EngineOptions, log: Callable[[str], None] | None = None,
                    fallback: bool = True) -> tuple[str, EngineOptions]:
    """The backend and options that will really be used (after GPU / library fallbacks)."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if options.device not in ('auto', 'cpu', 'cuda') and not options.device.startswith('cuda:'):
        raise EngineError(f"unknown device '{options.device}': use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    has_gpu = options.device != 'cpu' and cuda_available()
    if options.device.startswith('cuda') and not has_gpu:
        log_warning(log, f"device '{options.device}' asked for but no CUDA GPU is usable here: "
                         'running on the CPU (slower; check the driver with nvidia-smi)')
        options = dataclasses.replace(options, device='cpu')

    def fall(reason: str) -> str:
        nxt = 'torch' if (has_gpu and _has_module('torch')) else 'onnxruntime'
        if not fallback:
            raise EngineError(f"backend '{backend}' cannot run: {reason}")
        log_warning(log, f"backend '{backend}' cannot run ({reason}): using '{nxt}' instead")
        return nxt

    if backend == 'auto':
        if has_gpu and tensorrt_available():
            chosen = 'tensorrt'
        elif has_gpu and _has_module('torch'):
            chosen = 'torch'
        else:
            chosen = 'onnxruntime'
    elif backend == 'tensorrt':
        if not tensorrt_available():
            chosen = fall('the TensorRT Python package (builder + OnnxParser) is not installed; install '
                          'TensorRT 10+ (pip install tensorrt) or choose backend onnxruntime/torch')
        elif not has_gpu:
            chosen = fall('TensorRT needs a CUDA GPU and none is usable')
        else:
            chosen = 'tensorrt'
    elif backend == 'torch' and not _has_module('torch'):
        chosen = fall('PyTorch is not installed (pip install torch)')
    else:
        chosen = backend
    if chosen in ('torch', 'onnxruntime') and options.device == 'auto':
        options = dataclasses.replace(options, device='cuda' if has_gpu else 'cpu')
    return chosen, options


def create_engine(backend: str, model_path: str, options: EngineOptions | None = None,
                  log: Callable[[str], None] | None = None, fallback: bool = True) -> Engine:
    """Load `model_path` (an ONNX file, or a built-in name 'resnet50' / 'detector') on `backend`.

    Raises EngineError for a missing/corrupt model, an unknown backend, input/output name mismatches,
    or (with fallback=False) a backend that cannot run here.
    """
    options = options or EngineOptions()
    from isaac_perf.core.inference.models import MODEL_NAMES, resolve_model
    if model_path in MODEL_NAMES:
        model_path = str(resolve_model(model_path))
    check_model_file(model_path)
    chosen, options = resolve_backend(backend, options, log, fallback)
    if chosen == 'onnxruntime':
        from isaac_perf.core.inference.engines.ort_engine import OnnxRuntimeEngine
        return OnnxRuntimeEngine(model_path, options, log)
    if chosen == 'torch':
        from isaac_perf.core.inference.engines.torch_engine import TorchEngine
        return TorchEngine(model_path, options, log)
    from isaac_perf.core.inference.engines.tensorrt_engine import TensorRTEngine
    return TensorRTEngine(model_path, options, log)
