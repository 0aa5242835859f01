"""Dynamic batching of frames from N cameras (Triton's dynamic batcher and DeepStream's nvstreammux are the
anchors), with time passed in so every rule is testable to the nanosecond.

Frames queue per camera. For each group of compatible frames (same `key`: resolution and encoding, so a
batch is one tensor), `poll(now_ns)` sends a batch when

1. the group holds `max_batch_size` frames                                   -> reason 'full', or
2. a preferred batch size can be formed (the largest one <= queued frames)   -> reason 'preferred', or
3. the group's oldest frame has waited `max_queue_delay_ns`                   -> reason 'delay' (all queued
   frames, up to `max_batch_size`).

When several groups are ready, the one holding the oldest frame goes first, so no group starves.

Fairness: a batch is composed round-robin across cameras (one frame from each camera in turn, each
camera's oldest first), starting after the camera that contributed last to the previous batch. A fast
camera therefore cannot fill batches while a slow one waits; with more cameras than `max_batch_size`, the
left-out cameras lead the next batch.

Overload: each camera's queue is bounded by `queue_depth`. A frame arriving at a full queue evicts that
camera's oldest queued frame (drop-oldest: the freshest data wins, latency stays bounded); the evicted
frame is returned to the caller and counted per camera. Frames are never dropped for any other reason.

Live changes (`configure`) apply from the next `push`/`poll` and never touch queued frames: a smaller
`max_batch_size` only splits what is queued into more batches, a smaller `queue_depth` lets the queue
shrink as batches leave (each new frame evicts one old one until the bound holds again). No frame is lost
or sent twice by a change.

A camera that stops simply drains: its queued frames still leave by rule 3. `stop_camera` marks it (and
`idle_cameras` finds cameras that went quiet); once empty it leaves the round-robin order. A frame from it
later brings it back.

`ResultOrderer` puts results back in per-camera capture order when batches complete out of order (K CUDA
streams finish in any order); dropped frames are skipped, never waited for.
"""
from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

NS_PER_MS = 1_000_000
REASONS = ('full', 'preferred', 'delay', 'flush')


@dataclass
class Frame:
    """One camera frame waiting for (or in) a batch."""
    camera: str
    seq: int  # per-camera sequence number given at push: 0, 1, 2, ... (dropped frames keep theirs)
    stamp_ns: int  # the frame's own (header) stamp: capture time
    arrival_ns: int  # when it entered the batcher: queue delay is measured from here
    data: Any
    key: Hashable = None  # frames with equal keys can share a batch (e.g. (height, width, encoding))
    meta: Any = None
    dispatch_ns: int = -1  # when it left in a batch

    @property
    def queue_ns(self) -> int:
        """How long it waited in the batcher (valid once dispatched)."""
        return self.dispatch_ns - self.arrival_ns if self.dispatch_ns >= 0 else -1


@dataclass
class Batch:
    """Frames sent together; `frames` are in composition (round-robin) order."""
    id: int
    key: Hashable
    frames: list[Frame]
    dispatch_ns: int
    reason: str

    @property
    def size(self) -> int:
        return len(self.frames)

    @property
    def cameras(self) -> list[str]:
        return [f.camera for f in self.frames]


@dataclass(frozen=True)
class BatchPolicy:
    """The batcher's knobs; the node's runtime parameters map one to one onto these."""
    max_batch_size: int = 8
    max_queue_delay_ns: int = 5 * NS_PER_MS
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_depth: int = 4  # per camera

    def errors(self) -> list[str]:
        """What is wrong with this policy (empty when it is valid)."""
        out = []
        if not 1 <= self.max_batch_size <= 256:
            out.append(f'max_batch_size={self.max_batch_size}: use 1..256')
        if not 0 <= self.max_queue_delay_ns <= 1000 * NS_PER_MS:
            out.append(f'max_queue_delay={self.max_queue_delay_ns / NS_PER_MS} ms: use 0..1000 ms')
        if not 1 <= self.queue_depth <= 1000:
            out.append(f'queue_depth={self.queue_depth}: use 1..1000')
        bad = [p for p in self.preferred_batch_sizes if not 1 <= p <= 256]
        if bad:
            out.append(f'preferred_batch_sizes {list(bad)}: every size must be in 1..256')
        return out

    def validated(self) -> BatchPolicy:
        errors = self.errors()
        if errors:
            raise ValueError('invalid batch policy: ' + '; '.join(errors))
        return self

    @property
    def usable_preferred(self) -> tuple[int, ...]:
        """Preferred sizes that fit under max_batch_size, largest first."""
        return tuple(sorted({p for p in self.preferred_batch_sizes if p <= self.max_batch_size},
                            reverse=True))


@dataclass
class CameraStats:
    received: int = 0
    dropped: int = 0  # evicted by the overload policy (drop-oldest)
    dispatched: int = 0
    queued: int = 0
    max_queued: int = 0
    last_arrival_ns: int = -1
    stopped: bool = False


@dataclass
class BatcherStats:
    cameras: dict[str, CameraStats]
    batches: int
    frames_dispatched: int
    reasons: dict[str, int]
    batch_sizes: dict[int, int]  # size -> count
    queued: int
    policy: BatchPolicy

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.cameras.values())

    @property
    def mean_batch_size(self) -> float:
        return self.frames_dispatched / self.batches if self.batches else 0.0


def default_key(data: Any) -> Hashable:
    """Shape and dtype for arrays (so one batch is one tensor), else one group for everything."""
    if isinstance(data, np.ndarray):
        return (tuple(data.shape), data.dtype.str)
    return None


class DynamicBatcher:
    """Per-camera bounded queues and the batching rules of the module docstring. Thread-safe."""

    def __init__(self, policy: BatchPolicy | None = None,
                 key_fn: Callable[[Any], Hashable] = default_key, queue_delay_window: int = 4096) -> None:
        self._policy = (policy or BatchPolicy()).validated()
        self._key_fn = key_fn
        self._lock = threading.Lock()
        self._order: list[str] = []  # round-robin order: cameras in order of first frame
        self._queues: dict[str, dict[Hashable, deque[Frame]]] = {}  # camera -> key -> frames (oldest first)
        self._counts: Counter = Counter()  # key -> frames queued, all cameras
        self._cams: dict[str, CameraStats] = {}
        self._seq: dict[str, int] = {}
        self._cursor = 0  # index into _order where the next batch starts
        self._ids = itertools.count()
        self._batches = 0
        self._dispatched = 0
        self._reasons: Counter = Counter()
        self._sizes: Counter = Counter()
        self.queue_delays_ns: deque[int] = deque(maxlen=queue_delay_window)

    # ----------------------------------------------------------------------------------- policy

    @property
    def policy(self) -> BatchPolicy:
        return self._policy

    def configure(self, **changes: Any) -> BatchPolicy:
        """Change policy fields live (see the module docstring); raises ValueError for invalid values."""
        if 'preferred_batch_sizes' in changes:
            changes['preferred_batch_sizes'] = tuple(int(p) for p in changes['preferred_batch_sizes'])
        with self._lock:
            self._policy = replace(self._policy, **changes).validated()
            return self._policy

    # ---------------------------------------------------------------------------------- cameras

    def add_camera(self, camera: str) -> None:
        """Register `camera` (its place in the round-robin order); pushing a frame does this too."""
        with self._lock:
            self._add_locked(camera)

    def stop_camera(self, camera: str) -> None:
        """Mark `camera` stopped: its queued frames still drain; it leaves the order once empty."""
        with self._lock:
            if camera in self._cams:
                self._cams[camera].stopped = True
                self._retire_if_drained_locked(camera)

    def idle_cameras(self, now_ns: int, timeout_ns: int) -> list[str]:
        """Active cameras whose last frame is older than `timeout_ns` (candidates for stop_camera)."""
        with self._lock:
            return [c for c, s in self._cams.items()
                    if not s.stopped and s.last_arrival_ns >= 0 and now_ns - s.last_arrival_ns > timeout_ns]

    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._order)

    # ------------------------------------------------------------------------------------- push

    def push(self, camera: str, data: Any, stamp_ns: int, now_ns: int, key: Hashable = None,
             meta: Any = None) -> tuple[Frame, list[Frame]]:
        """Queue one frame; returns (the frame, frames evicted by the overload policy)."""
        if key is None:
            key = self._key_fn(data)
        with self._lock:
            self._add_locked(camera)
            stats = self._cams[camera]
            stats.stopped = False
            seq = self._seq[camera]
            self._seq[camera] = seq + 1
            frame = Frame(camera, seq, int(stamp_ns), int(now_ns), data, key, meta)
            stats.received += 1
            stats.last_arrival_ns = int(now_ns)
            dropped = []
            if stats.queued >= self._policy.queue_depth:
                dropped.append(self._evict_oldest_locked(camera))
            self._queues[camera].setdefault(key, deque()).append(frame)
            self._counts[key] += 1
            stats.queued += 1
            stats.max_queued = max(stats.max_queued, stats.queued)
            return frame, dropped

    # ------------------------------------------------------------------------------------- poll

    def poll(self, now_ns: int, max_size: int | None = None) -> Batch | None:
        """The next batch due at `now_ns` by the rules of the module docstring, or None.

        `max_size` caps this one batch below `max_batch_size` (the device that will run it takes at most
        that many: a per-GPU batch limit); the rules then apply with the cap as the batch size limit.
        """
        with self._lock:
            choice = self._ready_locked(now_ns, max_size)
            if choice is None:
                return None
            key, size, reason = choice
            return self._compose_locked(key, size, reason, now_ns)

    def poll_all(self, now_ns: int) -> list[Batch]:
        """Every batch due at `now_ns`."""
        out = []
        while (batch := self.poll(now_ns)) is not None:
            out.append(batch)
        return out

    def flush(self, now_ns: int, max_size: int | None = None) -> list[Batch]:
        """Send everything queued now, ignoring the delay (shutdown, or a camera being removed)."""
        out = []
        cap = self._policy.max_batch_size if not max_size else min(max_size, self._policy.max_batch_size)
        with self._lock:
            while True:
                keys = [k for k, n in self._counts.items() if n > 0]
                if not keys:
                    return out
                key = min(keys, key=lambda k: self._oldest_locked(k))
                size = min(self._counts[key], cap)
                out.append(self._compose_locked(key, size, 'flush', now_ns))

    def next_deadline_ns(self) -> int | None:
        """Earliest time at which `poll` returns a batch if no frame arrives (None: nothing queued).

        A group that is already due by size reports its oldest arrival (a time in the past).
        """
        with self._lock:
            best = None
            for key, n in self._counts.items():
                if n <= 0:
                    continue
                oldest = self._oldest_locked(key)
                due = oldest if self._due_by_size(n) else oldest + self._policy.max_queue_delay_ns
                best = due if best is None else min(best, due)
            return best

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def stats(self) -> BatcherStats:
        with self._lock:
            return BatcherStats({c: replace(s) for c, s in self._cams.items()}, self._batches,
                                self._dispatched, dict(self._reasons), dict(self._sizes),
                                sum(self._counts.values()), self._policy)

    # -------------------------------------------------------------------------------- internals

    def _add_locked(self, camera: str) -> None:
        if camera not in self._cams:
            self._cams[camera] = CameraStats()
            self._seq[camera] = 0
        if camera not in self._queues:
            self._queues[camera] = {}
            self._order.append(camera)

    def _retire_if_drained_locked(self, camera: str) -> None:
        if self._cams[camera].stopped and self._cams[camera].queued == 0 and camera in self._queues:
            idx = self._order.index(camera)
            del self._order[idx]
            del self._queues[camera]
            if idx < self._cursor:
                self._cursor -= 1
            if self._order:
                self._cursor %= len(self._order)
            else:
                self._cursor = 0

    def _evict_oldest_locked(self, camera: str) -> Frame:
        queues = self._queues[camera]
        key = min((k for k, q in queues.items() if q), key=lambda k: queues[k][0].arrival_ns)
        frame = queues[key].popleft()
        if not queues[key]:
            del queues[key]
        self._counts[key] -= 1
        stats = self._cams[camera]
        stats.queued -= 1
        stats.dropped += 1
        return frame

    def _oldest_locked(self, key: Hashable) -> int:
        return min(q[key][0].arrival_ns for q in self._queues.values() if q.get(key))

    def _due_by_size(self, n: int) -> bool:
        p = self._policy
        return n >= p.max_batch_size or any(s <= n for s in p.usable_preferred)

    def _ready_locked(self, now_ns: int, max_size: int | None = None) -> tuple[Hashable, int, str] | None:
        p = self._policy
        cap = p.max_batch_size if not max_size else max(1, min(int(max_size), p.max_batch_size))
        best: tuple[int, Hashable, int, str] | None = None
        for key, n in self._counts.items():
            if n <= 0:
                continue
            oldest = self._oldest_locked(key)
            preferred = next((s for s in p.usable_preferred if s <= min(n, cap)), 0)
            if n >= cap:
                size, reason = cap, 'full'
            elif preferred:
                size, reason = preferred, 'preferred'
            elif now_ns - oldest >= p.max_queue_delay_ns:
                size, reason = n, 'delay'
            else:
                continue
            if best is None or oldest < best[0]:
                best = (oldest, key, size, reason)
        return None if best is None else best[1:]

    def _compose_locked(self, key: Hashable, size: int, reason: str, now_ns: int) -> Batch:
        n = len(self._order)
        rotated = [self._order[(self._cursor + i) % n] for i in range(n)]
        frames: list[Frame] = []
        last = None
        while len(frames) < size:
            took = False
            for camera in rotated:
                q = self._queues[camera].get(key)
                if not q:
                    continue
                frames.append(q.popleft())
                last = camera
                took = True
                if len(frames) == size:
                    break
            if not took:
                break
        self._cursor = (self._order.index(last) + 1) % n
        self._counts[key] -= len(frames)
        if self._counts[key] <= 0:
            del self._counts[key]
        touched = []
        for f in frames:
            f.dispatch_ns = int(now_ns)
            self.queue_delays_ns.append(f.dispatch_ns - f.arrival_ns)
            stats = self._cams[f.camera]
            stats.queued -= 1
            stats.dispatched += 1
            q = self._queues[f.camera]
            if key in q and not q[key]:
                del q[key]
            touched.append(f.camera)
        for camera in dict.fromkeys(touched):
            self._retire_if_drained_locked(camera)
        self._batches += 1
        self._dispatched += len(frames)
        self._reasons[reason] += 1
        self._sizes[len(frames)] += 1
        return Batch(next(self._ids), key, frames, int(now_ns), reason)


# ----------------------------------------------------------------------------------------- ordering


@dataclass
class _Slot:
    state: str = 'pending'  # 'pending', 'done', 'skip'
    result: Any = None


@dataclass
class OrderedResult:
    camera: str
    seq: int
    result: Any


class ResultOrderer:
    """Releases results per camera in sequence order; dropped frames are skipped, not waited for.

    `expect` every accepted frame (in push order), `skip` the evicted ones, `complete` the processed ones
    in any order; `ready()` returns what can be delivered now. Bounded by the frames in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order: dict[str, deque[int]] = {}
        self._slots: dict[str, dict[int, _Slot]] = {}
        self._last: dict[str, int] = {}
        self.out_of_order = 0  # completions that arrived while an earlier frame was still pending

    def expect(self, camera: str, seq: int) -> None:
        with self._lock:
            order = self._order.setdefault(camera, deque())
            last = self._last.get(camera)
            if last is not None and seq <= last:
                raise ValueError(f'camera {camera}: seq {seq} expected after {last}; seqs must increase')
            self._last[camera] = seq
            order.append(seq)
            self._slots.setdefault(camera, {})[seq] = _Slot()

    def skip(self, camera: str, seq: int) -> None:
        self._set(camera, seq, 'skip', None)

    def complete(self, camera: str, seq: int, result: Any) -> None:
        self._set(camera, seq, 'done', result)

    def _set(self, camera: str, seq: int, state: str, result: Any) -> None:
        with self._lock:
            slot = self._slots.get(camera, {}).get(seq)
            if slot is None or slot.state != 'pending':
                raise ValueError(f'camera {camera}: frame {seq} is not awaiting a result '
                                 f'({"unknown" if slot is None else slot.state})')
            slot.state, slot.result = state, result
            if state == 'done':
                slots = self._slots[camera]
                for earlier in self._order[camera]:
                    if earlier == seq:
                        break
                    if slots[earlier].state == 'pending':
                        self.out_of_order += 1  # it must wait for an earlier frame
                        break

    def ready(self) -> list[OrderedResult]:
        """Results deliverable now: per camera in seq order, cameras in first-seen order."""
        out = []
        with self._lock:
            for camera, order in self._order.items():
                slots = self._slots[camera]
                while order and slots[order[0]].state != 'pending':
                    seq = order.popleft()
                    slot = slots.pop(seq)
                    if slot.state == 'done':
                        out.append(OrderedResult(camera, seq, slot.result))
        return out

    def waiting(self) -> int:
        with self._lock:
            return sum(len(o) for o in self._order.values())


__all__ = ['Batch', 'BatchPolicy', 'BatcherStats', 'CameraStats', 'DynamicBatcher', 'Frame', 'NS_PER_MS',
           'OrderedResult', 'REASONS', 'ResultOrderer', 'default_key']
