"""The engines a batcher runs, one group per device of its `Placement`, and the scheduler over them.

`load_engines` creates, on each target device, one engine (or, with CUDA graphs, one per stream, each
with its own graph buffers), warms them at `graph_buckets` sizes, and closes whatever it built if any
step fails. `build_scheduler` wraps the groups in a `MultiDeviceScheduler` (one device per group,
least-loaded routing). No ROS here: stream_batcher calls both from its worker thread.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from isaac_perf.core.batching.compute import EngineCompute
from isaac_perf.core.batching.model import ModelPlan
from isaac_perf.core.batching.multi_device import ComputeDevice, MultiDeviceScheduler
from isaac_perf.core.batching.placement import device_limits, graph_buckets
from isaac_perf.core.cuda.base import CpuRuntime
from isaac_perf.core.inference.engines.base import Engine, EngineOptions
from isaac_perf.core.inference.node_params import model_path

Log = Callable[[str], None]


def on_device(target: str) -> AbstractContextManager:
    """torch's current device set to `target` ('cuda:N') while an engine is built there; else nothing."""
    if not target.startswith('cuda:'):
        return nullcontext()
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.device(target)
    except ImportError:
        pass
    return nullcontext()  # no CUDA here: create_engine falls back (with a warning) as before


@dataclass
class EngineSet:
    """The engines of every device (group 0 first), the model plan, and how they run."""
    per_device: list[list[Engine]]
    plan: ModelPlan
    graphs: bool           # CUDA graphs: one engine per stream, batches padded up to a bucket
    on_gpu: bool           # torch on CUDA: GPU runtimes, staging threads, several devices possible
    buckets: tuple[int, ...]
    # ms per batch on the first engine at each warmed size, timed at load (the tuner plans from it)
    batch_latency_ms: dict[int, float] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.per_device[0][0]

    @property
    def extra_engines(self) -> list[Engine]:
        """Every engine but the first (streams 1..K-1 with CUDA graphs, and the other GPUs)."""
        return [e for group in self.per_device for e in group][1:]

    def close(self) -> None:
        close_all(self.per_device)


def close_all(per_device: list[list[Engine]]) -> None:
    for group in per_device:
        for engine in group:
            engine.close()


def _options(values: Mapping[str, Any], target: str) -> EngineOptions:
    # A TensorRT profile is fixed at build: size it to max_batch_size (a larger one reloads). The others
    # take any batch, so ask for the largest a batcher can form.
    fixed_profile = values['backend'] == 'tensorrt'
    return EngineOptions(device=target, precision='fp16' if values['enable_fp16'] else 'fp32',
                         max_batch_size=int(values['max_batch_size']) if fixed_profile else 256,
                         cuda_graphs=bool(values['cuda_graphs']))


def warm_sizes(values: Mapping[str, Any]) -> tuple[int, ...]:
    """Batch sizes warmed (and CUDA graphs captured) at load: the buckets up to max_batch_size, or up to
    graph_max_batch_size when that is larger, so a tuner's batch changes up to it never reload."""
    return graph_buckets(max(int(values['max_batch_size']), int(values.get('graph_max_batch_size', 0))))


def engines_per_device(values: Mapping[str, Any]) -> int:
    """With CUDA graphs, one engine per stream: num_streams, or graph_streams when that is larger (so a
    num_streams change up to it needs no reload)."""
    return max(int(values['num_streams']), int(values.get('graph_streams', 0)))


def time_batches(engine: Engine, sizes: tuple[int, ...], runs: int = 5) -> dict[int, float]:
    """Median ms of one synchronous batch at each size (random inputs, already warmed): the engine's
    latency-per-batch curve. Failures leave a size out."""
    import time

    from isaac_perf.core.inference.engines.base import random_feeds
    out: dict[int, float] = {}
    for b in sizes:
        feeds = random_feeds(engine.inputs, b)
        times = []
        try:
            for _ in range(max(1, runs)):
                t0 = time.perf_counter()
                engine.infer(feeds)
                times.append((time.perf_counter() - t0) * 1000.0)
        except Exception:  # noqa: BLE001 - a size the engine cannot take is simply not on the curve
            continue
        times.sort()
        out[b] = max(1e-3, times[len(times) // 2])
    return out


def load_engines(values: Mapping[str, Any], live_values: Mapping[str, Any], targets: list[str],
                 log: Log) -> EngineSet:
    """Create and warm the engines on `targets`; raises what create_engine raises, having closed them.

    `values` is a snapshot of the node's parameters; `live_values` the node's own dict, so the plan's
    post-processing (top_k, thresholds) follows later parameter changes.
    """
    from isaac_perf.core.inference.engines.factory import create_engine
    sizes = warm_sizes(values)
    per_device: list[list[Engine]] = []
    plan, graphs, on_gpu = None, False, False
    try:
        path = model_path(values)
        for target in targets:
            options = _options(values, target)
            engines: list[Engine] = []
            per_device.append(engines)
            with on_device(target):  # weights, warm-up and CUDA graphs on that GPU
                engines.append(create_engine(values['backend'], path, options, log=log))
                if plan is None:
                    plan = ModelPlan(engines[0], live_values)
                    graphs = bool(getattr(engines[0], 'use_graphs', False))
                    on_gpu = str(engines[0].device).startswith('cuda') and engines[0].backend == 'torch'
                if graphs:  # one engine (and one set of graph buffers) per stream
                    engines += [create_engine(values['backend'], path, options, log=log)
                                for _ in range(engines_per_device(values) - 1)]
                if values['warmup_iterations'] or graphs:
                    for engine in engines:
                        engine.warmup(sizes, max(1, int(values['warmup_iterations'])))
            if not on_gpu:
                if len(targets) > 1:
                    log(f'{engines[0].backend} on {engines[0].device}: spreading over GPUs needs the torch '
                        f'backend on CUDA; using one engine (gpu_ids={targets} ignored)')
                break
    except BaseException:
        close_all(per_device)
        raise
    assert plan is not None  # targets is never empty: Placement gives at least `device`
    curve = time_batches(per_device[0][0], sizes) if values.get('measure_batch_latency', True) else {}
    return EngineSet(per_device, plan, graphs, on_gpu, sizes if graphs else (), curve)


def build_scheduler(engines: EngineSet, values: Mapping[str, Any],
                    live_values: Mapping[str, Any]) -> MultiDeviceScheduler:
    """A scheduler with one device per engine group: its runtime, streams, pools and batch limit."""
    from isaac_perf.core.cuda.runtime import create_runtime
    plan = engines.plan
    top_k = (lambda: int(live_values['top_k'])) if plan.task == 'classification' else 0
    limits = device_limits(list(values['max_batch_size_per_gpu']), len(engines.per_device))
    devices = []
    for group, limit in zip(engines.per_device, limits, strict=True):
        runtime = create_runtime('torch', device=str(group[0].device)) if engines.on_gpu else CpuRuntime()
        compute = [EngineCompute(e, plan.config, gpu=runtime.is_gpu, buckets=engines.buckets, topk=top_k)
                   for e in group]
        devices.append(ComputeDevice(runtime, compute, max_batch_size=limit))
    return MultiDeviceScheduler(devices, num_streams=int(values['num_streams']),
                                depth=int(values['buffers_per_stream']), policy=values['stream_policy'],
                                stage_threads=int(values['stage_threads']) if engines.on_gpu else 0)
