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

    @property
    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @property
    @abstractmethod
    def device(self) -> str: ...

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

    def close(self) -> None:
        """Release GPU memory and handles."""
