"""ONNX Runtime backend: the embedded default that works on any machine.

CPU by default. When the installed onnxruntime has the TensorRT or CUDA execution providers (the
onnxruntime-gpu wheel) and a GPU is asked for, they are put first in the provider list; a GPU request that
cannot be met runs on the CPU with a warning through `log`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from isaac_perf.core.inference.engines.base import (
    Engine,
    EngineError,
    EngineOptions,
    TensorSpec,
    check_feeds,
    check_model_file,
    check_names,
    default_cache_root,
    log_warning,
    ort_dtype,
    to_numpy,
)


def _spec(arg) -> TensorSpec:
    # Symbolic or unknown dims (str / None) are dynamic: -1, the TensorSpec convention.
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, ort_dtype(arg.type))


def _device_index(device: str) -> int:
    return int(device.split(':', 1)[1]) if device.startswith('cuda:') else 0


class OnnxRuntimeEngine(Engine):
    """An onnxruntime InferenceSession behind the Engine interface."""

    backend = 'onnxruntime'

    def __init__(self, model_path: str, options: EngineOptions | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a base requirement
            raise EngineError('onnxruntime is not installed: pip install onnxruntime '
                              '(or onnxruntime-gpu)') from e
        self._ort = ort
        self.options = options or EngineOptions()
        self._log = log
        path = check_model_file(model_path)
        self.model_path = path
        providers = self._providers()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(self.options.extra.get('intra_op_threads', 0))
        if threads > 0:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
        try:
            self.session = ort.InferenceSession(path, sess_options=so, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for every load failure
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise EngineError(f"onnxruntime cannot load model file '{model_path}' ({msg}): check that it "
                              'is a valid ONNX model (re-export or regenerate it) whose opset this '
                              f'onnxruntime {ort.__version__} supports') from e
        self._inputs = [_spec(a) for a in self.session.get_inputs()]
        self._outputs = [_spec(a) for a in self.session.get_outputs()]
        check_names('input', self.options.input_names, [s.name for s in self._inputs])
        check_names('output', self.options.output_names, [s.name for s in self._outputs])
        self._output_names = [s.name for s in self._outputs]
        used = self.session.get_providers()
        on_gpu = bool(used) and used[0] in ('CUDAExecutionProvider', 'TensorrtExecutionProvider')
        self._device = f'cuda:{_device_index(self.options.device)}' if on_gpu else 'cpu'
        if self._device == 'cpu' and self.options.precision != 'fp32':
            log_warning(log, f"onnxruntime on the CPU runs the model's own precision: precision="
                             f"'{self.options.precision}' is ignored (use the torch or tensorrt backend "
                             'for FP16)')
        if self.options.cuda_graphs or self.options.compile != 'none':
            log_warning(log, 'onnxruntime backend ignores cuda_graphs/compile (torch backend options)')

    def _providers(self) -> list:
        opts = self.options
        available = set(self._ort.get_available_providers())
        wants_gpu = opts.device == 'auto' or opts.device.startswith('cuda')
        providers: list = []
        if wants_gpu:
            dev = _device_index(opts.device)
            if 'TensorrtExecutionProvider' in available and opts.extra.get('ort_tensorrt', True):
                cache = os.path.join(opts.cache_dir or default_cache_root(), 'ort_trt')
                providers.append(('TensorrtExecutionProvider', {
                    'device_id': dev,
                    'trt_fp16_enable': opts.precision in ('fp16', 'int8'),
                    'trt_int8_enable': opts.precision == 'int8',
                    'trt_max_workspace_size': int(opts.workspace_mb) << 20,
                    'trt_engine_cache_enable': True,
                    'trt_engine_cache_path': cache,
                    'trt_timing_cache_enable': True,
                }))
            if 'CUDAExecutionProvider' in available:
                providers.append(('CUDAExecutionProvider', {'device_id': dev}))
            if not providers and opts.device.startswith('cuda'):
                log_warning(self._log, f"device '{opts.device}' asked for, but this onnxruntime "
                                       f'{self._ort.__version__} has no CUDA/TensorRT execution provider: '
                                       'running on the CPU (install onnxruntime-gpu, or use the torch '
                                       'backend)')
        providers.append('CPUExecutionProvider')
        return providers

    @property
    def max_batch_size(self) -> int:
        first = self._inputs[0].shape if self._inputs else ()
        if first and first[0] != -1:
            return int(first[0])  # a model exported with a fixed batch
        return int(self.options.max_batch_size)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, best first."""
        return list(self.session.get_providers())

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        check_feeds(self._inputs, feeds, self.max_batch_size)
        arrays = {}
        for spec in self._inputs:
            a = to_numpy(feeds[spec.name])
            if a.dtype.name != spec.dtype:
                a = a.astype(spec.dtype)  # e.g. float64 from a user's numpy code: ORT refuses the mismatch
            arrays[spec.name] = a
        try:
            results = self.session.run(self._output_names, arrays)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f'onnxruntime failed to run the batch: {str(e).splitlines()[0][:300]}') from e
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self.session = None
