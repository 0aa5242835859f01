"""TensorRT backend: build an engine from ONNX (cached on disk), run it with tensor-name I/O.

NOT RUN HERE: TensorRT's builder cannot be installed on the machines this project is developed and
benchmarked on, so this file is written against the documented TensorRT 10 / 11 Python API and tested
up to that boundary (cache keys, plan validation, corrupt files, the FP16 model rewrite, calibration
batching, progress reporting, and a clear EngineError when TensorRT is missing).

Build (``build_plan``):
* ``trt.Builder`` + ``trt.OnnxParser``; parser errors are reported with their node.
* One optimization profile per input for the dynamic batch axis: min 1, opt ``opt_batch_size`` (or max),
  max ``max_batch_size``.
* Precision: TensorRT 10 uses weak typing with ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` (INT8 with an
  entropy calibrator fed from sample frames, whose calibration cache is written next to the plan).
  TensorRT 11 removed those flags: networks are strongly typed, so FP16 is obtained by rewriting the ONNX
  model to FP16 first (``onnx_to_fp16``, onnxconverter-common's ``convert_float_to_float16`` with
  ``keep_io_types``: I/O stays FP32), and INT8 needs a model with explicit Q/DQ nodes.
* ``config.set_memory_pool_limit(WORKSPACE, workspace_mb)``, a timing cache file reused across builds,
  and an ``IProgressMonitor`` drawing tqdm bars while the builder works (minutes for big models).

Cache: ``<cache_dir>/tensorrt/<model>_<precision>_<digest>.plan`` (or ``engine_file_path``) with a JSON
sidecar holding model SHA-256 + precision + profile shapes + GPU name and compute capability + TensorRT
version + the plan's checksum; any mismatch rebuilds (see :mod:`.cache`).

Run: ``context.set_input_shape`` + ``context.set_tensor_address`` for every I/O tensor, then
``execute_async_v3(stream)``. Device buffers are torch CUDA tensors (torch is how this project reaches
CUDA from Python where TensorRT runs).

Types: ``trt`` is the real module for type checkers (``tensorrt-stubs`` 10.13, requirements/test.txt), so
mypy holds every call here against TensorRT's API (test/test_tensorrt_types.py). At run time TensorRT is
optional and imported on first use by ``import_tensorrt``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from isaac_perf.core.inference.engines.base import (
    Engine,
    EngineError,
    EngineOptions,
    TensorSpec,
    check_feeds,
    check_names,
    default_cache_root,
    file_sha256,
    load_onnx_model,
    log_warning,
    onnx_dtype,
)
from isaac_perf.core.inference.engines.cache import cache_digest, validate_artifact, write_artifact

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = None  # bound by import_tensorrt(): TensorRT is optional

PLAN_FORMAT = 1


def import_tensorrt():
    """The tensorrt module, or EngineError saying how to get it (or which backend to use instead)."""
    global trt
    try:
        import tensorrt as module
        if getattr(module, '__file__', None) is None:  # a namespace package: tensorrt-stubs' .pyi files only
            raise ImportError('only type stubs (tensorrt-stubs) are installed')
    except ImportError as e:
        raise EngineError('TensorRT is not installed (import tensorrt failed): install TensorRT 10 or 11 '
                          'with its Python bindings (pip install tensorrt-cu12 / tensorrt-cu13), or use '
                          "backend 'torch' (GPU) or 'onnxruntime' (CPU)") from e
    if not hasattr(module, 'Builder') or not hasattr(module, 'OnnxParser'):
        raise EngineError(f'this TensorRT {getattr(module, "__version__", "?")} has no Builder/OnnxParser '
                          '(a lean or dispatch runtime?): install the full TensorRT package to build engines')
    trt = module
    return module


def trt_major(version: str) -> int:
    """'10.13.0.35' -> 10."""
    try:
        return int(str(version).split('.')[0])
    except ValueError:
        return 0


def profile_shapes(specs: Sequence[TensorSpec], min_batch: int, opt_batch: int,
                   max_batch: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input for the dynamic batch axis; other dims must be static."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise EngineError(f'batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/'
                          f'{max_batch}: fix opt_batch_size / max_batch_size')
    out = {}
    for s in specs:
        if any(d == -1 for d in s.shape[1:]):
            raise EngineError(f"input '{s.name}' has dynamic non-batch dims {s.shape}: export the model "
                              "with a "
                              'fixed input size for TensorRT')
        fixed = s.shape[0] != -1

        def shape(b: int, s=s, fixed=fixed) -> tuple[int, ...]:
            return tuple(s.shape) if fixed else (b,) + tuple(s.shape[1:])
        out[s.name] = (shape(min_batch), shape(opt_batch), shape(max_batch))
    return out


def plan_cache_key(model_sha256: str, precision: str, shapes: Mapping[str, Any], gpu_name: str,
                   compute_capability: str, trt_version: str, strongly_typed: bool) -> dict[str, Any]:
    """Everything a serialized plan depends on: a plan is only reused when all of these match."""
    return {'format': PLAN_FORMAT, 'model_sha256': model_sha256, 'precision': precision,
            'profile': {k: [list(x) for x in v] for k, v in sorted(shapes.items())}, 'gpu': gpu_name,
            'compute_capability': compute_capability, 'tensorrt': trt_version,
            'strongly_typed': strongly_typed}


def plan_path(cache_dir: str, model_path: str, key: Mapping[str, Any]) -> str:
    stem = os.path.splitext(os.path.basename(model_path))[0]
    return os.path.join(cache_dir, 'tensorrt', f'{stem}_{key["precision"]}_{cache_digest(key)}.plan')


def onnx_to_fp16(model, keep_io_types: bool = True):
    """A copy of an FP32 ONNX model with FP16 weights and activations (TensorRT 11 strong typing).

    onnxconverter-common maintains the rules (ops that must stay FP32, Resize scales, Cast targets, value
    infos); with keep_io_types the graph keeps FP32 inputs/outputs and casts at the edges, so callers feed
    the same arrays as before.
    """
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError as e:
        raise EngineError('FP16 models for TensorRT 11 need onnxconverter-common: pip install '
                          "'isaac_perf[tensorrt]' (or onnxconverter-common), or use precision fp32") from e
    import onnx
    half = convert_float_to_float16(model, keep_io_types=keep_io_types)
    onnx.checker.check_model(half)
    return half


class CalibrationBatches:
    """Sample frames for INT8 calibration, served as fixed-size float32 batches.

    `data` is an [N, C, H, W] array (preprocessed like inference inputs) or the path of a .npy file holding
    one. The last partial batch is dropped (TensorRT asks for full batches).
    """

    def __init__(self, data: Any, batch_size: int) -> None:
        if isinstance(data, (str, os.PathLike)):
            if not os.path.isfile(data):
                raise EngineError(f"calibration data '{data}' does not exist: give a .npy file of "
                                  "preprocessed "
                                  'frames [N, C, H, W] (a few hundred frames from the target cameras)')
            data = np.load(data)
        arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
        if arr.ndim != 4 or arr.shape[0] < batch_size:
            raise EngineError(f'calibration data must be [N, C, H, W] with N >= batch size {batch_size}, got '
                              f'{arr.shape}')
        self.data = arr
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.data.shape[0] // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.data[i * self.batch_size:(i + 1) * self.batch_size]


class BuildProgress:
    """The bookkeeping behind TensorRT's IProgressMonitor, drawing one tqdm bar per build phase.

    Kept free of TensorRT so it is testable; ``make_progress_monitor`` wraps it in the trt interface.
    """

    def __init__(self, enabled: bool = True, cancel: Callable[[], bool] | None = None) -> None:
        self.enabled = enabled
        self.cancel = cancel or (lambda: False)
        self.bars: dict[str, Any] = {}
        self.depth: dict[str, int] = {}
        self.finished: list[str] = []

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
        self.depth[phase_name] = depth
        if self.enabled:
            from tqdm import tqdm
            self.bars[phase_name] = tqdm(total=num_steps, desc='  ' * depth + phase_name, position=depth,
                                         leave=depth == 0, unit='step')
        else:
            self.bars[phase_name] = [0, num_steps]

    def step_complete(self, phase_name: str, step: int) -> bool:
        bar = self.bars.get(phase_name)
        if bar is not None:
            if self.enabled:
                bar.n = step + 1
                bar.refresh()
            else:
                bar[0] = step + 1
        return not self.cancel()  # False asks TensorRT to stop the build

    def phase_finish(self, phase_name: str) -> None:
        bar = self.bars.pop(phase_name, None)
        if self.enabled and bar is not None:
            bar.close()
        self.finished.append(phase_name)


def make_progress_monitor(progress: BuildProgress) -> trt.IProgressMonitor:
    """A trt.IProgressMonitor forwarding to `progress` (documented TensorRT 10+ interface)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return _Monitor()


def make_calibrator(batches: CalibrationBatches, input_name: str, cache_file: str,
                    device: str = 'cuda') -> trt.IInt8EntropyCalibrator2:
    """An IInt8EntropyCalibrator2 (TensorRT 10) fed from `batches`, with its cache file read/written."""
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._iter = iter(batches)
            self._buf: Any = None  # the torch tensor TensorRT reads the current batch from

        def get_batch_size(self):
            return batches.batch_size

        def get_batch(self, names):
            try:
                b = next(self._iter)
            except StopIteration:
                return None
            self._buf = torch.from_numpy(b).to(device)  # kept alive until the next call
            return [int(self._buf.data_ptr())]

        def read_calibration_cache(self):
            if os.path.isfile(cache_file):
                with open(cache_file, 'rb') as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            os.makedirs(os.path.dirname(cache_file), exist_ok=True)
            with open(cache_file, 'wb') as f:
                f.write(bytes(cache))

    return _Calibrator()


def _onnx_specs(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inits = {i.name for i in model.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        return TensorSpec(v.name, tuple(d.dim_value if d.HasField('dim_value') and d.dim_value > 0 else -1
                                        for d in t.shape.dim), onnx_dtype(t.elem_type))
    ins = [spec(v) for v in model.graph.input if v.name not in inits]
    return ins, [spec(v) for v in model.graph.output]


class TensorRTEngine(Engine):
    """A TensorRT engine built from (or cached for) an ONNX model. Not run on this project's machines."""

    backend = 'tensorrt'

    def __init__(self, model_path: str, options: EngineOptions | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        import_tensorrt()
        try:
            import torch
        except ImportError as e:
            raise EngineError('the TensorRT backend uses torch for CUDA buffers and streams: pip install '
                              "torch, or use backend 'onnxruntime'") from e
        if not torch.cuda.is_available():
            raise EngineError("TensorRT needs a CUDA GPU and none is usable: use backend 'onnxruntime'")
        self.torch = torch
        self.options = opts = options or EngineOptions()
        self._log = log
        self.model_path = str(model_path)
        model = load_onnx_model(model_path)
        in_specs, out_specs = _onnx_specs(model)
        check_names('input', opts.input_names, [s.name for s in in_specs])
        check_names('output', opts.output_names, [s.name for s in out_specs])
        self._device = torch.device(opts.device if opts.device.startswith('cuda') else 'cuda')
        self.trt_logger = trt.Logger(trt.Logger.WARNING)
        self.strongly_typed = trt_major(trt.__version__) >= 11
        precision = opts.precision
        if precision not in ('fp32', 'fp16', 'int8'):
            raise EngineError(f"precision '{precision}' is not supported by the TensorRT backend: use fp32, "
                              "fp16 "
                              'or int8')
        self.precision = precision
        max_b = max(1, int(opts.max_batch_size))
        opt_b = min(max_b, int(opts.opt_batch_size) or max_b)
        self.shapes = profile_shapes(in_specs, 1, opt_b, max_b)
        props = torch.cuda.get_device_properties(self._device)
        key = plan_cache_key(file_sha256(self.model_path), precision, self.shapes, props.name,
                             f'{props.major}.{props.minor}', trt.__version__, self.strongly_typed)
        cache_dir = opts.cache_dir or default_cache_root()
        path = opts.extra.get('engine_file_path') or plan_path(cache_dir, self.model_path, key)
        self.plan_file = path
        self.runtime = trt.Runtime(self.trt_logger)
        engine = None
        why = 'force_engine_update is set' if opts.force_rebuild else validate_artifact(path, key)
        if why is None:
            with open(path, 'rb') as f:
                engine = self.runtime.deserialize_cuda_engine(f.read())
            if engine is None:
                why = 'TensorRT could not deserialize it'
        if engine is None:
            log_warning(log, f'building a TensorRT engine for {self.model_path} ({why}); it is cached at '
                             f'{path}')
            plan = self.build_plan(model, cache_dir)
            tmp = path + '.tmp'
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
            with open(tmp, 'wb') as f:
                f.write(plan)
            write_artifact(tmp, path, key)
            engine = self.runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise EngineError(f'TensorRT built a plan it cannot deserialize ({path}); check the '
                                  'TensorRT log '
                                  'above')
        self.engine: trt.ICudaEngine | None = engine
        self.context: trt.IExecutionContext | None = engine.create_execution_context()
        self._inputs, self._outputs = self._engine_specs(engine)
        self._stream = torch.cuda.Stream(self._device)

    # -- build -----------------------------------------------------------------------------------------------
    def build_plan(self, model, cache_dir: str) -> bytes:
        opts = self.options
        builder = trt.Builder(self.trt_logger)
        flags = 0
        if self.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if self.precision == 'fp16':
                model = onnx_to_fp16(model)  # TensorRT 11: precision lives in the graph
            elif self.precision == 'int8':
                raise EngineError('TensorRT 11 removed implicit INT8 calibration: quantize the ONNX model '
                                  'with explicit Q/DQ nodes (e.g. NVIDIA ModelOpt) and build it with '
                                  'precision fp32, '
                                  'or use TensorRT 10 for calibrated INT8')
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.trt_logger)
        if not parser.parse(model.SerializeToString()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f'TensorRT cannot parse {self.model_path}: ' + '; '.join(errors[:5])
                              + " - simplify the model (onnxsim) or use backend 'onnxruntime'")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in self.shapes.items():
            profile.set_shape(name, trt.Dims(list(mn)), trt.Dims(list(opt)), trt.Dims(list(mx)))
        config.add_optimization_profile(profile)
        if not self.strongly_typed:
            if self.precision in ('fp16', 'int8'):
                config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
            if self.precision == 'int8':
                data = opts.extra.get('calibration_data')
                if data is None:
                    raise EngineError("precision 'int8' needs calibration frames: set "
                                      "extra['calibration_data'] "
                                      'to an [N, C, H, W] array or .npy of preprocessed frames')
                config.set_flag(trt.BuilderFlag.INT8)
                first = next(iter(self.shapes))
                batches = CalibrationBatches(data, self.shapes[first][1][0])
                calib_file = os.path.splitext(self.plan_file)[0] + '.calib'
                config.set_calibration_profile(profile)
                config.int8_calibrator = make_calibrator(batches, first, calib_file, str(self._device))
        timing_path = os.path.join(cache_dir, 'tensorrt', 'timing.cache')
        blob = b''
        if os.path.isfile(timing_path):
            with open(timing_path, 'rb') as f:
                blob = f.read()
        timing = config.create_timing_cache(blob)
        config.set_timing_cache(timing, ignore_mismatch=True)  # a foreign cache is ignored, not fatal
        progress = BuildProgress(enabled=bool(opts.extra.get('progress', True)))
        config.progress_monitor = make_progress_monitor(progress)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f'TensorRT failed to build an engine for {self.model_path} (see its log '
                              'above); '
                              'try a larger workspace_mb, precision fp32, or backend torch')
        os.makedirs(os.path.dirname(timing_path), exist_ok=True)
        with open(timing_path + '.tmp', 'wb') as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
        os.replace(timing_path + '.tmp', timing_path)
        return bytes(plan)

    # -- run -------------------------------------------------------------------------------------------------
    @staticmethod
    def _engine_specs(engine: trt.ICudaEngine) -> tuple[list[TensorSpec], list[TensorSpec]]:
        ins: list[TensorSpec] = []
        outs: list[TensorSpec] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name)[:])
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            spec = TensorSpec(name, shape, dtype)
            (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(spec)
        return ins, outs

    @property
    def max_batch_size(self) -> int:
        first = next(iter(self.shapes.values()))
        return int(first[2][0])

    def infer_async(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, Any]:
        torch = self.torch
        context = self.context
        if context is None:
            raise EngineError(f'this TensorRT engine ({self.model_path}) is closed: create a new one')
        check_feeds(self._inputs, feeds, self.max_batch_size)
        stream = stream or self._stream
        keep = []
        with torch.cuda.stream(stream):
            for spec in self._inputs:
                x = feeds[spec.name]
                t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
                t = t.to(self._device, getattr(torch, spec.dtype), non_blocking=True).contiguous()
                keep.append(t)
                context.set_input_shape(spec.name, tuple(t.shape))
                context.set_tensor_address(spec.name, int(t.data_ptr()))
            outs = {}
            for spec in self._outputs:
                shape = context.get_tensor_shape(spec.name)[:]  # Dims slices to a tuple
                o = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=self._device)
                context.set_tensor_address(spec.name, int(o.data_ptr()))
                outs[spec.name] = o
            if not context.execute_async_v3(stream.cuda_stream):
                raise EngineError('TensorRT execute_async_v3 failed (see its log); check input shapes '
                                  'against '
                                  f'the engine profile {self.shapes}')
            for t in keep:
                t.record_stream(stream)  # inputs stay allocated until the stream has consumed them
            # FP16 outputs (strongly typed engines without I/O casts) become float32 like every backend's
            return {k: v.float() if v.is_floating_point() else v for k, v in outs.items()}

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        out = self.infer_async(feeds, self._stream)
        self._stream.synchronize()
        return out

    def close(self) -> None:
        self.context = None
        self.engine = None
