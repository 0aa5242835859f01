"""The one interface every inference backend implements (TensorRT, ONNX Runtime, PyTorch).

Arrays are the backend's native type: numpy on the CPU, torch tensors (or device buffers) on the GPU,
so a GPU pipeline never pays a host round trip between stages. `to_numpy` brings any of them home.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class EngineError(RuntimeError):
    """A model or engine cannot be loaded or run; the message says what to fix."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # -1 marks a dynamic dimension (the batch axis, usually)
    dtype: str  # numpy dtype name: 'float32', 'float16', 'int64', ...

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1


@dataclass
class EngineOptions:
    """Options shared by all backends; a backend ignores what does not apply to it (and says so)."""
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:N'
    precision: str = 'fp32'  # 'fp32', 'fp16', 'int8' (TensorRT), 'fp8' where supported
    max_batch_size: int = 8
    opt_batch_size: int = 0  # 0: same as max_batch_size
    cache_dir: str = ''  # where built engines / compiled artefacts are kept ('' = ~/.cache/isaac_perf)
    force_rebuild: bool = False
    cuda_graphs: bool = False
    compile: str = 'none'  # torch: 'none', 'default', 'max-autotune'
    workspace_mb: int = 4096
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """A loaded model ready to run batches."""

    backend: str = 'base'

    # Set by every backend's constructor; read through the properties below.
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]
    _device: Any

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def max_batch_size(self) -> int:
        return 1

    @abstractmethod
    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run one batch and wait for it; returns outputs by name."""

    def infer_async(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, Any]:
        """Enqueue one batch on `stream` (backend-native) and return without waiting.

        The outputs are valid once the stream has finished; record an event to know when.
        CPU backends run synchronously.
        """
        return self.infer(feeds)

    def warmup(self, batch_sizes: tuple[int, ...] = (1,), iterations: int = 3) -> None:
        """Run random inputs through each batch size so first-frame costs stay out of the pipeline."""
        for b in batch_sizes:
            feeds = random_feeds(self.inputs, b)
            for _ in range(iterations):
                self.infer(feeds)

    def close(self) -> None:
        """Release GPU memory and handles."""
        return None  # backends holding device memory override this


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the backends (kept here so every backend validates and reports the same way).

_ORT_TYPES = {
    'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(double)': 'float64',
    'tensor(int64)': 'int64', 'tensor(int32)': 'int32', 'tensor(int8)': 'int8', 'tensor(uint8)': 'uint8',
    'tensor(bool)': 'bool', 'tensor(bfloat16)': 'bfloat16',
}


def default_cache_root() -> str:
    """~/.cache/isaac_perf (or $ISAAC_PERF_CACHE): where engines, compiled artefacts and models live."""
    import os
    return os.environ.get('ISAAC_PERF_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'isaac_perf')


def to_numpy(x: Any):
    """Any backend's array (numpy, torch tensor on any device) as a numpy array on the host."""
    import numpy as np
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, 'detach'):  # torch.Tensor, without importing torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Content hash of a file: cache keys use it so an edited model never reuses a stale engine."""
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def check_names(kind: str, configured: tuple[str, ...], actual: list[str]) -> None:
    """Raise EngineError when configured tensor names (input_names/output_names) do not match the model."""
    if configured and list(configured) != list(actual):
        missing = [n for n in configured if n not in actual]
        raise EngineError(
            f'{kind} tensor name mismatch: configured {list(configured)} but the model has {list(actual)}'
            + (f' (not in the model: {missing})' if missing else ' (order differs)')
            + f'; set {kind}_tensor_names to {list(actual)} or leave it empty to take the model\'s names')


def check_feeds(specs: list[TensorSpec], feeds: Mapping[str, Any], max_batch: int = 0) -> int:
    """Validate names and shapes of one batch against the engine's inputs; returns the batch size.

    Errors name the tensor, what was given and what the model expects, so a node can log them as is.
    """
    names = [s.name for s in specs]
    if set(feeds) != set(names):
        unknown = sorted(set(feeds) - set(names))
        missing = sorted(set(names) - set(feeds))
        raise EngineError(f'input tensor name mismatch: got {sorted(feeds)}, the model expects {names}'
                          + (f'; unknown {unknown}' if unknown else '')
                          + (f'; missing {missing}' if missing else ''))
    batch = -1
    for spec in specs:
        shape = tuple(int(d) for d in feeds[spec.name].shape)
        if len(shape) != len(spec.shape):
            raise EngineError(f"input '{spec.name}' has shape {shape} but the model expects rank "
                              f'{len(spec.shape)} {spec.shape} (-1 = any size)')
        for i, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if want != -1 and got != want:
                raise EngineError(f"input '{spec.name}' has shape {shape} but the model expects {spec.shape} "
                                  f'(dimension {i} must be {want}); resize/pad the input to match')
        if shape and shape[0] < 1:
            raise EngineError(f"input '{spec.name}' has an empty batch {shape}: send at least one item")
        if spec.dynamic_batch and shape:
            if batch not in (-1, shape[0]):
                raise EngineError(f'inputs disagree on the batch size ({batch} vs {shape[0]})')
            batch = shape[0]
    if batch == -1:
        batch = int(specs[0].shape[0]) if specs and specs[0].shape else 1
    if max_batch and batch > max_batch:
        raise EngineError(f'batch of {batch} exceeds max_batch_size={max_batch}: split the batch or raise '
                          'max_batch_size (engines with a fixed profile need a rebuild)')
    return batch


def random_feeds(specs: list[TensorSpec], batch: int, seed: int = 0) -> dict[str, Any]:
    """Random (never zero) numpy inputs for warm-up and self-checks."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        shape = tuple(batch if (i == 0 and d == -1) else (d if d > 0 else 1) for i, d in enumerate(s.shape))
        dtype = 'float32' if s.dtype in ('bfloat16', '') else s.dtype
        if np.issubdtype(np.dtype(dtype), np.floating):
            out[s.name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[s.name] = rng.integers(0, 2, shape).astype(dtype)
    return out


def ort_dtype(type_str: str) -> str:
    """onnxruntime's 'tensor(float)' as the numpy name 'float32'."""
    return _ORT_TYPES.get(type_str, type_str)


def onnx_dtype(elem_type: int) -> str:
    """An ONNX TensorProto element type as a numpy dtype name."""
    import numpy as np
    from onnx import helper
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def log_warning(log: Any, message: str) -> None:
    """Send a warning through the caller's `log` callable, or the logging module when none was given."""
    if log is not None:
        log(message)
    else:
        import logging
        logging.getLogger('isaac_perf.engines').warning(message)


def check_model_file(path: str) -> str:
    """Raise EngineError unless `path` is an existing, non-empty file; returns it as a string."""
    import os
    p = os.path.expanduser(str(path))
    if not p or not os.path.isfile(p):
        raise EngineError(f"model file '{path}' does not exist: set model_file_path to an ONNX file, or to a "
                          "built-in model name ('resnet50', 'detector') to have one generated")
    if os.path.getsize(p) == 0:
        raise EngineError(f"model file '{path}' is empty (0 bytes): re-export or regenerate the model")
    return p


def load_onnx_model(path: str):
    """Load and check an ONNX file; a truncated or foreign file becomes an EngineError saying so."""
    import onnx
    p = check_model_file(path)
    try:
        model = onnx.load(p)
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - protobuf/checker raise many types; all mean 'bad file'
        raise EngineError(f"model file '{path}' is not a valid ONNX model ({type(e).__name__}: "
                          f'{str(e)[:200]}): re-export or regenerate it, or point model_file_path at a valid '
                          '.onnx file') from e
    return model
