"""The whole multi-camera path without ROS: DynamicBatcher -> scheduler -> post-processing -> per-camera
order.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from isaac_perf.core.batching.batcher import Batch, DynamicBatcher, Frame, ResultOrderer
from isaac_perf.core.batching.multi_device import MultiDeviceScheduler
from isaac_perf.core.batching.scheduler import BatchScheduler, Completion

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


def _shape_only(pixels: Any) -> Any:
    if not isinstance(pixels, np.ndarray):
        return pixels
    return np.broadcast_to(np.zeros((), pixels.dtype), pixels.shape)  # read-only, no memory


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
        """Send due batches while a lane has room, until one finishes; returns how many were sent.

        It stops at the first finished batch so the caller can hand its results on: on a synchronous
        runtime (the CPU) every batch has finished when submit returns and the lanes are always free, so
        with frames arriving faster than the engine runs, "while a lane has room" never ended and no
        result was ever published.
        """
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
            finished = self.scheduler.poll()
            if finished:
                self._absorb(finished)
                break
        return sent

    def _submit(self, batch: Batch) -> None:
        self._batches[batch.id] = batch
        self.scheduler.submit([f.data for f in batch.frames], meta=batch)
        # submit() staged the pixels (a copy into pinned memory): let them go now. A frame read through
        # the zero-copy transport holds its publisher's shared-memory slot until then; post-processing needs
        # only the frame's shape, which a zero-strided stand-in keeps without memory.
        for f in batch.frames:
            f.data = _shape_only(f.data)

    def step(self, now_ns: int) -> list[FrameResult]:
        """Dispatch what is due, collect what finished; results per camera in order (non-blocking)."""
        self.dispatch(now_ns)
        if self.scheduler is not None:
            self._absorb(self.scheduler.poll())
        return self._ready()

    def wait(self, now_ns: int | None = None) -> list[FrameResult]:
        """Like `step`, but first block until the oldest batch in flight is done. `now_ns` None: the
        pipeline's clock read after the wait (frames pushed meanwhile must not look dispatched before they
        arrived: a time taken before the wait made queue delays negative and deadlines late)."""
        if self.scheduler is not None:
            self._absorb(self.scheduler.wait_one())
        return self.step(self._clock() if now_ns is None else now_ns)

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
