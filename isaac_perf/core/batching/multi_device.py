"""Batches routed over several GPUs: one BatchScheduler (lanes, pools) per device, least-loaded routing.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from isaac_perf.core.batching.scheduler import BatchScheduler, Completion, ComputeFn, _wait_event
from isaac_perf.core.cuda.base import Event, Runtime
from isaac_perf.core.cuda.pools import BufferPool
from isaac_perf.core.cuda.streams import EventTrace


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
