"""Closed-loop tuning of the multi-camera batcher: from a bad configuration to the budget, vs a full sweep.

What runs: N synthetic cameras (a thread stamping frames at `--camera-fps` each, faster than the pipeline
can take them) feed the stream_batcher's own core in-process: `DynamicBatcher` -> `BatchScheduler` (K
streams, double buffering, pooled pinned/device memory) -> the engine (torch FP16 on a GPU, onnxruntime on
the CPU with --quick), driven by a worker thread exactly like the node's. `measure(config)` applies a
setting live (batcher.configure, set_num_streams, the reliable-input emulation) and reports throughput and
p50/p99 of capture-to-result latency over a window, counting only frames captured after the change (so a
window never credits the new setting with frames that queued under the old one).

Rows, all in one run:
- `bad start`: batch 1, one stream, queue_depth 100 per camera behind a reliable input (emulated: a KEEP_LAST
  transport history of the same depth that holds frames back instead of dropping them, like a reliable DDS
  reader that is late). This is the naive configuration.
- `tuned`: `RealtimeController` (what the qos_tuner node runs) from the bad start, one window per step:
  time to the first window within budget, time to convergence, throughput before/after.
- `sweep best`: every (batch, streams, delay) of the grid, measured the same way (warm-up window, then
  the measured window); the best throughput with p99 <= budget. Target: tuned >= 90 % of it, in < 30 s.
- `hill climb (replay)`: the offline quick search replayed on the sweep's measurements: trials it needs.
- `ceiling`: the engine alone at the largest batch on device-resident input (no cameras, no copies): the
  physical limit of this model on this machine. Ratios to it are printed.

`--qos` measures the QoS trade-offs the advisor cites (core/tuning/qos.py TRADE_OFFS) over real DDS between
two rclpy processes on one host: (a) a 640x480 rgb8 stream at 60 Hz into a subscriber that needs 25 ms per
frame (a saturated consumer), reliable depth 100 vs best effort depth 1; (b) 1920x1080 rgb8 at 15 Hz into a
fast subscriber, reliable vs best effort. Needs rclpy (the ROS wheels); runs on the CPU.

Usage (GPU machine):  python3 benchmarks/tuning.py --out $OUT/tuning.json --plot $OUT/tuning_trajectory.png
Here (CPU, small model): python3 benchmarks/tuning.py --quick
QoS trade-offs (here):  python3 benchmarks/tuning.py --qos --out results/tuning_qos.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isaac_perf.core.batching.batcher import NS_PER_MS, BatchPolicy, DynamicBatcher  # noqa: E402
from isaac_perf.core.tuning.controller import RealtimeController
from isaac_perf.core.tuning.knobs import PipelineState, Requirements, batcher_knobs
from isaac_perf.core.tuning.search import (
    Axis,
    Constraints,
    Measurement,
    SearchSpace,
    TrialRunner,
    exhaustive_search,
    hill_climb,
    powers_of_two,
)

BAD_START = {'max_batch_size': 1, 'max_queue_delay_ms': 0.0, 'num_streams': 1, 'queue_depth': 100,
             'input_reliability': 'reliable'}


# ------------------------------------------------------------------------------------------------ rig

class Rig:
    """Cameras -> batcher -> K streams -> engine, running on two threads like the stream_batcher node."""

    def __init__(self, engine: Any, preprocess: Any, gpu: bool, cameras: int, camera_fps: float,
                 width: int, height: int, depth: int = 2) -> None:
        from isaac_perf.core.batching.compute import EngineCompute
        from isaac_perf.core.batching.pipeline import MultiStreamPipeline
        from isaac_perf.core.batching.scheduler import BatchScheduler
        from isaac_perf.core.cuda.runtime import create_runtime

        self.engine = engine
        self.runtime = create_runtime('torch' if gpu else 'cpu', device=str(engine.device) if gpu else 'cuda')
        self.compute = EngineCompute(engine, preprocess, gpu=self.runtime.is_gpu)
        self.batcher = DynamicBatcher(BatchPolicy(max_batch_size=1, max_queue_delay_ns=0, queue_depth=1))
        self.scheduler = BatchScheduler(self.runtime, self.compute, num_streams=1, depth=depth)
        self.pipe = MultiStreamPipeline(self.batcher, self.scheduler, post=lambda outputs, frames: [None] *
                                        len(frames))
        self.cameras = [f'/camera_{i}/image_raw' for i in range(cameras)]
        rng = np.random.default_rng(7)
        self.frames = [[rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
                       for _ in range(cameras)]
        self.period_ns = int(1e9 / camera_fps)
        self.config: dict[str, Any] = {}
        self.reliable = False
        self.transport = [deque() for _ in self.cameras]  # emulated reliable history per camera
        self._lock = threading.Lock()
        self._results: list[tuple[int, float, int, int, float]] = []  # stamp, latency, batch id, size, ms
        self._dropped = 0
        self._skipped = 0
        self._errors = 0
        self._pending_streams: int | None = None
        self._changed_ns = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads = [threading.Thread(target=self._cameras_loop, daemon=True, name='cameras'),
                         threading.Thread(target=self._worker_loop, daemon=True, name='worker')]

    # -- control --------------------------------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=10.0)
        self.scheduler.close()

    def apply(self, config: dict[str, Any]) -> None:
        """Set a configuration live, as the node does on a parameter change."""
        config = {**BAD_START, **self.config, **config}
        self.batcher.configure(max_batch_size=int(config['max_batch_size']),
                               max_queue_delay_ns=int(round(float(config['max_queue_delay_ms']) * NS_PER_MS)),
                               queue_depth=int(config['queue_depth']))
        self._pending_streams = int(config['num_streams'])  # the worker owns the scheduler
        with self._lock:
            was_reliable = self.reliable
            self.reliable = config['input_reliability'] == 'reliable'
            for q in self.transport:
                # KEEP_LAST history of the new depth
                while len(q) > int(config['queue_depth']):
                    q.popleft()
                    self._dropped += 1
            if was_reliable and not self.reliable:
                self._feed(time.perf_counter_ns(), everything=True)
            self._changed_ns = time.perf_counter_ns()
            self._results.clear()
        self.config = config
        self._wake.set()

    def window(self, seconds: float, fresh_timeout_s: float = 20.0) -> Measurement:
        """One measurement window, started once the first frame captured after the last change is out."""
        deadline = time.monotonic() + fresh_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                fresh = any(r[0] >= self._changed_ns for r in self._results)
                self._results = [r for r in self._results if r[0] >= self._changed_ns]
            if fresh:
                break
            time.sleep(0.005)
        with self._lock:
            self._results.clear()
            dropped0 = self._dropped
            errors0 = self._errors
        t0 = time.perf_counter()
        time.sleep(seconds)
        with self._lock:
            results, self._results = self._results, []
            dropped = self._dropped - dropped0
            errors = self._errors - errors0
        duration = time.perf_counter() - t0
        lat = [r[1] for r in results]
        batches = {r[2]: (r[3], r[4]) for r in results}
        busy_ms = sum(ms for _, ms in batches.values())
        m = Measurement.from_latencies(lat, duration, dropped=dropped,
                                       gpu_util_pct=min(100.0, 100.0 * busy_ms / (duration * 1000.0)),
                                       error='' if not errors else f'{errors} batch errors')
        sizes = [size for size, _ in batches.values()]
        m.__dict__['mean_batch'] = sum(sizes) / len(sizes) if sizes else math.nan
        return m

    def measure(self, config: dict[str, Any], warmup_s: float, seconds: float) -> Measurement:
        self.apply(config)
        if warmup_s > 0:
            self.window(warmup_s)
        return self.window(seconds)

    # -- threads --------------------------------------------------------------------------------------
    def _feed(self, now: int, everything: bool = False) -> None:
        """Reliable emulation: move held frames into the batcher while it has room (caller holds _lock)."""
        if not any(self.transport):
            return
        stats = self.batcher.stats().cameras
        depth = self.batcher.policy.queue_depth
        for cam, q in zip(self.cameras, self.transport, strict=True):
            queued = stats[cam].queued if cam in stats else 0
            while q and (everything or queued < depth):
                data, stamp = q.popleft()
                self._dropped += len(self.pipe.push(cam, data, stamp, now))
                queued += 1

    def _cameras_loop(self) -> None:
        start = time.perf_counter_ns()
        n = len(self.cameras)
        nxt = [start + i * self.period_ns // n for i in range(n)]
        count = 0
        while not self._stop.is_set():
            now = time.perf_counter_ns()
            pushed = False
            for c, cam in enumerate(self.cameras):
                if now - nxt[c] > 50 * self.period_ns:  # far behind (host stalled): a camera drops frames
                    behind = (now - nxt[c]) // self.period_ns
                    nxt[c] += behind * self.period_ns
                    with self._lock:
                        self._skipped += int(behind)
                while nxt[c] <= now:
                    stamp = nxt[c]
                    nxt[c] += self.period_ns
                    count += 1
                    data = self.frames[c][count % len(self.frames[c])]
                    with self._lock:
                        if self.reliable:
                            q = self.transport[c]
                            if len(q) >= max(1, int(self.config.get('queue_depth', 1))):
                                q.popleft()  # KEEP_LAST: the history itself overflows
                                self._dropped += 1
                            q.append((data, stamp))
                        else:
                            self._dropped += len(self.pipe.push(cam, data, stamp, now))
                    pushed = True
            if self.reliable:
                with self._lock:
                    self._feed(now)
            if pushed:
                self._wake.set()
            sleep_ns = min(nxt) - time.perf_counter_ns()
            if sleep_ns > 0:
                time.sleep(sleep_ns / 1e9)

    def _record(self, results: list[Any]) -> None:
        if not results:
            return
        with self._lock:
            for r in results:
                if r.error:
                    self._errors += 1
                    continue
                self._results.append((r.stamp_ns, (r.done_ns - r.stamp_ns) / 1e6, r.batch_id, r.batch_size,
                                      r.device_ms.get('compute', 0.0)))
            if self.reliable:
                self._feed(time.perf_counter_ns())

    def _step(self, now: int) -> list[Any]:
        """MultiStreamPipeline.step with at most one batch per stream sent per call.

        pipe.step() dispatches while a batch is due and a lane has room; on the synchronous CPU runtime a
        lane always has room, so with saturated input it never returns and nothing is collected. Bounding
        the batches per step keeps the same order of work on both runtimes.
        """
        pipe = self.pipe
        for _ in range(max(1, self.scheduler.num_streams)):
            if not self.scheduler.has_capacity():
                break
            with pipe._lock:
                batch = self.batcher.poll(now)
            if batch is None:
                break
            pipe._submit(batch)
        pipe._absorb(self.scheduler.poll())
        return pipe._ready()

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            if self._pending_streams is not None:
                k, self._pending_streams = self._pending_streams, None
                self.scheduler.set_num_streams(k)
            self._record(self._step(time.perf_counter_ns()))
            now = time.perf_counter_ns()
            if self.scheduler.in_flight:
                if not self.scheduler.has_capacity():
                    self._absorb_oldest()
                    continue
                timeout = 0.0005
            else:
                deadline = self.batcher.next_deadline_ns()
                timeout = 0.05 if deadline is None else max(0.0, (deadline - now) / 1e9)
            if timeout > 0:
                self._wake.wait(timeout)
            self._wake.clear()

    def _absorb_oldest(self) -> None:
        """Every lane is full: wait for the oldest batch and deliver what finished."""
        self.pipe._absorb(self.scheduler.wait_one())
        self._record(self.pipe._ready())


# --------------------------------------------------------------------------------------------- setup

def build(args: argparse.Namespace) -> tuple[Any, Any, bool, str]:
    """The engine, its preprocessing, whether it runs on a GPU, and a description."""
    from isaac_perf.core.inference import models
    from isaac_perf.core.inference.engines.base import EngineOptions
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.preprocess import PreprocessConfig

    if args.model == 'resnet50':
        path = models.build_resnet50(image_size=args.model_size)
        preprocess = PreprocessConfig(width=args.model_size, height=args.model_size)
    else:
        path = models.build_detector(height=args.model_size, width=args.model_size, num_classes=8)
        preprocess = PreprocessConfig.for_detector(args.model_size, args.model_size)
    options = EngineOptions(device=args.device, precision=args.precision, max_batch_size=256,
                            cuda_graphs=args.cuda_graphs)
    engine = create_engine(args.backend, str(path), options, log=lambda m: print(f'[engine] {m}'))
    gpu = str(engine.device).startswith('cuda') and engine.backend == 'torch'
    sizes = tuple(range(1, args.max_batch + 1)) if gpu else powers_of_two(1, args.max_batch)
    engine.warmup(sizes, 2)  # every size a batch can take, so no window pays a first-shape cost
    return engine, preprocess, gpu, f'{args.model} {args.model_size}px {engine.backend} {args.precision} ' \
                                    f'on {engine.device}'


def ceiling_fps(engine: Any, preprocess: Any, gpu: bool, batch: int, seconds: float = 2.0) -> float:
    """The engine alone on device-resident input at `batch`: the physical limit of the model here."""
    spec = engine.inputs[0]
    shape = (batch, spec.shape[1], preprocess.height, preprocess.width)
    if gpu:
        import torch
        dtype = getattr(engine, 'dtype', None) or torch.float16
        x = torch.randn(shape, device=engine.device, dtype=dtype)
        if getattr(engine, 'channels_last', False):
            x = x.contiguous(memory_format=torch.channels_last)
        feeds = {spec.name: x}
        for _ in range(3):
            engine.infer_async(feeds)
        torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                engine.infer_async(feeds)
            n += 10
            torch.cuda.synchronize()
        return n * batch / (time.perf_counter() - t0)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    engine.infer({spec.name: x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.infer({spec.name: x})
        n += 1
    return n * batch / (time.perf_counter() - t0)


def sweep_space(args: argparse.Namespace) -> SearchSpace:
    return SearchSpace([Axis('max_batch_size', powers_of_two(1, args.max_batch)),
                        Axis('num_streams', tuple(range(1, args.max_streams + 1))),
                        Axis('max_queue_delay_ms', tuple(float(d) for d in args.delays))])


def grid_config(config: dict[str, Any], cameras: int) -> dict[str, Any]:
    # per-camera queues that hold exactly one batch's share; a best-effort input
    return {**config, 'queue_depth': max(1, math.ceil(int(config['max_batch_size']) / cameras)),
            'input_reliability': 'best_effort'}


# ------------------------------------------------------------------------------------------- phases

def tune(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    """The closed loop from the bad start, one window per controller step."""
    knobs = batcher_knobs(batch=(1, args.max_batch), delay_ms=(0.0, max(args.delays)),
                          streams=(1, args.max_streams), depth=(1, 1000))
    ctl = RealtimeController(Requirements(max_latency_ms=args.budget_ms), knobs, cooldown_s=0.0, settle_s=0.0,
                             headroom=args.headroom, margin=args.margin, min_gain=args.min_gain,
                             confirm_windows=2)
    rig.apply(BAD_START)
    t0 = time.monotonic()
    trajectory = []
    first_ok = converged = None
    while time.monotonic() - t0 < args.tune_seconds:
        m = rig.window(args.window_s)
        now = time.monotonic() - t0
        state = PipelineState.from_measurement(rig.config, m, cameras=len(rig.cameras),
                                               mean_batch=m.__dict__.get('mean_batch', math.nan))
        d = ctl.step(now, state)
        row = {'t_s': round(now, 3), 'p99_ms': m.latency_p99_ms, 'p50_ms': m.latency_p50_ms,
               'fps': m.throughput_fps, 'dropped': m.dropped, 'config': dict(rig.config), 'action': d.action,
               'reason': d.reason, 'change': d.change.as_dict() if d.change else None}
        trajectory.append(row)
        mark = f'{d.action:10s} {d.change.describe() if d.change else ""}'
        print(f'  t={now:6.2f}s p99={m.latency_p99_ms:9.1f} ms fps={m.throughput_fps:8.1f}  {mark}')
        if first_ok is None and m.latency_p99_ms <= args.budget_ms and not m.error:
            first_ok = now
        if d.change is not None:
            rig.apply({**rig.config, **d.change.new})
            ctl.applied(time.monotonic() - t0, d.change)
        if d.action in ('converged', 'impossible'):
            converged = now
            break
    return {'trajectory': trajectory, 'time_to_budget_s': first_ok, 'converged_s': converged,
            'status': ctl.status, 'changes': ctl.changes_applied, 'config': dict(rig.config)}


def sweep(rig: Rig, args: argparse.Namespace) -> tuple[Any, Any, dict]:
    space = sweep_space(args)
    measured: dict[tuple, Measurement] = {}
    cams = len(rig.cameras)

    def measure(config: dict[str, Any]) -> Measurement:
        m = rig.measure(grid_config(config, cams), args.warmup_s, args.sweep_window_s)
        measured[space.key(config)] = m
        print(f'  {config} p99={m.latency_p99_ms:8.1f} ms fps={m.throughput_fps:8.1f}')
        return m

    constraints = Constraints(max_p99_ms=args.budget_ms)
    full = exhaustive_search(TrialRunner(measure, constraints=constraints), space)
    replay = hill_climb(TrialRunner(lambda c: measured[space.key(c)], constraints=constraints), space)
    return full, replay, measured


def plot(path: str, tuned: dict[str, Any], budget_ms: float, sweep_fps: float | None, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = tuned['trajectory']
    t = [r['t_s'] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    ax1.semilogy(t, [max(r['p99_ms'], 1e-3) if r['p99_ms'] == r['p99_ms'] else np.nan for r in rows],
                 'o-', label='p99 latency')
    ax1.axhline(budget_ms, color='r', ls='--', label=f'budget {budget_ms:g} ms')
    ax1.set_ylabel('p99 latency (ms)')
    ax1.legend(loc='upper right')
    ax2.plot(t, [r['fps'] for r in rows], 'o-', color='g', label='throughput')
    if sweep_fps:
        ax2.axhline(sweep_fps, color='k', ls=':', label=f'sweep best {sweep_fps:.0f} FPS')
        ax2.axhline(0.9 * sweep_fps, color='grey', ls=':', label='90 % of sweep best')
    ax2.set_ylabel('frames / s')
    ax2.set_xlabel('time since the bad start (s)')
    ax2.legend(loc='lower right')
    for r in rows:
        if r['action'] in ('change', 'revert'):
            for ax in (ax1, ax2):
                ax.axvline(r['t_s'], color='orange' if r['action'] == 'change' else 'purple', alpha=0.25)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ QoS trade-offs

QOS_CASES = (
    # name, width, height, rate_hz, reliability, depth, subscriber work per frame (ms)
    ('640x480 reliable depth 100, slow consumer', 640, 480, 60.0, 'reliable', 100, 25.0),
    ('640x480 reliable depth 1, slow consumer', 640, 480, 60.0, 'reliable', 1, 25.0),
    ('640x480 best_effort depth 1, slow consumer', 640, 480, 60.0, 'best_effort', 1, 25.0),
    ('640x480 best_effort depth 5, slow consumer', 640, 480, 60.0, 'best_effort', 5, 25.0),
    ('640x480 best_effort depth 1, fast consumer', 640, 480, 60.0, 'best_effort', 1, 0.0),
    ('1920x1080 reliable depth 5', 1920, 1080, 15.0, 'reliable', 5, 0.0),
    ('1920x1080 best_effort depth 5', 1920, 1080, 15.0, 'best_effort', 5, 0.0),
)


def qos_publisher(width: int, height: int, rate_hz: float, reliability: str, depth: int,
                  seconds: float) -> None:
    """Child process: publish stamped rgb8 Images on /qos_probe/image."""
    import rclpy
    from sensor_msgs.msg import Image

    from isaac_perf.ros.qos import qos_from_name
    rclpy.init()
    node = rclpy.create_node('qos_probe_publisher')
    pub = node.create_publisher(Image, '/qos_probe/image', qos_from_name(reliability, depth))
    msg = Image(width=width, height=height, encoding='rgb8', step=width * 3)
    msg.data = bytes(np.random.default_rng(1).integers(0, 256, width * height * 3, dtype=np.uint8))
    end = time.monotonic() + seconds
    period = 1.0 / rate_hz
    nxt = time.monotonic()
    seq = 0
    while time.monotonic() < end:
        now_ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        msg.header.frame_id = str(seq)
        pub.publish(msg)
        seq += 1
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    node.destroy_node()
    rclpy.try_shutdown()


def qos_case(name: str, width: int, height: int, rate_hz: float, reliability: str, depth: int, work_ms: float,
             seconds: float) -> dict[str, Any]:
    """One case: a publisher process, this process subscribing with the same QoS."""
    import os
    import subprocess

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from isaac_perf.ros.qos import qos_from_name
    command = [sys.executable, __file__, '--qos-publisher', str(width), str(height), str(rate_hz),
               reliability, str(depth), str(seconds + 2.0)]
    child = subprocess.Popen(command, env=dict(os.environ))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('qos_probe_subscriber', context=context)
    lat: list[float] = []
    seqs: list[int] = []

    def on_image(msg: Image) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        lat.append((time.time_ns() - stamp) / 1e6)
        seqs.append(int(msg.header.frame_id))
        if work_ms:
            time.sleep(work_ms / 1000.0)  # the consumer's own processing time

    node.create_subscription(Image, '/qos_probe/image', on_image, qos_from_name(reliability, depth))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 1.0 and not lat:  # discovery
            executor.spin_once(timeout_sec=0.05)
        lat.clear()
        seqs.clear()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            executor.spin_once(timeout_sec=0.05)
        duration = time.monotonic() - t0
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        child.wait(timeout=30)
    offered = int(round(rate_hz * duration))  # what the publisher sent during the window
    m = Measurement.from_latencies(lat[len(lat) // 5:], duration * 0.8) if lat else None  # skip the fill-up
    return {'case': name, 'width': width, 'height': height, 'rate_hz': rate_hz, 'reliability': reliability,
            'depth': depth, 'consumer_ms': work_ms, 'received': len(lat), 'sent_in_window': offered,
            'delivered_fraction': len(lat) / offered if offered else 0.0,
            'p50_ms': m.latency_p50_ms if m else None, 'p99_ms': m.latency_p99_ms if m else None,
            'fps': len(lat) / duration}


def run_qos(args: argparse.Namespace) -> int:
    import os
    import random
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(150, 230)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from isaac_perf.core.bench.provenance import collect_metadata
    rows = []
    for case in QOS_CASES:
        row = qos_case(*case, seconds=args.qos_seconds)
        rows.append(row)
        print(f'{row["case"]:44s} delivered {row["received"]:5d}/{row["sent_in_window"]:5d} '
              f'p50 {row["p50_ms"] or float("nan"):8.1f} ms  p99 {row["p99_ms"] or float("nan"):8.1f} ms')
    doc = {'schema': 'isaac_perf.tuning_qos/1', 'metadata': collect_metadata('tuning_qos', vars(args)),
           'rows': rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
    print(f'wrote {args.out}')
    return 0


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true',
                   help='CPU smoke run: onnxruntime, small detector, small grid')
    p.add_argument('--cameras', type=int, default=8)
    p.add_argument('--camera-fps', type=float, default=None, help='per camera (default 2000; quick 400)')
    p.add_argument('--width', type=int, default=None, help='frame width (default 640; quick 160)')
    p.add_argument('--height', type=int, default=None, help='frame height (default 480; quick 120)')
    p.add_argument('--budget-ms', type=float, default=33.0)
    p.add_argument('--model', choices=('resnet50', 'detector'), default=None)
    p.add_argument('--model-size', type=int, default=None)
    p.add_argument('--backend', default=None, help='torch (default), onnxruntime (quick), auto')
    p.add_argument('--device', default='auto')
    p.add_argument('--precision', default=None, help='fp16 (default) or fp32 (quick)')
    p.add_argument('--cuda-graphs', action='store_true')
    p.add_argument('--max-batch', type=int, default=None, help='default 64; quick 16')
    p.add_argument('--max-streams', type=int, default=None, help='default 4; quick 2')
    p.add_argument('--delays', type=float, nargs='+', default=None,
                   help='grid delays in ms (default 0 1 2 5)')
    p.add_argument('--window-s', type=float, default=None, help='controller window (default 0.5; quick 0.3)')
    p.add_argument('--sweep-window-s', type=float, default=None, help='default 1.0; quick 0.3')
    p.add_argument('--warmup-s', type=float, default=None, help='default 0.3; quick 0.1')
    p.add_argument('--tune-seconds', type=float, default=60.0)
    p.add_argument('--headroom', type=float, default=0.15)
    p.add_argument('--margin', type=float, default=0.05)
    p.add_argument('--min-gain', type=float, default=0.03)
    p.add_argument('--skip-sweep', action='store_true')
    p.add_argument('--qos', action='store_true',
                   help='measure the QoS trade-offs over DDS instead (needs rclpy)')
    p.add_argument('--qos-seconds', type=float, default=6.0)
    p.add_argument('--out', default='results/tuning.json')
    p.add_argument('--plot', default='results/tuning_trajectory.png')
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {'camera_fps': (2000.0, 400.0), 'width': (640, 160), 'height': (480, 120),
                'model': ('resnet50', 'detector'), 'model_size': (224, 64),
                'backend': ('torch', 'onnxruntime'),
                'precision': ('fp16', 'fp32'), 'max_batch': (64, 16), 'max_streams': (4, 2),
                'delays': ([0.0, 1.0, 2.0, 5.0], [0.0, 2.0]), 'window_s': (0.5, 0.3),
                'sweep_window_s': (1.0, 0.3), 'warmup_s': (0.3, 0.1)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if quick and args.device == 'auto':
        args.device = 'cpu'
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == '--qos-publisher':
        w, h, rate, reliability, depth, seconds = argv[1:7]
        qos_publisher(int(w), int(h), float(rate), reliability, int(depth), float(seconds))
        return 0
    args = parse_args(argv)
    if args.qos:
        return run_qos(args)
    from isaac_perf.core.bench.provenance import collect_metadata

    engine, preprocess, gpu, what = build(args)
    print(f'engine: {what}; {args.cameras} cameras x {args.camera_fps:g} FPS offered, '
          f'{args.width}x{args.height}; budget p99 {args.budget_ms:g} ms')
    ceiling = ceiling_fps(engine, preprocess, gpu, args.max_batch)
    rig = Rig(engine, preprocess, gpu, args.cameras, args.camera_fps, args.width, args.height)
    rig.start()
    try:
        print('bad start (naive):')
        before = rig.measure(BAD_START, args.warmup_s, max(args.window_s, 1.0))
        print(f'  p99={before.latency_p99_ms:.1f} ms fps={before.throughput_fps:.1f}')
        print('closed loop (RealtimeController, as in qos_tuner):')
        tuned = tune(rig, args)
        after = rig.measure(tuned['config'], args.warmup_s, args.sweep_window_s)
        full = replay = None
        if not args.skip_sweep:
            print(f'exhaustive sweep over {sweep_space(args).describe()}:')
            full, replay, _ = sweep(rig, args)
    finally:
        rig.stop()

    best = full.best if full is not None and full.feasible else None
    best_fps = best.measurement.throughput_fps if best else None
    rows = [('bad start (naive)', BAD_START, before), ('tuned (closed loop)', tuned['config'], after)]
    if best:
        rows.append(('sweep best', grid_config(best.config, args.cameras), best.measurement))
    if replay is not None and replay.best is not None:
        rows.append((f'hill climb replay ({len(replay.trials)} trials)',
                     grid_config(replay.best.config, args.cameras), replay.best.measurement))
    print(f'\n{"row":34s} {"FPS":>9s} {"p50 ms":>8s} {"p99 ms":>8s}  config')
    for name, cfg, m in rows:
        print(f'{name:34s} {m.throughput_fps:9.1f} {m.latency_p50_ms:8.2f} {m.latency_p99_ms:8.2f}  {cfg}')
    print(f'{"ceiling (engine alone, batch " + str(args.max_batch) + ")":34s} {ceiling:9.1f}')
    bad_fps = before.throughput_fps
    ratios = {'tuned_vs_bad_fps': after.throughput_fps / bad_fps if bad_fps else None,
              'tuned_vs_sweep_best_fps': after.throughput_fps / best_fps if best_fps else None,
              'tuned_vs_ceiling_fps': after.throughput_fps / ceiling if ceiling else None}
    print(f'time to budget {tuned["time_to_budget_s"]} s, converged at {tuned["converged_s"]} s after '
          f'{tuned["changes"]} changes ({tuned["status"]}); ratios {json.dumps(ratios)}')

    doc = {'schema': 'isaac_perf.tuning/1',
           'metadata': collect_metadata('tuning', {k: v for k, v in vars(args).items()}),
           'engine': what, 'budget_ms': args.budget_ms, 'ceiling_fps': ceiling,
           'before': {'config': BAD_START, 'measurement': before.as_dict()},
           'tuned': {'config': tuned['config'], 'measurement': after.as_dict(),
                     'time_to_budget_s': tuned['time_to_budget_s'], 'converged_s': tuned['converged_s'],
                     'changes': tuned['changes'], 'status': tuned['status']},
           'sweep': full.as_dict() if full else None,
           'hill_climb_replay': replay.as_dict() if replay else None,
           'ratios': ratios, 'trajectory': tuned['trajectory']}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
    if args.plot:
        plot(args.plot, tuned, args.budget_ms, best_fps, f'{what}, {args.cameras} cameras, p99 budget '
             f'{args.budget_ms:g} ms')
    print(f'wrote {args.out}' + (f' and {args.plot}' if args.plot else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
