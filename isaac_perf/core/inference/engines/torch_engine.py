"""PyTorch backend: the same ONNX model run by torch, on CUDA (FP16, channels-last, CUDA graphs, AOTInductor).

The ONNX graph is converted to a torch.fx module (:mod:`isaac_perf.core.inference.engines.onnx_to_torch`,
BatchNorm folded
into the convolutions). On a GPU the fast path stacks up as:

* ``precision='fp16'`` (or 'bf16'): weights and activations in half precision, on the tensor cores;
* channels-last (NHWC) memory format, the layout cuDNN's tensor-core convolutions want
  (``extra['channels_last']``, on by default on CUDA);
* ``cuda_graphs=True``: one CUDA graph captured per batch size, with static input/output buffers, so a
  batch is one graph launch instead of ~100 kernel launches from Python;
* ``compile='default' | 'max-autotune'``: AOTInductor ahead-of-time compilation per batch size
  (``extra['compile_batch_sizes']``, default ``(opt_batch_size or max_batch_size,)``), packaged to
  ``<cache_dir>/torch_aoti/*.pt2`` and keyed by model hash + precision + layout + shape + mode + GPU + torch
  version, so a restart loads the package in a second instead of compiling again (max-autotune takes
  minutes). A package whose sidecar or checksum does not match is rebuilt, never trusted.

On the CPU the engine runs FP32 eagerly (FP16/graphs/compile are GPU features and are ignored with a
warning), which is what the agreement tests use. Outputs are float32 torch tensors on the engine's device;
:func:`isaac_perf.core.inference.engines.base.to_numpy` brings them home.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

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
    random_feeds,
)
from isaac_perf.core.inference.engines.cache import cache_digest, validate_artifact, write_artifact

AOTI_FORMAT = 1  # bump when the package layout or the key's fields change


def _specs(values, initializers: set[str]) -> list[TensorSpec]:
    out = []
    for v in values:
        if v.name in initializers:
            continue
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField('dim_value') and d.dim_value > 0 else -1 for d in t.shape.dim)
        out.append(TensorSpec(v.name, shape, onnx_dtype(t.elem_type)))
    return out


class TorchEngine(Engine):
    """An ONNX model converted to torch, with the GPU fast paths above."""

    backend = 'torch'

    def __init__(self, model_path: str, options: EngineOptions | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        try:
            import torch
        except ImportError as e:
            raise EngineError('PyTorch is not installed: pip install torch, or use backend '
                              'onnxruntime') from e
        from isaac_perf.core.inference.engines.onnx_to_torch import convert
        self.torch = torch
        self.options = opts = options or EngineOptions()
        self._log = log
        self.model_path = str(model_path)
        model = load_onnx_model(model_path)
        inits = {i.name for i in model.graph.initializer}
        self._inputs = _specs(model.graph.input, inits)
        self._outputs = _specs(model.graph.output, set())
        check_names('input', opts.input_names, [s.name for s in self._inputs])
        check_names('output', opts.output_names, [s.name for s in self._outputs])
        self._device = self._pick_device(opts.device)
        cuda = self._device.type == 'cuda'
        self.precision = self._pick_precision(opts.precision, cuda)
        self.dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[self.precision]
        self.channels_last = bool(opts.extra.get('channels_last', cuda))
        self.use_graphs = bool(opts.cuda_graphs) and cuda
        if opts.cuda_graphs and not cuda:
            log_warning(log, 'cuda_graphs needs a CUDA device: ignored on the CPU')
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: pick the fastest conv algos
        try:
            module = convert(model)
        except EngineError:
            raise
        except Exception as e:  # noqa: BLE001 - a converter bug must still read as a model problem
            raise EngineError(f"cannot convert '{model_path}' to torch ({type(e).__name__}: {e}); "
                              'use backend onnxruntime for this model') from e
        self.folded_bn = int(getattr(module, 'folded_bn', 0))
        self.fused_convs = int(getattr(module, 'fused_convs', 0))
        module = module.eval().to(self._device, self.dtype)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        # cuDNN conv+bias(+add)+relu in one kernel: on by default on CUDA (extra['cudnn_fusion']=False: off)
        self.cudnn_fusion = cuda and bool(opts.extra.get('cudnn_fusion', True)) and self.fused_convs > 0
        if self.cudnn_fusion:
            self._check_fusion()
        self._model_sha = file_sha256(self.model_path)
        self._compiled: dict[int, Any] = {}
        self._graphs: dict[int, tuple[Any, list[Any], list[Any]]] = {}
        self._pool = None
        self.compile_seconds: dict[int, float] = {}
        if opts.compile not in ('none', '', None):
            if opts.compile not in ('default', 'max-autotune'):
                raise EngineError(f"compile='{opts.compile}': use 'none', 'default' or 'max-autotune'")
            sizes = opts.extra.get('compile_batch_sizes') or (opts.opt_batch_size or self.max_batch_size,)
            for b in sizes:
                self._compiled[int(b)] = self._load_or_compile(int(b), opts.compile)
            if self.use_graphs:
                log_warning(log, 'cuda_graphs applies to the batch sizes not compiled '
                                 f'({sorted(self._compiled)} '
                                 'run the AOTInductor package directly)')

    # -- setup -----------------------------------------------------------------------------------------------
    def _pick_device(self, device: str):
        torch = self.torch
        if device in ('auto', 'cuda') or device.startswith('cuda:'):
            if torch.cuda.is_available():
                return torch.device('cuda' if device == 'auto' else device)
            if device != 'auto':
                log_warning(self._log, f"device '{device}' asked for but torch sees no CUDA GPU "
                                       f'(torch {torch.__version__}): running on the CPU in FP32')
        elif device != 'cpu':
            raise EngineError(f"unknown device '{device}': use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return torch.device('cpu')

    def _pick_precision(self, precision: str, cuda: bool) -> str:
        if precision not in ('fp32', 'fp16', 'bf16', 'int8', 'fp8'):
            raise EngineError(f"precision '{precision}': use fp32, fp16, bf16 (torch), int8 or fp8 "
                              '(tensorrt)')
        if not cuda:
            if precision != 'fp32':
                log_warning(self._log, f"precision '{precision}' needs a GPU for the torch backend: "
                                       'FP32 on CPU')
            return 'fp32'
        if precision in ('int8', 'fp8'):
            log_warning(self._log, f"precision '{precision}' is not implemented by the torch backend "
                                   '(TensorRT builds INT8/FP8 engines): using fp16')
            return 'fp16'
        return precision

    def _check_fusion(self) -> None:
        """Turn the fused cuDNN kernels on, and off again with a warning if this cuDNN refuses them."""
        from isaac_perf.core.inference.engines.onnx_to_torch import set_cudnn_fusion
        set_cudnn_fusion(self.module, True)
        try:
            with self.torch.inference_mode():
                xs = [self._to_device(v) for v in random_feeds(self._inputs, 1).values()]
                self._forward(self.module, xs)
        except Exception as e:  # noqa: BLE001 - cuDNN reports unsupported fusions as RuntimeError
            set_cudnn_fusion(self.module, False)
            self.cudnn_fusion = False
            log_warning(self._log, f'cuDNN fused conv+bias+relu unavailable ({str(e)[:200]}): using separate '
                                   'kernels (slower)')

    # -- interface -------------------------------------------------------------------------------------------
    @property
    def max_batch_size(self) -> int:
        first = self._inputs[0].shape if self._inputs else ()
        if first and first[0] != -1:
            return int(first[0])
        return int(self.options.max_batch_size)

    def describe(self) -> dict[str, Any]:
        """What is really in use, for logs and diagnostics."""
        return {'backend': self.backend, 'device': self.device, 'precision': self.precision,
                'channels_last': self.channels_last, 'cuda_graphs': self.use_graphs,
                'compiled_batch_sizes': sorted(self._compiled), 'folded_bn': self.folded_bn,
                'fused_convs': self.fused_convs, 'cudnn_fusion': self.cudnn_fusion,
                'captured_batch_sizes': sorted(self._graphs), 'torch': self.torch.__version__}

    def _to_device(self, x: Any):
        torch = self.torch
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        t = t.to(self._device, self.dtype, non_blocking=True)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _forward(self, fn, xs):
        outs = fn(*xs)
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        return [o.float() for o in outs]  # outputs are float32 whatever the compute precision

    def _run(self, batch: int, feeds: Mapping[str, Any], clone: bool) -> list[Any]:
        xs = [self._to_device(feeds[s.name]) for s in self._inputs]
        fn = self._compiled.get(batch, self.module)
        if not self.use_graphs or fn is not self.module:
            # AOTInductor runners are not captured: their launcher failed CUDA-graph capture on the H100
            # (torch 2.11, cudaErrorStreamCaptureInvalidated), so compiled batch sizes run as they are.
            return self._forward(fn, xs)
        if batch not in self._graphs:
            self._capture(batch, fn, xs)
        graph, static_in, static_out = self._graphs[batch]
        for buf, x in zip(static_in, xs, strict=True):
            buf.copy_(x)
        graph.replay()
        # The static outputs are overwritten by the next replay: hand out copies unless asked not to.
        return [o.clone() for o in static_out] if clone else list(static_out)

    def _capture(self, batch: int, fn, xs) -> None:
        torch = self.torch
        static_in = [x.clone() for x in xs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture: cuDNN picks algorithms, allocations settle
            for _ in range(3):
                self._forward(fn, static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()  # one pool: graphs of all batch sizes share memory
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self._forward(fn, static_in)
        self._graphs[batch] = (graph, static_in, static_out)

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        batch = check_feeds(self._inputs, feeds, self.max_batch_size)
        with self.torch.inference_mode():
            outs = self._run(batch, feeds, clone=True)
        if self._device.type == 'cuda':
            self.torch.cuda.current_stream(self._device).synchronize()
        return {s.name: o for s, o in zip(self._outputs, outs, strict=True)}

    def infer_async(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, Any]:
        """Enqueue on `stream` (a torch.cuda.Stream; None = current). With cuda_graphs and
        ``extra['zero_copy']`` the outputs are the graph's static buffers, valid until the next call with the
        same batch size; otherwise they are fresh tensors."""
        if self._device.type != 'cuda':
            return self.infer(feeds)
        torch = self.torch
        batch = check_feeds(self._inputs, feeds, self.max_batch_size)
        clone = not self.options.extra.get('zero_copy', False)
        with torch.inference_mode(), torch.cuda.stream(stream or torch.cuda.current_stream(self._device)):
            outs = self._run(batch, feeds, clone=clone)
        return {s.name: o for s, o in zip(self._outputs, outs, strict=True)}

    def warmup(self, batch_sizes: tuple[int, ...] = (1,), iterations: int = 3) -> None:
        for b in batch_sizes:
            feeds = random_feeds(self._inputs, b)
            for _ in range(iterations):
                self.infer(feeds)

    def close(self) -> None:
        self._graphs.clear()
        self._compiled.clear()
        self.module = None
        if self._device.type == 'cuda':
            self.torch.cuda.empty_cache()

    # -- AOTInductor cache -----------------------------------------------------------------------------------
    def aoti_key(self, batch: int, mode: str) -> dict[str, Any]:
        """Everything a compiled package depends on; any change means a different file."""
        torch = self.torch
        gpu, cc = 'cpu', ''
        if self._device.type == 'cuda':
            props = torch.cuda.get_device_properties(self._device)
            gpu, cc = props.name, f'{props.major}.{props.minor}'
        shapes = [[batch if (i == 0 and d == -1) else d for i, d in enumerate(s.shape)] for s in self._inputs]
        return {'format': AOTI_FORMAT, 'model_sha256': self._model_sha, 'precision': self.precision,
                'channels_last': self.channels_last, 'input_shapes': shapes, 'mode': mode, 'gpu': gpu,
                'compute_capability': cc, 'torch': torch.__version__, 'cuda': str(torch.version.cuda)}

    def aoti_path(self, key: Mapping[str, Any]) -> str:
        root = os.path.join(self.options.cache_dir or default_cache_root(), 'torch_aoti')
        digest = cache_digest(key)
        stem = os.path.splitext(os.path.basename(self.model_path))[0]
        return os.path.join(root, f'{stem}_b{key["input_shapes"][0][0]}_{key["precision"]}_{digest}.pt2')

    def _load_or_compile(self, batch: int, mode: str):
        torch = self.torch
        key = self.aoti_key(batch, mode)
        path = self.aoti_path(key)
        why = validate_artifact(path, key)
        if why is None and not self.options.force_rebuild:
            try:
                t0 = time.perf_counter()
                runner = torch._inductor.aoti_load_package(path)
                self.compile_seconds[batch] = 0.0
                log_warning(self._log, f'loaded compiled model {path} in {time.perf_counter() - t0:.1f} s')
                return runner
            except Exception as e:  # noqa: BLE001 - a package that does not load is rebuilt
                why = f'it failed to load ({type(e).__name__}: {str(e)[:200]})'
        log_warning(self._log, f'compiling {os.path.basename(self.model_path)} for batch {batch} with '
                               f"AOTInductor mode '{mode}' ({why or 'force_rebuild'}); this runs once and is "
                               f'cached at {path}'
                               + (' - max-autotune takes minutes' if mode == 'max-autotune' else ''))
        t0 = time.perf_counter()
        example = tuple(self._to_device(v) for v in random_feeds(self._inputs, batch).values())
        from isaac_perf.core.inference.engines.onnx_to_torch import set_cudnn_fusion
        try:
            # Inductor fuses the element-wise ops itself and AOTInductor has no C shim for the cuDNN fused
            # ops, so the exported graph uses the plain conv + relu form.
            set_cudnn_fusion(self.module, False)
            with torch.inference_mode(False), torch.no_grad():
                ep = torch.export.export(self.module, example)
            set_cudnn_fusion(self.module, self.cudnn_fusion)
            configs = {'max_autotune': True} if mode == 'max-autotune' else {}
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix='.pt2', dir=os.path.dirname(path))
            os.close(fd)
            try:
                torch._inductor.aoti_compile_and_package(ep, package_path=tmp, inductor_configs=configs)
                write_artifact(tmp, path, key)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            runner = torch._inductor.aoti_load_package(path)
        except Exception as e:  # noqa: BLE001 - no compiler, unsupported op...: eager still works
            set_cudnn_fusion(self.module, self.cudnn_fusion)
            log_warning(self._log, f'AOTInductor compilation failed ({type(e).__name__}: {str(e)[:300]}): '
                                   f'batch {batch} runs eagerly')
            return self.module
        self.compile_seconds[batch] = time.perf_counter() - t0
        log_warning(self._log, f'compiled batch {batch} in {self.compile_seconds[batch]:.0f} s -> {path}')
        return runner

