"""Batches onto K CUDA streams with double buffering, and the pipeline that joins batcher and streams.

`BatchScheduler` runs each batch through one *lane*: a copy stream and a compute stream of its own.

    host: frames -> pinned staging buffer (pool)          [stage]
    copy stream:    h2d(staging -> device buffer)  record copy_done
    compute stream: wait(copy_done); compute(device buffer); d2h(outputs -> pinned); record done

With up to `depth` (2: double buffering) batches in flight per lane, the H2D copy of batch i+1 runs on the
copy stream while batch i computes on the compute stream, and K lanes overlap each other as well.
Buffers go back to their pools fenced by events (the staging buffer by copy_done, the device buffer by
done), so nothing is overwritten while a stream still reads it and the host never calls a device-wide
synchronise: when every lane is full the host waits on one lane's oldest `done` event only.

Lanes are picked round-robin or least-loaded (fewest batches in flight). `set_num_streams` adds lanes or
retires them; a retired lane finishes its in-flight batches before it is dropped, so a live change loses
and repeats nothing.

`MultiStreamPipeline` is the whole multi-camera path without ROS: push frames, `step(now_ns)` sends due
batches while a lane has room, collects finished ones, post-processes each frame and hands back results
per camera in capture order (`ResultOrderer`). The `stream_batcher` node and benchmarks/batching.py both
drive it. On the CPU runtime everything runs synchronously with the same code path.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isaac_perf.core.batching import Batch, DynamicBatcher, Frame, ResultOrderer
from isaac_perf.core.cuda.pools import BufferPool, PooledBuffer, device_pool, host_pool
from isaac_perf.core.cuda.runtime import Event, Runtime, Stream
from isaac_perf.core.cuda.streams import POLICIES, EventTrace

# compute(device_input, stream, meta) -> outputs by name (runtime-native arrays), enqueued on `stream`
ComputeFn = Callable[[Any, Stream, Any], dict[str, Any]]


@dataclass
class Completion:
    """A finished batch: host outputs (valid until `release()`), event timings, or the error it raised."""
    job_id: int
    meta: Any
    lane: int
    batch_size: int
    outputs: dict[str, np.ndarray]
    submit_ns: int  # host clock: submit() entered
    enqueued_ns: int  # host clock: all work enqueued
    done_ns: int  # host clock: completion seen
    stage_ms: float  # host: frames copied into pinned staging
    h2d_ms: float  # device events: the upload
    compute_ms: float  # device events: preprocessing + inference + download
    error: str = ''
    _buffers: list[PooledBuffer] = field(default_factory=list, repr=False)
    device: int = -1  # CUDA device ordinal that ran it (-1: the host/CPU runtime)

    def release(self) -> None:
        """Return the output buffers to their pool (call once the outputs have been consumed)."""
        for buf in self._buffers:
            if not buf.released:
                buf.release()
        self._buffers.clear()


@dataclass
class _Job:
    id: int
    lane: int
    meta: Any
    n: int
    submit_ns: int
    enqueued_ns: int = 0
    stage_ms: float = 0.0
    staging: PooledBuffer | None = None
    device: PooledBuffer | None = None
    out_bufs: list[PooledBuffer] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    copy_start: Event | None = None
    copy_end: Event | None = None
    compute_start: Event | None = None
    done: Event | None = None
    error: str = ''


class _Lane:
    def __init__(self, runtime: Runtime, index: int, separate_copy_stream: bool) -> None:
        self.index = index
        self.compute = runtime.new_stream()
        self.copy = runtime.new_stream() if separate_copy_stream else self.compute
        self.in_flight: deque[_Job] = deque()
        self.retired = False


class BatchScheduler:
    """K lanes (copy + compute stream each), `depth` batches in flight per lane, pooled pinned/device memory.

    Single-threaded: one thread calls submit/poll/wait (the node's worker, or a benchmark loop).
    """

    def __init__(self, runtime: Runtime, compute: ComputeFn | Sequence[ComputeFn], num_streams: int = 2,
                 depth: int = 2,
                 policy: str = 'round_robin', host: BufferPool | None = None,
                 device: BufferPool | None = None, trace: EventTrace | None = None,
                 separate_copy_stream: bool = True, clock: Callable[[], int] = time.perf_counter_ns,
                 stage_threads: int = 0, lane_prefix: str = '') -> None:
        if policy not in POLICIES:
            raise ValueError(f'stream policy {policy!r} is not one of {", ".join(POLICIES)}')
        if depth < 1:
            raise ValueError(f'depth={depth}: need at least one batch in flight per stream')
        self.runtime = runtime
        # One compute function for all lanes, or one per lane (lane i uses computes[i % len]): an engine
        # with per-call state such as CUDA-graph static buffers needs its own instance per stream, the way
        # TensorRT needs one execution context per stream.
        self.computes: list[ComputeFn] = list(compute) if isinstance(compute, (list, tuple)) else [compute]
        if not self.computes:
            raise ValueError('compute: give a function, or one per stream')
        self.depth = depth
        self.policy = policy
        self.host_pool = host or host_pool(runtime)
        self.device_pool = device or device_pool(runtime)
        self.trace = trace
        self.lane_prefix = lane_prefix  # trace lanes '<prefix>stream<i>.copy': 'gpu1.' with several GPUs
        self.separate_copy_stream = separate_copy_stream
        self._clock = clock
        # The host copy camera buffer -> pinned staging is the one per-frame host cost (~0.1 ms for a
        # 640x480 rgb8 frame); numpy releases the GIL for it, so a few threads split a batch's frames.
        self._stage_pool = ThreadPoolExecutor(stage_threads, thread_name_prefix='stage') \
            if stage_threads > 1 else None
        self._stage_threads = stage_threads
        self._lanes: list[_Lane] = []
        self._retired: list[_Lane] = []
        self._cursor = 0
        self._ids = itertools.count()
        self._done: list[Completion] = []
        self.submitted = 0
        self.completed = 0
        self.host_waits = 0  # times the host blocked on an event because every lane was full
        self.set_num_streams(num_streams)

    # ------------------------------------------------------------------------------------ lanes

    @property
    def num_streams(self) -> int:
        return len(self._lanes)

    def set_num_streams(self, k: int) -> None:
        """Use `k` lanes from the next submit on; retired lanes finish their batches first."""
        if not 1 <= k <= 64:
            raise ValueError(f'num_streams={k}: use 1..64')
        while len(self._lanes) > k:
            lane = self._lanes.pop()
            lane.retired = True
            if lane.in_flight:
                self._retired.append(lane)
        while len(self._lanes) < k:
            self._lanes.append(_Lane(self.runtime, len(self._lanes), self.separate_copy_stream))
        self._cursor %= len(self._lanes)

    @property
    def in_flight(self) -> int:
        return sum(len(lane.in_flight) for lane in self._lanes + self._retired)

    def loads(self) -> list[int]:
        return [len(lane.in_flight) for lane in self._lanes]

    def has_capacity(self) -> bool:
        """True when some lane can take a batch without the host waiting."""
        self._collect()
        return any(len(lane.in_flight) < self.depth for lane in self._lanes)

    def _choose(self) -> _Lane:
        k = len(self._lanes)
        if self.policy == 'least_loaded':
            order = [(self._cursor + j) % k for j in range(k)]
            idx = min(order, key=lambda i: len(self._lanes[i].in_flight))
        else:
            idx = self._cursor
        self._cursor = (idx + 1) % k
        return self._lanes[idx]

    # ----------------------------------------------------------------------------------- submit

    def submit(self, frames: Sequence[np.ndarray], meta: Any = None) -> int:
        """Stage `frames` (same shape and dtype) into one batch and enqueue it; returns the job id.

        Blocks only when the chosen lane already has `depth` batches in flight, and then only until that
        lane's oldest batch is done.
        """
        if not frames:
            raise ValueError('submit needs at least one frame')
        first = frames[0]
        shape = (len(frames),) + tuple(first.shape)
        for f in frames:
            if f.shape != first.shape or f.dtype != first.dtype:
                raise ValueError(f'frames of one batch must share shape and dtype: {f.shape} {f.dtype} vs '
                                 f'{first.shape} {first.dtype} (group them by key)')
        t_submit = self._clock()
        self._collect()
        lane = self._choose()
        while len(lane.in_flight) >= self.depth:
            self.host_waits += 1
            lane.in_flight[0].done.synchronize()
            self._collect()
        job = _Job(next(self._ids), lane.index, meta, len(frames), t_submit)
        nbytes = int(np.prod(shape)) * first.dtype.itemsize
        try:
            t0 = time.perf_counter_ns()
            job.staging = self.host_pool.acquire(nbytes, tag=f'staging:job{job.id}')
            staged = job.staging.view(shape, first.dtype.name)
            self._stage(staged, frames)
            job.stage_ms = (time.perf_counter_ns() - t0) / 1e6
            job.device = self.device_pool.acquire(nbytes, tag=f'input:job{job.id}')
            rt = self.runtime
            job.copy_start = lane.copy.record()
            rt.copy_async(job.device.block, job.staging.block, nbytes, lane.copy)
            job.copy_end = lane.copy.record()
            if lane.copy is not lane.compute:
                lane.compute.wait(job.copy_end)
            job.compute_start = lane.compute.record()
            x = rt.view(job.device.block, shape, first.dtype.name)
            with lane.compute.use():
                outputs = self.computes[lane.index % len(self.computes)](x, lane.compute, meta)
                for name, out in outputs.items():
                    if isinstance(out, np.ndarray) and not rt.is_gpu:
                        job.outputs[name] = out  # CPU: already host memory, no extra copy
                        continue
                    buf = self.host_pool.acquire(_nbytes(out), tag=f'output:{name}:job{job.id}')
                    job.out_bufs.append(buf)
                    job.outputs[name] = rt.to_host_async(out, buf.block, lane.compute)
            job.done = lane.compute.record()
        except Exception as exc:  # noqa: BLE001 - an engine error fails this batch, not the scheduler
            job.error = f'{type(exc).__name__}: {exc}'
            job.done = lane.compute.record()
            job.copy_end = job.copy_end or job.done
        # Fenced returns: reusable once the copy (staging) / the whole batch (device input) has passed.
        if job.staging is not None:
            job.staging.release(fence=job.copy_end)
        if job.device is not None:
            job.device.release(fence=job.done)
        job.enqueued_ns = self._clock()
        lane.in_flight.append(job)
        self.submitted += 1
        if self.trace is not None and not job.error:
            p = self.lane_prefix
            self.trace.add('h2d', f'{p}stream{lane.index}.copy', job.copy_start, job.copy_end,
                           job=job.id, batch=job.n, bytes=nbytes)
            self.trace.add('compute', f'{p}stream{lane.index}.compute', job.compute_start, job.done,
                           job=job.id, batch=job.n)
        return job.id

    def _stage(self, staged: np.ndarray, frames: Sequence[np.ndarray]) -> None:
        """The one host copy per frame: camera buffer -> pinned staging memory."""
        n = len(frames)
        if self._stage_pool is None or n < 2:
            for i, f in enumerate(frames):
                staged[i] = f
            return
        chunks = min(self._stage_threads, n)
        bounds = [n * c // chunks for c in range(chunks + 1)]

        def copy(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                np.copyto(staged[i], frames[i])

        futures = [self._stage_pool.submit(copy, bounds[c], bounds[c + 1]) for c in range(chunks)]
        for future in futures:
            future.result()

    # ------------------------------------------------------------------------------------- poll

    def poll(self) -> list[Completion]:
        """Batches finished since the last call (never blocks), in job order."""
        self._collect()
        out, self._done = sorted(self._done, key=lambda c: c.job_id), []
        return out

    def oldest_job(self) -> tuple[int, Event] | None:
        """(job id, done event) of the oldest batch in flight, or None."""
        oldest = None
        for lane in self._lanes + self._retired:
            if lane.in_flight and (oldest is None or lane.in_flight[0].id < oldest.id):
                oldest = lane.in_flight[0]
        return None if oldest is None else (oldest.id, oldest.done)

    def wait_one(self, timeout_s: float | None = None) -> list[Completion]:
        """Block until the oldest in-flight batch is done (if any), then `poll`."""
        oldest = self.oldest_job()
        if oldest is not None:
            _wait_event(oldest[1], timeout_s)
        return self.poll()

    def pools(self) -> list[BufferPool]:
        return [self.host_pool, self.device_pool]

    def batch_limit(self) -> int | None:
        """Largest batch the next submit accepts (None: any); see MultiDeviceScheduler."""
        return None

    def max_batch_limit(self) -> int | None:
        return None

    def wait_all(self) -> list[Completion]:
        """Block until every batch in flight is done; returns them all."""
        self.synchronize_in_flight()
        return self.poll()

    def synchronize_in_flight(self) -> None:
        """Block until every batch in flight has finished on the device (without collecting them)."""
        for lane in self._lanes + self._retired:
            for job in lane.in_flight:
                job.done.synchronize()

    def close(self) -> dict[str, list[dict[str, Any]]]:
        """Finish in-flight work and free the pools; returns leaks per pool (should be empty)."""
        for c in self.wait_all():
            c.release()
        if self._stage_pool is not None:
            self._stage_pool.shutdown(wait=True)
        return {'host': self.host_pool.close(), 'device': self.device_pool.close()}

    def _collect(self) -> None:
        for lane in self._lanes + self._retired:
            while lane.in_flight and lane.in_flight[0].done.query():
                self._done.append(self._finish(lane.in_flight.popleft()))
        self._retired = [lane for lane in self._retired if lane.in_flight]

    def _finish(self, job: _Job) -> Completion:
        h2d_ms = compute_ms = 0.0
        if not job.error:
            try:
                h2d_ms = job.copy_start.elapsed_ms(job.copy_end)
                compute_ms = job.compute_start.elapsed_ms(job.done)
            except Exception:  # noqa: BLE001 - timing is best effort (e.g. events without timing)
                pass
        self.completed += 1
        return Completion(job.id, job.meta, job.lane, job.n, job.outputs, job.submit_ns, job.enqueued_ns,
                          self._clock(), job.stage_ms, h2d_ms, compute_ms, job.error, job.out_bufs,
                          device=self.runtime.device_index)


def _wait_event(event: Event, timeout_s: float | None) -> None:
    if event.query():
        return
    if timeout_s is None:
        event.synchronize()
        return
    deadline = time.monotonic() + timeout_s
    while not event.query() and time.monotonic() < deadline:
        time.sleep(0.0002)


# -------------------------------------------------------------------------------------- several devices


def gpu_ids_errors(gpu_ids: Sequence[int], visible: Sequence[str]) -> list[str]:
    """What is wrong with a `gpu_ids` list given the GPUs this process sees (empty when it is fine).

    [] or [-1] means every visible GPU. An index past the visible GPUs is an error naming them; without any
    visible GPU an explicit list is not an error (the caller runs on the CPU and warns, the way a node
    configured for a GPU keeps running on a machine without one).
    """
    ids = [int(i) for i in gpu_ids]
    if not ids or ids == [-1]:
        return []
    errors = []
    bad = [i for i in ids if i < 0]
    if bad:
        errors.append(f'gpu_ids {ids}: {bad} are not GPU indices; list indices >= 0, or [-1] alone for '
                      'every visible GPU')
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        errors.append(f'gpu_ids {ids}: GPU {dups} listed twice; list each GPU once')
    if visible:
        missing = [i for i in ids if i >= len(visible)]
        if missing:
            names = ', '.join(f'{i} ({name})' for i, name in enumerate(visible))
            errors.append(f'gpu_ids {ids}: GPU {", ".join(map(str, missing))} does not exist; visible '
                          f'GPUs: {names}')
    return errors


def resolve_gpu_ids(gpu_ids: Sequence[int], visible: Sequence[str]) -> list[int]:
    """The GPU indices to use, in routing order; [] means "no GPU: one CPU device".

    Raises ValueError with `gpu_ids_errors`' messages for a list that cannot be used.
    """
    errors = gpu_ids_errors(gpu_ids, visible)
    if errors:
        raise ValueError('; '.join(errors))
    if not visible:
        return []
    ids = [int(i) for i in gpu_ids]
    return list(range(len(visible))) if not ids or ids == [-1] else ids


def batch_limit_errors(per_gpu: Sequence[int], num_devices: int) -> list[str]:
    """`max_batch_size_per_gpu` rules: [] / [0] = max_batch_size everywhere, one entry = the same limit on
    every GPU, else one entry per GPU in `gpu_ids` order; 0 = max_batch_size; each 0..256."""
    values = [int(v) for v in per_gpu]
    errors = []
    bad = [v for v in values if not 0 <= v <= 256]
    if bad:
        errors.append(f'max_batch_size_per_gpu {values}: entries {bad} are outside 0..256 '
                      '(0 = max_batch_size)')
    if len(values) > 1 and len(values) != num_devices:
        errors.append(f'max_batch_size_per_gpu has {len(values)} entries for {num_devices} device(s): give '
                      'one per GPU in gpu_ids order, or one for all')
    return errors


def batch_limits(per_gpu: Sequence[int], num_devices: int) -> list[int | None]:
    """One batch limit per device, None where the entry is 0 (the batcher's max_batch_size, which a limit
    above it cannot raise either); raises ValueError when the list is wrong (`batch_limit_errors`)."""
    errors = batch_limit_errors(per_gpu, num_devices)
    if errors:
        raise ValueError('; '.join(errors))
    values = [int(v) for v in per_gpu] or [0]
    if len(values) == 1:
        values = values * num_devices
    return [v or None for v in values]


@dataclass
class ComputeDevice:
    """One device of a MultiDeviceScheduler: its runtime (streams, events, memory), the compute function(s)
    bound to its engine, and the largest batch it takes (None: whatever the batcher forms)."""
    runtime: Runtime
    compute: ComputeFn | Sequence[ComputeFn]
    max_batch_size: int | None = None
    host: BufferPool | None = None
    device: BufferPool | None = None

    @property
    def index(self) -> int:
        return self.runtime.device_index


class MultiDeviceScheduler:
    """Batches routed over several devices (one engine per GPU), each a `BatchScheduler` with its own
    lanes (copy + compute streams) and its own pinned and device pools.

    Routing is least-loaded: a batch goes to the device, among those with a free lane and a batch limit
    that holds it, with the fewest batches in flight per lane (then the fewest frames in flight); equal
    devices take turns (a rotating start), so idle identical GPUs alternate. When every device is full the
    batch goes to the least-loaded one and the host waits there for that device's oldest batch.

    Job ids are global and in submit order, so `poll` hands completions back in the order they were sent
    whichever device finished first; `MultiStreamPipeline` then restores per-camera order as for K streams.
    With one device this is the single-device scheduler with one more call level: the same batches, the
    same outputs. The same interface as BatchScheduler, plus `batch_limit()` for per-GPU batch limits.
    """

    def __init__(self, devices: Sequence[ComputeDevice], num_streams: int = 2, depth: int = 2,
                 policy: str = 'round_robin', trace: EventTrace | None = None,
                 separate_copy_stream: bool = True, clock: Callable[[], int] = time.perf_counter_ns,
                 stage_threads: int = 0) -> None:
        if not devices:
            raise ValueError('MultiDeviceScheduler needs at least one device')
        for d in devices:
            if d.max_batch_size is not None and d.max_batch_size < 1:
                raise ValueError(f'device {d.index}: max_batch_size={d.max_batch_size}, use >= 1 or None')
        self.devices = list(devices)
        prefix = len(devices) > 1
        self.schedulers: list[BatchScheduler] = []
        for i, d in enumerate(devices):
            with d.runtime.use_device():  # streams, events and pools are created on their own GPU
                self.schedulers.append(BatchScheduler(
                    d.runtime, d.compute, num_streams=num_streams, depth=depth, policy=policy, host=d.host,
                    device=d.device, trace=trace, separate_copy_stream=separate_copy_stream, clock=clock,
                    stage_threads=stage_threads, lane_prefix=f'dev{i}.' if prefix else ''))
        self.limits = [d.max_batch_size for d in devices]
        self._clock = clock
        self._cursor = 0
        self._ids = itertools.count()
        self._global: list[dict[int, int]] = [{} for _ in devices]  # per device: local job id -> global
        self._sizes: list[dict[int, int]] = [{} for _ in devices]  # per device: local job id -> frames
        self.batches_per_device = [0] * len(devices)
        self.frames_per_device = [0] * len(devices)

    # -------------------------------------------------------------------------- compatibility

    @property
    def runtime(self) -> Runtime:
        return self.devices[0].runtime

    @property
    def host_pool(self) -> BufferPool:
        return self.schedulers[0].host_pool

    @property
    def device_pool(self) -> BufferPool:
        return self.schedulers[0].device_pool

    @property
    def device_indices(self) -> list[int]:
        return [d.index for d in self.devices]

    def pools(self) -> list[BufferPool]:
        return [p for s in self.schedulers for p in s.pools()]

    @property
    def num_streams(self) -> int:
        """Streams per device."""
        return self.schedulers[0].num_streams

    def set_num_streams(self, k: int) -> None:
        for d, s in zip(self.devices, self.schedulers, strict=True):
            with d.runtime.use_device():
                s.set_num_streams(k)

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.schedulers)

    @property
    def host_waits(self) -> int:
        return sum(s.host_waits for s in self.schedulers)

    @property
    def submitted(self) -> int:
        return sum(s.submitted for s in self.schedulers)

    @property
    def completed(self) -> int:
        return sum(s.completed for s in self.schedulers)

    def loads(self) -> list[int]:
        """Batches in flight per device."""
        return [s.in_flight for s in self.schedulers]

    def has_capacity(self) -> bool:
        return any(s.has_capacity() for s in self.schedulers)

    # ------------------------------------------------------------------------------- routing

    def _load(self, i: int) -> tuple[float, int]:
        """(batches in flight per lane, frames in flight): a busier or more loaded device sorts later."""
        s = self.schedulers[i]
        done = {c.job_id for c in s._done}  # finished but not yet polled: no longer load
        frames = sum(n for j, n in self._sizes[i].items() if j not in done)
        return (s.in_flight / s.num_streams, frames)

    def _pick(self, n: int | None) -> int:
        """The device the next batch of `n` frames goes to (n None: any size); advances nothing."""
        k = len(self.schedulers)
        order = [(self._cursor + j) % k for j in range(k)]
        fits = [i for i in order if n is None or self.limits[i] is None or self.limits[i] >= n]
        if not fits:
            raise ValueError(f'a batch of {n} frames is larger than every device batch limit '
                             f'{self.limits}: poll the batcher with max_size=batch_limit()')
        free = [i for i in fits if self.schedulers[i].has_capacity()]
        return min(free or fits, key=self._load)

    def batch_limit(self) -> int | None:
        """The batch limit of the device the next batch goes to (None: no limit): pass it to
        `DynamicBatcher.poll(now, max_size=...)` so the batch fits that device."""
        return self.limits[self._pick(None)]

    def max_batch_limit(self) -> int | None:
        """The largest batch some device takes (None: no limit)."""
        return None if any(v is None for v in self.limits) else max(self.limits)  # type: ignore[type-var]

    def submit(self, frames: Sequence[np.ndarray], meta: Any = None) -> int:
        """Route a batch (see the class docstring) and submit it there; returns its global job id."""
        i = self._pick(len(frames))
        self._cursor = (i + 1) % len(self.schedulers)
        with self.devices[i].runtime.use_device():
            local = self.schedulers[i].submit(frames, meta)
        gid = next(self._ids)
        self._global[i][local] = gid
        self._sizes[i][local] = len(frames)
        self.batches_per_device[i] += 1
        self.frames_per_device[i] += len(frames)
        return gid

    # ---------------------------------------------------------------------------------- poll

    def poll(self) -> list[Completion]:
        out = []
        for i, s in enumerate(self.schedulers):
            for c in s.poll():
                self._sizes[i].pop(c.job_id, None)
                c.job_id = self._global[i].pop(c.job_id)
                c.device = self.devices[i].index
                out.append(c)
        return sorted(out, key=lambda c: c.job_id)

    def wait_one(self, timeout_s: float | None = None) -> list[Completion]:
        """Block until the oldest batch in flight (over all devices) is done, then `poll`."""
        oldest: tuple[int, Event] | None = None
        for i, s in enumerate(self.schedulers):
            job = s.oldest_job()
            if job is not None:
                gid = self._global[i][job[0]]
                if oldest is None or gid < oldest[0]:
                    oldest = (gid, job[1])
        if oldest is not None:
            _wait_event(oldest[1], timeout_s)
        return self.poll()

    def wait_all(self) -> list[Completion]:
        for s in self.schedulers:
            s.synchronize_in_flight()
        return self.poll()

    def close(self) -> dict[str, list[dict[str, Any]]]:
        for c in self.wait_all():
            c.release()
        leaks: dict[str, list[dict[str, Any]]] = {'host': [], 'device': []}
        for d, s in zip(self.devices, self.schedulers, strict=True):
            with d.runtime.use_device():
                for kind, items in s.close().items():
                    leaks[kind] += items
        return leaks


def _nbytes(array: Any) -> int:
    if hasattr(array, 'nbytes'):
        return int(array.nbytes)
    if hasattr(array, 'numel'):
        return int(array.numel() * array.element_size())
    iface = getattr(array, '__cuda_array_interface__', None)
    if iface is not None:
        return int(np.prod(iface['shape'])) * np.dtype(iface['typestr']).itemsize
    raise TypeError(f'cannot size an output of type {type(array).__name__}')


# ------------------------------------------------------------------------------------------ pipeline


@dataclass
class FrameResult:
    """One frame's result, delivered in per-camera capture order."""
    camera: str
    seq: int
    stamp_ns: int
    arrival_ns: int
    result: Any
    batch_id: int
    batch_size: int
    # queue (arrival -> batch sent), pre (-> staged and enqueued), infer (-> batch seen done), post:
    # consecutive host-clock segments, so they add up to the latency.
    stages_ms: dict[str, float]
    device_ms: dict[str, float]  # stage (host copy to pinned), h2d, compute: the whole batch's times
    done_ns: int
    error: str = ''
    meta: Any = None  # what the caller pushed with the frame (e.g. the ROS message's transport time)
    gpu_index: int = -1  # the CUDA device that ran its batch (-1: the CPU runtime)

    @property
    def latency_ms(self) -> float:
        """Arrival in the batcher to result ready (the sum of `stages_ms`)."""
        return (self.done_ns - self.arrival_ns) / 1e6


# post(outputs, frames) -> one result per frame: post-processing runs once per batch (vectorised)
PostFn = Callable[[dict[str, np.ndarray], list[Frame]], list[Any]]


def slice_outputs(outputs: dict[str, np.ndarray], frames: list[Frame]) -> list[dict[str, np.ndarray]]:
    """The default post-processing: each frame's own rows of every output, copied out of the batch."""
    return [{name: np.array(value[i]) for name, value in outputs.items()} for i in range(len(frames))]


class MultiStreamPipeline:
    """DynamicBatcher -> BatchScheduler -> post-processing -> ResultOrderer (see the module docstring)."""

    def __init__(self, batcher: DynamicBatcher, scheduler: BatchScheduler | MultiDeviceScheduler | None,
                 post: PostFn = slice_outputs, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        # push() may run on other threads (ROS callbacks) than dispatch/step (the worker): this lock makes
        # "queued" and "awaited by the orderer" one step, so a frame is never sent before it is awaited.
        self._lock = threading.Lock()
        self.batcher = batcher
        self.scheduler = scheduler
        self.post = post
        self.orderer = ResultOrderer()
        self._clock = clock
        self._batches: dict[int, Batch] = {}
        self.errors = 0
        self.post_errors = 0

    def push(self, camera: str, data: Any, stamp_ns: int, now_ns: int, key: Any = None,
             meta: Any = None) -> list[Frame]:
        """Queue a frame; returns the frames the overload policy evicted (already accounted for)."""
        with self._lock:
            frame, dropped = self.batcher.push(camera, data, stamp_ns, now_ns, key=key, meta=meta)
            self.orderer.expect(camera, frame.seq)
            for d in dropped:
                self.orderer.skip(d.camera, d.seq)
        return dropped

    def set_scheduler(self, scheduler: BatchScheduler | MultiDeviceScheduler | None) -> list[FrameResult]:
        """Swap the scheduler (an engine reload): the old one finishes its batches and is closed first.

        Queued frames stay in the batcher meanwhile; with None, nothing is sent until a scheduler is set.
        Returns the results the old scheduler finished.
        """
        old = self.scheduler
        results: list[FrameResult] = []
        if old is not None and old is not scheduler:
            self._absorb(old.wait_all())
            results = self._ready()
            old.close()
        self.scheduler = scheduler
        return results

    def dispatch(self, now_ns: int) -> int:
        """Send due batches while a lane has room; returns how many were sent."""
        sent = 0
        if self.scheduler is None:
            return 0
        while self.scheduler.has_capacity():
            limit = self.scheduler.batch_limit()  # per-GPU batch limit of the device it will run on
            with self._lock:
                batch = self.batcher.poll(now_ns, max_size=limit)
            if batch is None:
                break
            self._submit(batch)
            sent += 1
        return sent

    def _submit(self, batch: Batch) -> None:
        self._batches[batch.id] = batch
        self.scheduler.submit([f.data for f in batch.frames], meta=batch)

    def step(self, now_ns: int) -> list[FrameResult]:
        """Dispatch what is due, collect what finished; results per camera in order (non-blocking)."""
        self.dispatch(now_ns)
        if self.scheduler is not None:
            self._absorb(self.scheduler.poll())
        return self._ready()

    def wait(self, now_ns: int) -> list[FrameResult]:
        """Like `step`, but first block until the oldest batch in flight is done."""
        if self.scheduler is not None:
            self._absorb(self.scheduler.wait_one())
        return self.step(now_ns)

    def drain(self, now_ns: int) -> list[FrameResult]:
        """Send everything queued (ignoring the delay), wait for all of it; returns every result left."""
        if self.scheduler is None:
            raise RuntimeError('drain needs a scheduler: set_scheduler() first')
        results = []
        with self._lock:
            batches = self.batcher.flush(now_ns, max_size=self.scheduler.max_batch_limit())
        for batch in batches:
            while not self.scheduler.has_capacity():
                self._absorb(self.scheduler.wait_one())
            self._submit(batch)
        self._absorb(self.scheduler.wait_all())
        results += self._ready()
        return results

    def _absorb(self, completions: list[Completion]) -> None:
        for c in completions:
            batch: Batch = self._batches.pop(c.meta.id)
            error = c.error
            results: list[Any] = [None] * batch.size
            if error:
                self.errors += 1
            else:
                try:
                    results = list(self.post(c.outputs, batch.frames))
                    if len(results) != batch.size:
                        raise ValueError(f'{len(results)} results for {batch.size} frames')
                except Exception as exc:  # noqa: BLE001 - a bad batch must not stop the pipeline
                    error = f'post-processing failed: {type(exc).__name__}: {exc}'
                    results = [None] * batch.size
                    self.post_errors += 1
            c.release()
            done = self._clock()
            device = {'stage': c.stage_ms, 'h2d': c.h2d_ms, 'compute': c.compute_ms}
            for frame, result in zip(batch.frames, results, strict=True):
                stages = {
                    'queue': (frame.dispatch_ns - frame.arrival_ns) / 1e6,
                    'pre': (c.enqueued_ns - frame.dispatch_ns) / 1e6,
                    'infer': (c.done_ns - c.enqueued_ns) / 1e6,
                    'post': (done - c.done_ns) / 1e6,
                }
                self.orderer.complete(frame.camera, frame.seq, FrameResult(
                    frame.camera, frame.seq, frame.stamp_ns, frame.arrival_ns, result, batch.id, batch.size,
                    stages, device, done, error, frame.meta, c.device))

    def _ready(self) -> list[FrameResult]:
        return [item.result for item in self.orderer.ready()]
