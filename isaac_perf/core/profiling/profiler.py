"""Per-stage profiling of a running pipeline: wall time, GPU time, NVTX ranges, allocations, hot functions.

    profiler = StageProfiler()                  # StageProfiler(enabled=False) costs ~one method call
    with profiler.frame():
        with profiler.stage('pre'):
            x = preprocess(image)
        with profiler.stage('infer'):
            y = engine.infer(x)
    profile = profiler.to_dict()               # -> isaac_perf.core.profiling.report.analyze(profile)

What each stage records:
- CPU wall time (`perf_counter_ns`, or the clock passed in), always.
- GPU time from a pair of CUDA events on the current torch stream, when torch is already imported and
  CUDA is available (`gpu='auto'`). Events are resolved lazily (`query()`, never a synchronize on the hot
  path), so the profiler does not serialise the pipeline it measures.
- An NVTX range named after the stage (domain `isaac_perf`), so an Nsight Systems capture
  (`nsys profile -t cuda,nvtx ...`) shows the stages by name. Without a tool attached NVTX is a no-op
  (~0.1 us); if the `nvtx` package is missing or fails, ranges are silently skipped.
- Optionally the bytes a stage allocated transiently (`allocations='python'`: tracemalloc peak above the
  stage's starting point; `'cuda'`: torch caching-allocator peak above its start). tracemalloc slows every
  Python allocation, so it is for diagnosis runs only.

Storage is bounded: each stage keeps its last `capacity` samples in numpy rings.

Python-side sampling (which functions are hot): `sample_pid` runs `py-spy record` against a process id
(any node, no code change); `ThreadSampler` samples all threads of this process from a background thread
(`sys._current_frames`) and `CProfileSampler` wraps a block with cProfile when py-spy is unavailable.
All three produce `HotFunction` rows.
"""
from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from isaac_perf.core.profiling.sampling import SamplingResult

PROFILE_SCHEMA = 'isaac_perf.profile/1'
NVTX_DOMAIN = 'isaac_perf'
NAN = float('nan')
_MAX_PENDING_EVENTS = 512  # GPU event pairs awaiting completion before the oldest is waited for


class _NullStage:
    """The disabled profiler's stage: a shared object whose enter/exit do nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


_NULL_STAGE = _NullStage()


class _Ring:
    """Last `capacity` samples of one stage (wall ns, frame index, GPU ms, allocated bytes).

    Plain preallocated lists: a list store costs ~20 ns where a numpy element store costs ~100 ns, and
    this runs on every stage of every frame. Converted to numpy only when read.
    """

    __slots__ = ('capacity', 'wall_ns', 'frame', 'gpu_ms', 'alloc', 'seq', 'count')

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.wall_ns = [0] * capacity
        self.frame = [-1] * capacity
        self.gpu_ms = [NAN] * capacity
        self.alloc = [NAN] * capacity
        self.seq = [-1] * capacity  # sample number held by each slot (GPU times arrive late)
        self.count = 0

    def push(self, wall_ns: int, frame: int, alloc: float = NAN) -> int:
        seq = self.count
        slot = seq % self.capacity
        self.wall_ns[slot] = wall_ns
        self.frame[slot] = frame
        self.gpu_ms[slot] = NAN
        self.alloc[slot] = alloc
        self.seq[slot] = seq
        self.count = seq + 1
        return seq

    def set_gpu(self, seq: int, gpu_ms: float) -> None:
        slot = seq % self.capacity
        if self.seq[slot] == seq:  # not yet overwritten by a newer sample
            self.gpu_ms[slot] = gpu_ms

    def array(self, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One column, oldest sample first."""
        values = np.asarray(getattr(self, name), dtype=dtype)
        if self.count <= self.capacity:
            return values[:self.count]
        start = self.count % self.capacity
        return np.concatenate([values[start:], values[:start]])


class _Nvtx:
    """NVTX ranges in one domain, with pre-built attributes per name; every failure disables it."""

    def __init__(self, domain: str, enabled: bool = True):
        self.ok = False
        self._attrs: dict[str, Any] = {}
        self._domain = None
        if not enabled:
            return
        try:
            import nvtx
            self._domain = nvtx.get_domain(domain)
            self.ok = True
        except Exception:  # noqa: BLE001 - the package is optional; a profile without ranges is still useful
            self._domain = None

    def push(self, name: str) -> None:
        if not self.ok:
            return
        try:
            attr = self._attrs.get(name)
            if attr is None:
                attr = self._attrs[name] = self._domain.get_event_attributes(message=name)
            self._domain.push_range(attr)
        except Exception:  # noqa: BLE001 - never let tracing break the pipeline
            self.ok = False

    def pop(self) -> None:
        if not self.ok:
            return
        try:
            self._domain.pop_range()
        except Exception:  # noqa: BLE001
            self.ok = False


def _torch_cuda() -> Any | None:
    """torch, if it is already imported and has a usable CUDA device (never imports torch itself)."""
    torch = sys.modules.get('torch')
    if torch is None:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install means CPU-only timing
        return None


class _Stage:
    """One timed stage call (a fresh small object per call, so threads never share start times)."""

    __slots__ = ('_p', '_name', '_ring', '_t0', '_ev0', '_alloc0')

    def __init__(self, profiler: StageProfiler, name: str, ring: _Ring):
        self._p = profiler
        self._name = name
        self._ring = ring

    def __enter__(self) -> None:
        p = self._p
        p._nvtx.push(self._name)
        self._ev0 = None
        if p._torch is not None:
            self._ev0 = p._take_event()
            self._ev0.record()
        self._alloc0 = p._alloc_start() if p._alloc_mode != 'off' else 0
        self._t0 = p._clock()

    def __exit__(self, *exc: object) -> bool:
        p = self._p
        t1 = p._clock()
        alloc = p._alloc_end(self._alloc0) if p._alloc_mode != 'off' else NAN
        with p._lock:
            seq = self._ring.push(t1 - self._t0, p._frame_index, alloc)
            if self._ev0 is not None:
                ev1 = p._take_event()
                ev1.record()
                p._pending.append((self._ring, seq, self._ev0, ev1))
                if len(p._pending) > _MAX_PENDING_EVENTS:
                    p._resolve_gpu(block_oldest=True)
        p._nvtx.pop()
        return False


class _Frame:
    __slots__ = ('_p', '_t0')

    def __init__(self, profiler: StageProfiler):
        self._p = profiler
        self._t0 = 0

    def __enter__(self) -> None:
        self._p._nvtx.push('frame')
        self._t0 = self._p._clock()

    def __exit__(self, *exc: object) -> bool:
        p = self._p
        t1 = p._clock()
        with p._lock:
            p._frames.push(t1 - self._t0, p._frame_index)
            p._frame_index += 1
            if p._pending:
                p._resolve_gpu()
        p._nvtx.pop()
        return False


class StageProfiler:
    """Per-stage timing with bounded storage; `enabled=False` makes `stage()` return a shared no-op."""

    def __init__(self, enabled: bool = True, *, capacity: int = 4096, gpu: str = 'auto',
                 nvtx_ranges: bool = True, allocations: str = 'off',
                 clock: Callable[[], int] = time.perf_counter_ns, domain: str = NVTX_DOMAIN):
        """
        Args:
            enabled: False turns every call into a near-free no-op (the profiler can stay in the code).
            capacity: samples kept per stage (a ring: the newest `capacity` frames).
            gpu: 'auto' (CUDA events when torch is imported and CUDA works), 'torch' (require it), 'off'.
            nvtx_ranges: emit NVTX push/pop ranges named after each stage.
            allocations: 'off', 'python' (tracemalloc) or 'cuda' (torch caching allocator).
            clock: nanosecond clock; tests pass a fake one.
        """
        if capacity < 1:
            raise ValueError(f'capacity={capacity}: keep at least 1 sample per stage')
        if gpu not in ('auto', 'torch', 'off'):
            raise ValueError(f"gpu={gpu!r}: use 'auto', 'torch' or 'off'")
        if allocations not in ('off', 'python', 'cuda'):
            raise ValueError(f"allocations={allocations!r}: use 'off', 'python' or 'cuda'")
        self.enabled = enabled
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()  # stages may run on several executor threads
        self._rings: dict[str, _Ring] = {}
        self._frames = _Ring(capacity)
        self._frame_index = 0
        self._pending: deque[tuple[_Ring, int, Any, Any]] = deque()
        self._event_pool: list[Any] = []
        self._torch = None
        self.warnings: list[str] = []
        if enabled and gpu != 'off':
            self._torch = _torch_cuda()
            if self._torch is None and gpu == 'torch':
                self.warnings.append('gpu=torch asked for CUDA events but torch+CUDA is unavailable: '
                                     'GPU times are not recorded')
        self._nvtx = _Nvtx(domain, enabled=enabled and nvtx_ranges)
        self._alloc_mode = allocations if enabled else 'off'
        if self._alloc_mode == 'cuda' and _torch_cuda() is None:
            self.warnings.append("allocations='cuda' needs torch with CUDA: allocation tracking is off")
            self._alloc_mode = 'off'
        self._started_tracemalloc = False
        self._alloc_snapshot0 = None
        if self._alloc_mode == 'python':
            if not tracemalloc.is_tracing():
                tracemalloc.start(1)
                self._started_tracemalloc = True
            self._alloc_snapshot0 = tracemalloc.take_snapshot()

    # --- hot path -------------------------------------------------------------------------------------
    def stage(self, name: str) -> Any:
        """Context manager timing one stage of the current frame."""
        if not self.enabled:
            return _NULL_STAGE
        ring = self._rings.get(name)
        if ring is None:
            with self._lock:
                ring = self._rings.setdefault(name, _Ring(self.capacity))
        return _Stage(self, name, ring)

    def frame(self) -> Any:
        """Context manager around one whole frame (its wall time is the denominator of stage shares)."""
        if not self.enabled:
            return _NULL_STAGE
        return _Frame(self)

    def record(self, name: str, wall_ms: float, gpu_ms: float | None = None) -> None:
        """Add a stage time measured elsewhere (e.g. a stage_times report from another node)."""
        if not self.enabled:
            return
        with self._lock:
            ring = self._rings.setdefault(name, _Ring(self.capacity))
            seq = ring.push(int(round(wall_ms * 1e6)), self._frame_index)
            if gpu_ms is not None:
                ring.set_gpu(seq, float(gpu_ms))

    def end_frame(self, wall_ms: float | None = None) -> None:
        """Close a frame without the context manager; `wall_ms` None = sum of this frame's stages."""
        if not self.enabled:
            return
        if wall_ms is None:
            total = 0
            for ring in self._rings.values():
                frames = ring.array('frame', np.int64)
                total += int(ring.array('wall_ns', np.int64)[frames == self._frame_index].sum())
            wall_ns = total
        else:
            wall_ns = int(round(wall_ms * 1e6))
        with self._lock:
            self._frames.push(wall_ns, self._frame_index)
            self._frame_index += 1
            if self._pending:
                self._resolve_gpu()

    # --- GPU events / allocations ---------------------------------------------------------------------
    def _take_event(self) -> Any:
        if self._event_pool:
            return self._event_pool.pop()
        return self._torch.cuda.Event(enable_timing=True)

    def _resolve_gpu(self, block_oldest: bool = False) -> None:
        """Turn completed event pairs into GPU times, oldest first; never waits unless told to."""
        pending = self._pending
        while pending:
            ring, seq, ev0, ev1 = pending[0]
            if block_oldest:
                ev1.synchronize()
                block_oldest = False
            elif not ev1.query():
                break
            pending.popleft()
            ring.set_gpu(seq, float(ev0.elapsed_time(ev1)))
            self._event_pool.extend((ev0, ev1))

    def _alloc_start(self) -> int:
        if self._alloc_mode == 'python':
            tracemalloc.reset_peak()
            return tracemalloc.get_traced_memory()[0]
        torch = self._torch or _torch_cuda()
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())

    def _alloc_end(self, start: int) -> float:
        if self._alloc_mode == 'python':
            return float(max(0, tracemalloc.get_traced_memory()[1] - start))
        torch = self._torch or _torch_cuda()
        return float(max(0, int(torch.cuda.max_memory_allocated()) - start))

    # --- results --------------------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return self._frame_index

    def stage_names(self) -> list[str]:
        return list(self._rings)

    def samples_ms(self, name: str) -> np.ndarray:
        """Wall times of one stage in ms, oldest first (a copy)."""
        ring = self._rings[name]
        return ring.array('wall_ns', np.int64) / 1e6

    def sync(self) -> None:
        """Wait for all outstanding GPU events (call before reading results, not in the hot loop)."""
        with self._lock:
            while self._pending:
                self._resolve_gpu(block_oldest=True)

    def reset(self) -> None:
        self.sync()
        self._rings.clear()
        self._frames = _Ring(self.capacity)
        self._frame_index = 0

    def allocation_sites(self, top: int = 10) -> list[dict[str, Any]]:
        """Source lines whose retained Python memory grew most since the profiler started (tracemalloc)."""
        if self._alloc_mode != 'python' or self._alloc_snapshot0 is None or not tracemalloc.is_tracing():
            return []
        snap = tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__),
            tracemalloc.Filter(False, '<frozen importlib*'), tracemalloc.Filter(False, '<unknown>')))
        rows = []
        for diff in snap.compare_to(self._alloc_snapshot0, 'lineno')[:top]:
            if diff.size_diff <= 0:
                continue
            frame = diff.traceback[0]
            rows.append({'where': f'{frame.filename}:{frame.lineno}', 'size_kb': diff.size_diff / 1024,
                         'count': diff.count_diff})
        return rows

    def close(self) -> None:
        """Stop tracemalloc if this profiler started it."""
        self.sync()
        if self._started_tracemalloc and tracemalloc.is_tracing():
            tracemalloc.stop()
            self._started_tracemalloc = False

    def to_dict(self, metadata: dict[str, Any] | None = None,
                hot_functions: SamplingResult | None = None) -> dict[str, Any]:
        """The profile as a JSON-ready dict (schema `isaac_perf.profile/1`), input of `report.analyze`."""
        self.sync()
        stages: dict[str, Any] = {}
        for name, ring in self._rings.items():
            gpu = ring.array('gpu_ms')
            alloc = ring.array('alloc')
            stages[name] = {
                'wall_ms': (ring.array('wall_ns', np.int64) / 1e6).tolist(),
                'frame': ring.array('frame', np.int64).tolist(),
                'gpu_ms': gpu.tolist() if np.isfinite(gpu).any() else [],
                'alloc_bytes': alloc.tolist() if np.isfinite(alloc).any() else [],
                'calls': int(ring.count),
            }
        profile = {
            'schema': PROFILE_SCHEMA,
            'metadata': dict(metadata or {}),
            'stage_order': list(self._rings),
            'frames': {'count': int(self._frame_index),
                       'wall_ms': (self._frames.array('wall_ns', np.int64) / 1e6).tolist(),
                       'frame': self._frames.array('frame', np.int64).tolist()},
            'stages': stages,
            'gpu_timing': 'cuda-events' if self._torch is not None else 'none',
            'allocation_tracking': self._alloc_mode,
            'allocation_sites': self.allocation_sites(),
            'hot_functions': hot_functions.to_dict() if hot_functions else None,
            'warnings': list(self.warnings),
        }
        return profile


def profile_from_stage_times(reports: Iterable[Any], metadata: dict[str, Any] | None = None,
                             capacity: int = 4096) -> dict[str, Any]:
    """A profile from `stage_times.StageReport`s (what a node publishes on `~/stage_times`).

    Each report is one frame; its stages become samples and `total_ms` the frame's wall time.
    """
    profiler = StageProfiler(capacity=capacity, gpu='off', nvtx_ranges=False)
    for report in reports:
        for name, ms in report.stages_ms.items():
            profiler.record(name, ms)
        profiler.end_frame(report.total_ms)
    return profiler.to_dict(metadata)
