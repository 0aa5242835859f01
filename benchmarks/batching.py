"""Multi-camera dynamic batching on K CUDA streams vs per-frame inference; memory pools vs raw allocation;
an event trace that shows copy/compute overlap.

Scenario: N virtual cameras (default 8, 640x480 rgb8, random frames) that capture in sync like a camera
rig, at --fps (30) and at "max rate" (--max-fps per camera, far beyond what the GPU can take, so every
queue stays full and the overload policy drops the oldest frames). Frames enter the pipeline in-process
with their capture time as arrival time (no ROS transport here: it is measured by the node benchmarks), so
latency = result ready - capture, including the queueing. Every mode sees the same cameras, the same
bounded per-camera queues (--queue-depth, drop-oldest) and the same model: ResNet-50
(core/inference/models.py) through the torch engine in FP16 on a GPU (onnxruntime on the CPU with --quick).

  a  per-frame sequential: one frame at a time, round-robin over cameras: pageable upload (.to(cuda)),
     preprocess, engine.infer (synchronous), top-5. What a per-camera callback does.
  b  dynamic batching (DynamicBatcher), one CUDA stream, double-buffered pinned/device pools.
  c  dynamic batching on K streams (each a copy + a compute stream), round-robin.

Reported per mode and rate: throughput (results/s over the measured window), p50/p90/p99/max latency,
mean batch size, dropped frames; and the ratio c/a. The target is c >= 4x a with p99 < 33 ms.

Memory pools (the seed's exercise 3): time of one allocation + release of a frame-sized and a batch-sized
buffer from the pools vs cudaHostAlloc/cudaFreeHost and cudaMalloc/cudaFree (cuda-python) and torch's
caching allocators; and the end-to-end effect: mode c with pools vs the same run where every buffer is a
fresh cudaMalloc/cudaHostAlloc freed after use (pool cache disabled).

Overlap: mode c runs (--trace-configs KxB) with CUDA events recorded at each upload's and each compute's
start and end per stream; each timeline is written next to --out as chrome://tracing JSON and as a PNG,
with the share of upload time hidden under compute and the GPU's busy fraction. Uploads can only hide
under compute when the GPU, not the host, is the bottleneck: `--image-size 448` (4x the FLOPs) shows it.

Modes b and c compute softmax + top-5 on the GPU (EngineCompute topk=5): 5 values per frame come back.
With CUDA graphs (rows marked so), each stream has its own engine (graph buffers are per engine) and
batches are zero-padded up to a power-of-two bucket. --sections picks parts: modes, graphs, pools, trace.

Multi-GPU (--gpus 1,2,4): mode c at max rate over each GPU count (one engine, runtime, streams and pools
per GPU; MultiDeviceScheduler routes each batch to the least-loaded GPU): throughput, p99, scaling vs the
first count, frames per GPU and mean SM utilisation per GPU (GpuSampler). Counts above the visible GPUs
are printed as skipped. docs/multi_gpu.md.

Physical floor: max(FLOPs / measured FP16 matmul rate, frame bytes / measured pinned H2D bandwidth).

Usage:  python3 benchmarks/batching.py --out results/batching.json          (GPU machine)
        python3 benchmarks/batching.py --quick                              (short; runs on a CPU too)
        python3 benchmarks/batching.py --sections modes --gpus 1,2          (multi-GPU scaling)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isaac_perf.core.batching.batcher import NS_PER_MS, BatchPolicy, DynamicBatcher, Frame  # noqa: E402
from isaac_perf.core.batching.compute import BatchPreprocessor, EngineCompute  # noqa: E402
from isaac_perf.core.batching.multi_device import ComputeDevice, MultiDeviceScheduler
from isaac_perf.core.batching.pipeline import MultiStreamPipeline
from isaac_perf.core.batching.scheduler import BatchScheduler
from isaac_perf.core.cuda.base import CpuRuntime, Runtime  # noqa: E402
from isaac_perf.core.cuda.pools import BufferPool, device_pool, host_pool  # noqa: E402
from isaac_perf.core.cuda.runtime import create_runtime, visible_gpus  # noqa: E402
from isaac_perf.core.cuda.streams import EventTrace, copy_compute_overlap, covered_ms  # noqa: E402
from isaac_perf.core.inference import models  # noqa: E402
from isaac_perf.core.inference.engines.base import EngineOptions, to_numpy  # noqa: E402
from isaac_perf.core.inference.engines.factory import create_engine  # noqa: E402
from isaac_perf.core.inference.postprocess import topk  # noqa: E402
from isaac_perf.core.inference.preprocess import PreprocessConfig  # noqa: E402

clock = time.perf_counter_ns


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float('nan')


def post_top5(outputs: dict[str, np.ndarray], frames: list[Frame]) -> list[Any]:
    n = len(frames)
    if 'topk_ids' in outputs:  # reduced on the device (EngineCompute topk=5)
        ids, scores = outputs['topk_ids'][:n], outputs['topk_scores'][:n]
    else:
        ids, scores = topk(np.asarray(outputs['logits'])[:n], 5)
    return [(ids[i], scores[i]) for i in range(n)]


# ------------------------------------------------------------------------------------------ cameras


class VirtualCameras:
    """N cameras capturing in sync at `fps`; `inject(now)` pushes every frame captured since last time.

    Only the newest `depth` frames of a burst can survive a drop-oldest queue of that depth, so older ones
    are counted as dropped here without being pushed (same outcome, no per-frame cost at 1000 FPS).
    """

    def __init__(self, frames: list[list[np.ndarray]], fps: float, depth: int, t0_ns: int) -> None:
        self.frames = frames
        self.period_ns = int(1e9 / fps)
        self.depth = depth
        self.t0 = t0_ns
        self.next_k = [0] * len(frames)
        self.skipped = 0
        self.produced = 0

    def inject(self, now_ns: int, push) -> None:
        k_max = (now_ns - self.t0) // self.period_ns
        for c, frames in enumerate(self.frames):
            k0 = self.next_k[c]
            if k_max < k0:
                continue
            count = k_max - k0 + 1
            skip = max(0, count - self.depth)
            self.skipped += skip
            self.produced += count
            for k in range(k0 + skip, k_max + 1):
                push(f'cam{c}', frames[k % len(frames)], self.t0 + k * self.period_ns)
            self.next_k[c] = k_max + 1

    def next_capture_ns(self) -> int:
        return self.t0 + min(self.next_k) * self.period_ns


# ------------------------------------------------------------------------------------------ runners


class SequentialRunner:
    """Mode a: per-frame, synchronous; the batcher is only the bounded round-robin queue (batch of 1)."""

    def __init__(self, engine, cfg: PreprocessConfig, gpu: bool, depth: int) -> None:
        self.engine = engine
        self.pre = BatchPreprocessor(cfg)
        self.gpu = gpu
        self.batcher = DynamicBatcher(BatchPolicy(max_batch_size=1, max_queue_delay_ns=0, queue_depth=depth))
        if gpu:
            import torch
            self.torch = torch

    def push(self, cam: str, data: np.ndarray, capture_ns: int) -> None:
        self.batcher.push(cam, data, capture_ns, capture_ns)

    def in_flight(self) -> int:
        return 0

    def has_capacity(self) -> bool:
        return True

    def step(self, now_ns: int) -> list[tuple[int, int, int]]:
        batch = self.batcher.poll(now_ns)
        if batch is None:
            return []
        frame = batch.frames[0]
        if self.gpu:
            torch = self.torch
            x = torch.from_numpy(frame.data).to('cuda')[None]  # pageable upload, as a callback would
            inp = self.pre.torch(x, 'rgb8', dtype=self.engine.dtype,
                                 channels_last=bool(getattr(self.engine, 'channels_last', False)))
            logits = to_numpy(self.engine.infer({'images': inp})['logits'])
        else:
            inp = self.pre.numpy(frame.data[None], 'rgb8')
            logits = self.engine.infer({'images': inp})['logits']
        post_top5({'logits': logits}, batch.frames)
        return [(frame.stamp_ns, clock(), 1)]

    def wait(self, now_ns: int) -> list[tuple[int, int, int]]:
        return self.step(now_ns)

    def next_deadline_ns(self) -> int | None:
        return self.batcher.next_deadline_ns()

    def close(self) -> dict:
        return {}


class PipelineRunner:
    """Modes b and c: DynamicBatcher -> BatchScheduler (K lanes, double-buffered pools) -> top-5."""

    def __init__(self, runtime: Runtime, engine, cfg: PreprocessConfig, streams: int, max_batch: int,
                 delay_ms: float, depth: int, trace: EventTrace | None = None,
                 host: BufferPool | None = None, device: BufferPool | None = None,
                 buckets: tuple[int, ...] = (), stage_threads: int = 0, topk_k: int = 5) -> None:
        # `engine` may be a list: one engine per stream (CUDA-graph engines keep per-call static buffers).
        engines = engine if isinstance(engine, list) else [engine]
        compute = [EngineCompute(e, cfg, gpu=runtime.is_gpu, buckets=buckets, topk=topk_k)
                   for e in engines[:streams]]
        self.scheduler = BatchScheduler(runtime, compute, num_streams=streams, depth=2, trace=trace,
                                        host=host, device=device,
                                        stage_threads=stage_threads if runtime.is_gpu else 0)
        self.batcher = DynamicBatcher(BatchPolicy(max_batch_size=max_batch,
                                                  max_queue_delay_ns=int(delay_ms * NS_PER_MS),
                                                  queue_depth=depth))
        self.pipeline = MultiStreamPipeline(self.batcher, self.scheduler, post=post_top5)

    def push(self, cam: str, data: np.ndarray, capture_ns: int) -> None:
        self.pipeline.push(cam, data, capture_ns, capture_ns, key=(data.shape[0], data.shape[1], 'rgb8'))

    def in_flight(self) -> int:
        return self.scheduler.in_flight

    def has_capacity(self) -> bool:
        return self.scheduler.has_capacity()

    def _rows(self, results) -> list[tuple[int, int, int]]:
        return [(r.stamp_ns, r.done_ns, r.batch_size) for r in results if not r.error]

    def step(self, now_ns: int) -> list[tuple[int, int, int]]:
        return self._rows(self.pipeline.step(now_ns))

    def wait(self, now_ns: int) -> list[tuple[int, int, int]]:
        return self._rows(self.pipeline.wait(now_ns))

    def next_deadline_ns(self) -> int | None:
        return self.batcher.next_deadline_ns()

    def close(self) -> dict:
        self.pipeline.drain(clock())
        host, dev = self.scheduler.host_pool.stats(), self.scheduler.device_pool.stats()
        leaks = self.scheduler.close()
        return {'host_pool': host.as_dict(), 'device_pool': dev.as_dict(),
                'leaks': {k: len(v) for k, v in leaks.items()}, 'host_waits': self.scheduler.host_waits}


class MultiGpuRunner(PipelineRunner):
    """Mode c over several GPUs: one engine, runtime, set of streams and pools per GPU, batches routed to
    the least-loaded GPU (MultiDeviceScheduler). `engines[i]` runs on `runtimes[i]`."""

    def __init__(self, runtimes: list[Runtime], engines: list, cfg: PreprocessConfig, streams: int,
                 max_batch: int, delay_ms: float, depth: int, stage_threads: int = 0,
                 topk_k: int = 5) -> None:
        devices = [ComputeDevice(rt, EngineCompute(e, cfg, gpu=rt.is_gpu, topk=topk_k))
                   for rt, e in zip(runtimes, engines, strict=True)]
        gpu = runtimes[0].is_gpu
        self.scheduler = MultiDeviceScheduler(devices, num_streams=streams, depth=2,
                                              stage_threads=stage_threads if gpu else 0)
        self.batcher = DynamicBatcher(BatchPolicy(max_batch_size=max_batch,
                                                  max_queue_delay_ns=int(delay_ms * NS_PER_MS),
                                                  queue_depth=depth))
        self.pipeline = MultiStreamPipeline(self.batcher, self.scheduler, post=post_top5)

    def close(self) -> dict:
        out = super().close()
        out['frames_per_device'] = list(self.scheduler.frames_per_device)
        return out


class UtilSampler:
    """GpuSampler in a thread while a run lasts: mean SM utilisation per GPU (NaN without NVML)."""

    def __init__(self, indices: list[int], period_s: float = 0.1) -> None:
        import threading

        from isaac_perf.core.telemetry.gpu import GpuSampler
        self._sampler = GpuSampler(indices=indices)
        self._values: dict[int, list[float]] = {i: [] for i in indices}
        self._stop = threading.Event()
        self._period = period_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for sample in self._sampler.sample():
                if sample.ok and sample.index in self._values:
                    self._values[sample.index].append(sample.util_percent)

    def __enter__(self) -> UtilSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sampler.close()

    def mean(self) -> dict[int, float]:
        return {i: float(np.mean(v)) if v else float('nan') for i, v in self._values.items()}


def parse_gpu_counts(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; raises a message saying what to write."""
    try:
        counts = sorted({int(x) for x in text.split(',') if x.strip()})
    except ValueError:
        raise SystemExit(f'--gpus {text!r}: give GPU counts separated by commas, e.g. 1,2,4') from None
    if not counts or counts[0] < 1:
        raise SystemExit(f'--gpus {text!r}: counts must be >= 1')
    return counts


def run_mode(runner, frames: list[list[np.ndarray]], fps: float, depth: int, warmup_s: float,
             duration_s: float) -> dict[str, Any]:
    """Drive `runner` with the virtual cameras for warmup + duration; measure over the duration."""
    t0 = clock() + 1_000_000
    cams = VirtualCameras(frames, fps, depth, t0)
    measure_from = t0 + int(warmup_s * 1e9)
    end = measure_from + int(duration_s * 1e9)
    rows: list[tuple[int, int, int]] = []
    while True:
        now = clock()
        if now >= end:
            break
        cams.inject(now, runner.push)
        got = runner.step(now)
        if got:
            rows += got
            continue
        if runner.in_flight():
            if not runner.has_capacity():
                rows += runner.wait(now)
            else:
                time.sleep(0.00005)
            continue
        wake = cams.next_capture_ns()
        deadline = runner.next_deadline_ns()
        if deadline is not None:
            wake = min(wake, deadline)
        wait_s = (wake - clock()) / 1e9
        if wait_s > 0:
            time.sleep(min(wait_s, 0.001))
    window = [(s, d, b) for s, d, b in rows if measure_from <= d < end]
    lat = [(d - s) / 1e6 for s, d, _ in window]
    dropped_batcher = sum(c.dropped for c in runner.batcher.stats().cameras.values())
    extra = runner.close()
    return {'fps_offered': fps * len(frames), 'throughput_fps': len(window) / duration_s,
            'frames': len(window), 'latency_ms_p50': pct(lat, 50), 'latency_ms_p90': pct(lat, 90),
            'latency_ms_p99': pct(lat, 99), 'latency_ms_max': max(lat) if lat else float('nan'),
            'latency_ms_mean': float(np.mean(lat)) if lat else float('nan'),
            'batch_size_mean': float(np.mean([b for _, _, b in window])) if window else float('nan'),
            'dropped': cams.skipped + dropped_batcher, 'produced': cams.produced, **extra}


def single_frame_logits(engine, pre: BatchPreprocessor, frame: np.ndarray, gpu: bool) -> np.ndarray:
    if gpu:
        import torch
        inp = pre.torch(torch.from_numpy(frame).cuda()[None], 'rgb8', dtype=engine.dtype,
                        channels_last=engine.channels_last)
    else:
        inp = pre.numpy(frame[None], 'rgb8')
    return to_numpy(engine.infer({'images': inp})['logits'])[0].astype(np.float64)


def check_correctness(runtime: Runtime, engine, cfg: PreprocessConfig, frames, gpu: bool) -> float:
    """Max relative error (L2) between a 4-camera batch through the pipeline and single-frame runs."""
    from isaac_perf.core.batching.pipeline import slice_outputs
    r = PipelineRunner(runtime, engine, cfg, 2, 4, 0.0, 8, topk_k=0)
    r.pipeline.post = slice_outputs
    for i in range(4):
        r.push(f'cam{i}', frames[i][1], i)
    got = r.pipeline.step(clock()) + r.pipeline.drain(clock())
    r.close()
    if len(got) != 4 or any(x.error for x in got):
        raise SystemExit(f'correctness check failed: {len(got)} results, errors {[x.error for x in got]}')
    pre = BatchPreprocessor(cfg)
    worst = 0.0
    for x in got:
        ref = single_frame_logits(engine, pre, frames[int(x.camera[3:])][1], gpu)
        err = np.linalg.norm(x.result['logits'].astype(np.float64) - ref) / np.linalg.norm(ref)
        worst = max(worst, float(err))
    if not worst < 2e-2:
        raise SystemExit(f'correctness check failed: batched logits differ by {worst:.2e} (relative)')
    # And the device-side top-5 names the same classes as a host top-5 of the single-frame logits.
    r = PipelineRunner(runtime, engine, cfg, 2, 4, 0.0, 8, topk_k=5)
    for i in range(4):
        r.push(f'cam{i}', frames[i][1], i)
    got = r.pipeline.step(clock()) + r.pipeline.drain(clock())
    r.close()
    for x in got:
        ref = single_frame_logits(engine, pre, frames[int(x.camera[3:])][1], gpu)
        same = len(set(np.asarray(x.result[0]).tolist()) & set(np.argsort(-ref)[:5].tolist()))
        if same < 4:  # FP16 may swap a near-tie at the edge of the top 5, not more
            raise SystemExit(f'correctness check failed: device top-5 shares {same}/5 classes with the host')
    return worst


# ------------------------------------------------------------------------------------- microbenches


def time_pairs(fn, iters: int) -> dict[str, float]:
    """Median / p99 microseconds of `fn()` (one allocation + release)."""
    for _ in range(min(5, iters)):
        fn()
    xs = []
    for _ in range(iters):
        t = time.perf_counter_ns()
        fn()
        xs.append((time.perf_counter_ns() - t) / 1e3)
    return {'median_us': pct(xs, 50), 'p99_us': pct(xs, 99), 'iters': iters}


def raw_cuda_runtime() -> Runtime | None:
    """The torch runtime with cudaMalloc / cudaHostAlloc per block (None without cuda-python)."""
    rt = create_runtime('torch', allocator='cuda')
    if getattr(rt, 'allocator', '') != 'cuda':
        print('cuda-python unavailable: the raw cudaMalloc/cudaHostAlloc rows are skipped', flush=True)
        return None
    return rt


def pool_microbench(runtime: Runtime, sizes: dict[str, int], quick: bool) -> list[dict[str, Any]]:
    rows = []
    n_raw = 20 if quick else 100
    n_pool = 200 if quick else 5000
    rt_cuda = raw_cuda_runtime() if runtime.is_gpu else None
    for label, n in sizes.items():
        kinds = ('pinned', 'device') if runtime.is_gpu else ('host', 'device')
        for kind in kinds:
            if rt_cuda is not None:
                def raw(kind=kind, n=n):
                    rt_cuda.free(rt_cuda.alloc(n, kind))
                api = 'cudaHostAlloc+cudaFreeHost' if kind == 'pinned' else 'cudaMalloc+cudaFree'
                rows.append({'size': label, 'bytes': n, 'kind': kind, 'method': api,
                             **time_pairs(raw, n_raw)})
            if runtime.is_gpu:
                import torch

                def torch_alloc(kind=kind, n=n):
                    t = (torch.empty(n, dtype=torch.uint8, pin_memory=True) if kind == 'pinned'
                         else torch.empty(n, dtype=torch.uint8, device='cuda'))
                    del t
                rows.append({'size': label, 'bytes': n, 'kind': kind, 'method': 'torch caching allocator',
                             **time_pairs(torch_alloc, n_pool)})
            else:
                def np_alloc(n=n):
                    np.empty(n, np.uint8)
                rows.append({'size': label, 'bytes': n, 'kind': kind, 'method': 'numpy empty',
                             **time_pairs(np_alloc, n_pool)})
            pool = BufferPool(rt_cuda or runtime, kind)

            def pooled(pool=pool, n=n):
                pool.acquire(n).release()
            rows.append({'size': label, 'bytes': n, 'kind': kind, 'method': 'isaac_perf BufferPool',
                         **time_pairs(pooled, n_pool), 'allocations': 0})
            rows[-1]['allocations'] = pool.stats().allocations
            pool.close()
    return rows


def measure_h2d_gbps(runtime: Runtime, nbytes: int) -> float:
    if not runtime.is_gpu:
        return float('nan')
    src, dst = runtime.alloc(nbytes, 'pinned'), runtime.alloc(nbytes, 'device')
    s = runtime.new_stream()
    times = []
    for _ in range(25):
        a = s.record()
        runtime.copy_async(dst, src, nbytes, s)
        b = s.record()
        b.synchronize()
        times.append(a.elapsed_ms(b))
    runtime.free(src)
    runtime.free(dst)
    return nbytes / (float(np.median(times[5:])) / 1e3) / 1e9


def measure_fp16_tflops() -> float:
    import torch
    n = 8192
    a = torch.randn(n, n, device='cuda', dtype=torch.float16)
    b = torch.randn(n, n, device='cuda', dtype=torch.float16)
    for _ in range(3):
        a @ b
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        a @ b
    e.record()
    e.synchronize()
    return 2 * n ** 3 * 10 / (s.elapsed_time(e) / 1e3) / 1e12


# ---------------------------------------------------------------------------------------------- plot


def plot_trace(spans, path: Path, window_ms: float = 25.0) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    spans = sorted(spans, key=lambda s: s.start_ms)
    if not spans:
        return
    start = spans[len(spans) // 3].start_ms  # a steady-state window, past the start-up
    shown = [s for s in spans if start <= s.start_ms <= start + window_ms]
    lanes = sorted({s.lane for s in shown})
    fig, ax = plt.subplots(figsize=(12, 0.5 + 0.45 * len(lanes)))
    colors = {'h2d': '#d62728', 'compute': '#1f77b4'}
    for s in shown:
        y = lanes.index(s.lane)
        ax.broken_barh([(s.start_ms - start, s.duration_ms)], (y - 0.35, 0.7),
                       color=colors.get(s.name, 'grey'))
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_xlabel('ms (CUDA events)')
    ax.set_title('uploads (red) overlap compute (blue) across streams')
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='results/batching.json')
    ap.add_argument('--quick', action='store_true', help='short runs (1 s each, no sweep); on a machine '
                    'without CUDA the model input is 32x32 (onnxruntime)')
    ap.add_argument('--cameras', type=int, default=8)
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--fps', type=float, default=30.0)
    ap.add_argument('--max-fps', type=float, default=1000.0, help='per camera, for the max-rate runs')
    ap.add_argument('--duration', type=float, default=4.0)
    ap.add_argument('--warmup', type=float, default=1.0)
    ap.add_argument('--streams', type=int, default=4, help='K for mode c')
    ap.add_argument('--max-batch', type=int, default=16)
    ap.add_argument('--delay-ms', type=float, default=2.0)
    ap.add_argument('--queue-depth', type=int, default=2, help='per camera (drop-oldest beyond it)')
    ap.add_argument('--stage-threads', type=int, default=4, help='threads for the copy into pinned staging')
    ap.add_argument('--sweep', default='', help='extra eager mode c configs KxB at max rate, e.g. 2x16,4x32')
    ap.add_argument('--graph-sweep', default='2x16,4x32,8x16',
                    help='extra CUDA-graph mode c configs KxB at max rate')
    ap.add_argument('--no-graphs', action='store_true', help='skip the CUDA-graph rows')
    ap.add_argument('--sections', default='modes,graphs,pools,trace',
                    help='what to run: modes (eager a/b/c), graphs (CUDA-graph a/b/c), pools, trace')
    ap.add_argument('--trace-configs', default='4x16,4x64',
                    help='KxB configs traced at max rate (the first is the headline c; a larger batch makes '
                         'the GPU, not the host, the bottleneck: then uploads can hide under compute)')
    ap.add_argument('--image-size', type=int, default=0, help='model input side; 0 = 224 (32 without CUDA)')
    ap.add_argument('--cudnn-benchmark', action='store_true', help='cuDNN autotuning (slow warm-up per size)')
    ap.add_argument('--model-dir', default=None)
    ap.add_argument('--gpus', default='', help='GPU counts for the multi-GPU scaling section, e.g. 1,2,4: '
                    'mode c at max rate over 1..N GPUs (one engine each, least-loaded routing); counts '
                    'above the visible GPUs are reported and skipped')
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 1.0), min(args.warmup, 0.3)
        args.sweep = args.graph_sweep = ''

    runtime = create_runtime('auto')  # torch on a GPU; the CPU fallback elsewhere
    gpu = runtime.is_gpu
    # The CPU run only exercises the code: a 32x32 ResNet-50 keeps it short. --image-size 448 (4x the
    # FLOPs) makes the GPU, not the host, the bottleneck, which is when uploads can hide under compute.
    image = args.image_size or (224 if gpu else 32)
    model_path = str(models.build_resnet50(image_size=image, cache_dir=args.model_dir))
    flops = models.model_flops(model_path)
    graph_engines = None
    if gpu:
        import torch
        engine = create_engine('torch', model_path, EngineOptions(device='cuda', precision='fp16',
                                                                  max_batch_size=256), fallback=False)
        if not args.no_graphs:
            t = time.perf_counter()
            configs = (args.graph_sweep + ',' + args.trace_configs).split(',')
            specs = [(args.streams, args.max_batch)] + [tuple(int(v) for v in x.split('x'))
                                                         for x in configs if x]
            top = max(b for _, b in specs)
            buckets = tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b < top) + (top,)
            opts = EngineOptions(device='cuda', precision='fp16', max_batch_size=256, cuda_graphs=True)
            engines = [create_engine('torch', model_path, opts, fallback=False)
                       for _ in range(max(k for k, _ in specs))]
            for e in engines:
                e.warmup(buckets, 1)  # captures one graph per bucket, outside the measurements
            graph_engines = (engines, buckets)
            print(f'{len(engines)} CUDA-graph engines, buckets {buckets}: {time.perf_counter() - t:.1f} s',
                  flush=True)
        torch.backends.cudnn.benchmark = args.cudnn_benchmark  # after the engines: each one turns it on
    else:
        engine = create_engine('onnxruntime', model_path, EngineOptions(device='cpu', max_batch_size=256))
    cfg = PreprocessConfig(width=image, height=image)
    env = {'python': platform.python_version(), 'runtime': runtime.describe(), 'engine': engine.backend,
           'engine_device': engine.device, 'cpus': os.cpu_count(), 'model': os.path.basename(model_path),
           'model_flops_per_image': flops, 'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    if gpu:
        import torch
        env.update(torch=torch.__version__, gpu=torch.cuda.get_device_name(0),
                   cudnn_benchmark=args.cudnn_benchmark)
    print(json.dumps(env), flush=True)
    rng = np.random.default_rng(0)
    frames = [[rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(4)]
              for _ in range(args.cameras)]

    # Warm every batch size the runs can produce, so no first-call cost lands in a measurement.
    t = time.perf_counter()
    sizes = sorted(set(range(1, max([args.max_batch] + [int(x.split('x')[1]) for x in
                                                        args.sweep.split(',') if x]) + 1)))
    pre = BatchPreprocessor(cfg)
    for b in sizes:
        x = np.stack([frames[0][0]] * b)
        if gpu:
            import torch
            inp = pre.torch(torch.from_numpy(x).cuda(), 'rgb8', dtype=engine.dtype,
                            channels_last=engine.channels_last)
            engine.infer({'images': inp})
        else:
            engine.infer({'images': pre.numpy(x, 'rgb8')})
    print(f'warm-up of batch sizes 1..{sizes[-1]}: {time.perf_counter() - t:.1f} s', flush=True)

    # Correctness first: a batch through the pipeline equals the same frames run one by one.
    worst = check_correctness(runtime, engine, cfg, frames, gpu)
    print(f'correctness: batched vs single-frame logits, max relative error {worst:.2e}', flush=True)

    results: dict[str, Any] = {'schema': 'isaac_perf.batching/1', 'args': vars(args), 'env': env,
                               'correctness_max_rel_error': worst, 'runs': []}

    out = Path(args.out)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=lambda o: o.tolist() if hasattr(o, 'tolist')
                                  else str(o)))

    def record(mode: str, rate: str, row: dict[str, Any], **extra) -> None:
        row = {'mode': mode, 'rate': rate, **extra, **row}
        results['runs'].append(row)
        save()
        print(f"{mode:<28} {rate:>4}: {row['throughput_fps']:8.1f} fps  p50 {row['latency_ms_p50']:7.2f}  "
              f"p99 {row['latency_ms_p99']:7.2f} ms  batch {row['batch_size_mean']:5.2f}  "
              f"dropped {row['dropped']}", flush=True)

    def measure(runner, fps: float, depth: int, warmup: float = args.warmup,
                duration: float = args.duration) -> dict[str, Any]:
        return run_mode(runner, frames, fps, depth, warmup, duration)

    def pipe(k: int, b: int, depth: int, rt: Runtime = runtime, **kw) -> PipelineRunner:
        return PipelineRunner(rt, engine, cfg, k, b, args.delay_ms, depth, stage_threads=args.stage_threads,
                              **kw)

    depth, big = args.queue_depth, args.max_batch
    sections = set(args.sections.split(','))
    for rate_name, fps in (('30', args.fps), ('max', args.max_fps)) if 'modes' in sections else ():
        record('a per-frame sequential', rate_name,
               measure(SequentialRunner(engine, cfg, gpu, depth), fps, depth))
        record('b batching, 1 stream', rate_name, measure(pipe(1, big, depth), fps, depth),
               streams=1, max_batch=big)
        record(f'c batching, {args.streams} streams', rate_name,
               measure(pipe(args.streams, big, depth), fps, depth), streams=args.streams, max_batch=big)
    for spec in [s for s in args.sweep.split(',') if s and 'modes' in sections]:
        k, b = (int(v) for v in spec.split('x'))
        d = max(depth, b // args.cameras)
        record(f'c sweep K={k} B={b}', 'max', measure(pipe(k, b, d), args.max_fps, d), streams=k, max_batch=b,
               queue_depth=d)

    # The same three modes with CUDA graphs: one engine per stream (a graph's static buffers must not be
    # shared by two streams), one graph per bucketed batch size (batches are zero-padded up to a bucket).
    g_engines: list = []
    if graph_engines:
        g_engines, buckets = graph_engines
    if graph_engines and 'graphs' in sections:
        gk = args.streams

        def gpipe(k: int, b: int, d: int, **kw) -> PipelineRunner:
            return PipelineRunner(runtime, g_engines, cfg, k, b, args.delay_ms, d, buckets=buckets,
                                  stage_threads=args.stage_threads, **kw)

        for rate_name, fps in (('30', args.fps), ('max', args.max_fps)):
            record('a per-frame sequential, CUDA graph', rate_name,
                   measure(SequentialRunner(g_engines[0], cfg, gpu, depth), fps, depth), graphs=True)
            record('b batching, 1 stream, CUDA graphs', rate_name, measure(gpipe(1, big, depth), fps, depth),
                   streams=1, max_batch=big, graphs=True)
            record(f'c batching, {gk} streams, CUDA graphs', rate_name,
                   measure(gpipe(gk, big, depth), fps, depth), streams=gk, max_batch=big, graphs=True)
        for spec in [s for s in args.graph_sweep.split(',') if s]:
            k, b = (int(v) for v in spec.split('x'))
            d = max(depth, b // args.cameras)
            record(f'c sweep K={k} B={b}, CUDA graphs', 'max', measure(gpipe(k, b, d), args.max_fps, d),
                   streams=k, max_batch=b, queue_depth=d, graphs=True)

    # Multi-GPU scaling: mode c at max rate over 1..N GPUs, throughput vs 1 GPU, utilisation per GPU.
    if args.gpus:
        results['gpu_scaling'] = gpu_scaling(args, model_path, cfg, frames, record, measure)

    # Memory pools: microbenchmarks and the end-to-end effect.
    frame_bytes = args.width * args.height * 3
    if 'pools' in sections:
        results['pool_microbench'] = pool_microbench(
            runtime, {'frame': frame_bytes, 'batch': frame_bytes * args.max_batch}, args.quick)
        for row in results['pool_microbench']:
            print(f"{row['size']:>5} {row['kind']:>6} {row['method']:<28} {row['median_us']:10.1f} us "
                  f"median {row['p99_us']:10.1f} us p99", flush=True)
    raw_rt = raw_cuda_runtime() if gpu and 'pools' in sections else None
    if raw_rt is not None:
        try:
            for label, cache in (('pools', None), ('no pools (cudaMalloc/cudaHostAlloc per buffer)', 0)):
                r = PipelineRunner(raw_rt, g_engines or engine, cfg, args.streams, big, args.delay_ms, depth,
                                   host=host_pool(raw_rt, max_cached_bytes=cache),
                                   device=device_pool(raw_rt, max_cached_bytes=cache),
                                   buckets=graph_engines[1] if graph_engines else (),
                                   stage_threads=args.stage_threads)
                record(f'c {label}' + (', CUDA graphs' if g_engines else ''), 'max',
                       measure(r, args.max_fps, depth), streams=args.streams, max_batch=big,
                       allocator='cuda-python', graphs=bool(g_engines))
        except Exception as exc:  # noqa: BLE001 - a failure here must not lose the other sections
            traceback.print_exc()
            print(f'end-to-end pool comparison failed: {exc}', flush=True)

    # Event traces of mode c: copy/compute overlap.
    results['traces'] = []
    for spec in [x for x in args.trace_configs.split(',') if x and 'trace' in sections]:
        k, b = (int(v) for v in spec.split('x'))
        d = max(depth, b // args.cameras)
        trace = EventTrace(runtime)
        traced = PipelineRunner(runtime, g_engines or engine, cfg, k, b, args.delay_ms, d, trace=trace,
                                buckets=graph_engines[1] if graph_engines else (),
                                stage_threads=args.stage_threads)
        row = measure(traced, args.max_fps, d, 0.2, min(args.duration, 1.0))
        trace.collect(block=True)
        overlap = copy_compute_overlap(trace.spans)
        stem = f'{out.stem}_trace_K{k}_B{b}'
        trace_path, plot_path = out.with_name(stem + '.json'), out.with_name(stem + '.png')
        trace.write_chrome_trace(trace_path)
        try:
            plot_trace(list(trace.spans), plot_path)
        except ImportError as exc:
            print(f'no PNG plot ({exc}); the chrome trace has the same data', flush=True)
        span = max(sp.end_ms for sp in trace.spans) - min(sp.start_ms for sp in trace.spans)
        entry = {'streams': k, 'max_batch': b, 'queue_depth': d, 'graphs': bool(g_engines),
                 'throughput_fps': row['throughput_fps'], 'latency_ms_p99': row['latency_ms_p99'],
                 'gpu_busy_fraction': covered_ms((sp.start_ms, sp.end_ms) for sp in trace.spans) / span
                 if span > 0 else float('nan'),
                 **overlap, 'files': [str(trace_path), str(plot_path)]}
        results['traces'].append(entry)
        save()
        print(f"trace K={k} B={b}: {overlap['copy_hidden_ms']:.1f} of {overlap['copy_ms']:.1f} ms of uploads "
              f"ran under compute ({overlap['copy_hidden_fraction']:.0%}), {int(overlap['num_copies'])} "
              f"batches, GPU busy {entry['gpu_busy_fraction']:.0%}, {row['throughput_fps']:.0f} fps, "
              f"p99 {row['latency_ms_p99']:.1f} ms", flush=True)

    # Physical floor and headline ratios.
    h2d = measure_h2d_gbps(runtime, frame_bytes * args.max_batch)
    floor: dict[str, float] = {'h2d_gbps': h2d, 'frame_bytes': frame_bytes}
    if gpu:
        tflops = measure_fp16_tflops()
        floor.update(fp16_tflops=tflops, compute_us_per_frame=flops / (tflops * 1e12) * 1e6,
                     copy_us_per_frame=frame_bytes / (h2d * 1e9) * 1e6)
        floor['floor_fps'] = 1e6 / max(floor['compute_us_per_frame'], floor['copy_us_per_frame'])
    results['floor'] = floor

    def find(mode: str, rate: str) -> dict[str, Any] | None:
        return next((r for r in results['runs'] if r['mode'] == mode and r['rate'] == rate), None)

    k = args.streams
    pairs = {'eager': ('a per-frame sequential', f'c batching, {k} streams'),
             'graphs': ('a per-frame sequential, CUDA graph', f'c batching, {k} streams, CUDA graphs'),
             'graphs c vs eager a': ('a per-frame sequential', f'c batching, {k} streams, CUDA graphs')}
    headline: dict[str, Any] = {}
    for rate in ('30', 'max'):
        for label, (a_mode, c_mode) in pairs.items():
            a, c = find(a_mode, rate), find(c_mode, rate)
            if a and c:
                headline[f'{rate} {label}'] = {
                    'throughput_ratio_c_over_a': c['throughput_fps'] / a['throughput_fps'],
                    'c_fps': c['throughput_fps'], 'a_fps': a['throughput_fps'],
                    'c_p99_ms': c['latency_ms_p99'], 'a_p99_ms': a['latency_ms_p99']}
    best = max((r for r in results['runs'] if r['rate'] == 'max' and r['mode'].startswith('c')
                and r['latency_ms_p99'] < 33.0), key=lambda r: r['throughput_fps'], default=None)
    if best:
        row = {'mode': best['mode'], 'throughput_fps': best['throughput_fps'],
               'p99_ms': best['latency_ms_p99']}
        for label, mode in (('over_a_eager', 'a per-frame sequential'),
                            ('over_a_graph', 'a per-frame sequential, CUDA graph')):
            a = find(mode, 'max')
            if a:
                row[f'ratio_{label}'] = best['throughput_fps'] / a['throughput_fps']
        if 'floor_fps' in floor:
            row['fraction_of_floor'] = best['throughput_fps'] / floor['floor_fps']
        headline['best c at max rate with p99 < 33 ms'] = row
    results['headline'] = headline
    print(json.dumps({'floor': floor, 'headline': headline}, indent=1, default=str), flush=True)
    save()
    print_table(results)
    return results


def gpu_scaling(args: argparse.Namespace, model_path: str, cfg: PreprocessConfig, frames, record,
                measure) -> dict[str, Any]:
    """The 8-camera mode c run at max rate per GPU count; scaling and per-GPU utilisation."""
    gpus = visible_gpus()
    available = len(gpus)
    counts = parse_gpu_counts(args.gpus)
    out: dict[str, Any] = {'visible_gpus': gpus, 'asked': counts, 'skipped': [], 'rows': []}
    for n in counts:
        if n > max(available, 1) or (n > 1 and not available):
            print(f'--gpus {n}: only {available} GPU(s) visible here ({", ".join(gpus) or "none"}): skipped',
                  flush=True)
            out['skipped'].append(n)
    depth, big = args.queue_depth, args.max_batch
    base = None
    for n in [c for c in counts if c not in out['skipped']]:
        if available:
            runtimes = [create_runtime('torch', device=f'cuda:{g}') for g in range(n)]
            engines = [create_engine('torch', model_path, EngineOptions(device=f'cuda:{g}', precision='fp16',
                                                                         max_batch_size=256), fallback=False)
                       for g in range(n)]
            sizes = tuple(sorted({min(1 << i, big) for i in range(9)}))
            for rt, e in zip(runtimes, engines, strict=True):
                with rt.use_device():
                    e.warmup(sizes, 1)
        else:
            runtimes = [CpuRuntime()]
            engines = [create_engine('onnxruntime', model_path,
                                     EngineOptions(device='cpu', max_batch_size=256))]
        runner = MultiGpuRunner(runtimes, engines, cfg, args.streams, big, args.delay_ms, depth,
                                stage_threads=args.stage_threads)
        with UtilSampler(list(range(n)) if available else []) as util:
            row = measure(runner, args.max_fps, depth)
        row['gpu_util_percent'] = util.mean()
        base = base or row['throughput_fps']
        row['scaling_vs_1_gpu'] = row['throughput_fps'] / base if base else float('nan')
        row['gpus'] = n
        record(f'c multi-GPU, {n} GPU(s)', 'max', row, streams=args.streams, max_batch=big)
        util_text = ', '.join(f'GPU{i} {u:.0f}%' for i, u in row['gpu_util_percent'].items()) or 'no NVML'
        print(f"  {n} GPU(s): x{row['scaling_vs_1_gpu']:.2f} vs the first count ({counts[0]}), "
              f"frames per device {row.get('frames_per_device')}, utilisation {util_text}", flush=True)
        out['rows'].append(row)
        for e in engines:
            e.close()
    if out['skipped']:
        out['note'] = (f'counts {out["skipped"]} not run: {available} GPU(s) visible; scaling beyond that '
                       'was not measured')
    return out


def print_table(results: dict[str, Any]) -> None:
    print('\n| mode | rate | throughput (fps) | p50 ms | p99 ms | max ms | mean batch | dropped |')
    print('|---|---|---:|---:|---:|---:|---:|---:|')
    for r in results['runs']:
        print(f"| {r['mode']} | {r['rate']} | {r['throughput_fps']:.1f} | {r['latency_ms_p50']:.2f} | "
              f"{r['latency_ms_p99']:.2f} | {r['latency_ms_max']:.2f} | {r['batch_size_mean']:.2f} | "
              f"{r['dropped']} |")
    for rate, h in results['headline'].items():
        print(f'{rate}: ' + ', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                                      for k, v in h.items()))
    if not math.isnan(results['floor'].get('h2d_gbps', float('nan'))):
        print('floor: ' + ', '.join(f'{k}={v:.4g}' for k, v in results['floor'].items()))


if __name__ == '__main__':
    main()
