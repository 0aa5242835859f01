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
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isaac_perf.core.cuda.base import Event, Runtime, Stream
from isaac_perf.core.cuda.pools import BufferPool, PooledBuffer, device_pool, host_pool
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


def _nbytes(array: Any) -> int:
    if hasattr(array, 'nbytes'):
        return int(array.nbytes)
    if hasattr(array, 'numel'):
        return int(array.numel() * array.element_size())
    iface = getattr(array, '__cuda_array_interface__', None)
    if iface is not None:
        return int(np.prod(iface['shape'])) * np.dtype(iface['typestr']).itemsize
    raise TypeError(f'cannot size an output of type {type(array).__name__}')
