"""Pinned-host and device buffer pools with size classes, event-fenced reuse and leak accounting.

Why: `cudaHostAlloc` and `cudaMalloc` cost tens of microseconds to milliseconds each (page locking and
driver round trips), and per-frame allocation also serialises against running kernels. A pool pays that
once per size class and then hands the same buffers out again.

- Size classes: a request is rounded up (power of two by default, or page multiples, or an explicit list)
  so buffers of nearly equal size share one free list.
- Fencing: `release(buf, fence=event)` parks the buffer until `event` has passed (e.g. the H2D copy that
  reads a pinned buffer, the kernel that reads a device buffer); only then can it be handed out again.
  The host never synchronises the device to recycle memory.
- Accounting: what is checked out (with tag and age), high-water marks, real allocations vs reuses
  ("allocations avoided"), and `close()` reports any buffer never released: a leak.

Thread-safe (one lock); O(1) per acquire/release apart from the scan of pending fences.
"""
from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from isaac_perf.core.cuda.base import Block, Event, Runtime

_log = logging.getLogger(__name__)

SIZE_CLASS_MODES = ('pow2', 'page', 'exact')


class PoolError(RuntimeError):
    """Misuse of a pool (double release, release into the wrong pool); the message says which buffer."""


class SizeClasses:
    """Rounds a request to the capacity actually allocated.

    - 'pow2': next power of two, at least `min_bytes` (at most 2x waste, very few classes).
    - 'page': next multiple of `page_bytes` (the seed's 256 KiB pages; less waste, more classes).
    - 'exact': no rounding (only identical sizes are reused).
    - `classes=(...)`: the smallest listed class that fits; larger requests fall back to `mode`.
    """

    def __init__(self, mode: str = 'pow2', min_bytes: int = 4096, page_bytes: int = 256 * 1024,
                 classes: Sequence[int] = ()) -> None:
        if mode not in SIZE_CLASS_MODES:
            raise ValueError(f'size class mode {mode!r} is not one of {", ".join(SIZE_CLASS_MODES)}')
        if min_bytes < 1 or page_bytes < 1:
            raise ValueError('min_bytes and page_bytes must be positive')
        if any(c < 1 for c in classes):
            raise ValueError(f'size classes must be positive byte counts, got {list(classes)}')
        self.mode = mode
        self.min_bytes = int(min_bytes)
        self.page_bytes = int(page_bytes)
        self.classes = sorted(int(c) for c in set(classes))

    def round(self, nbytes: int) -> int:
        if nbytes < 0:
            raise ValueError(f'cannot allocate {nbytes} bytes')
        n = max(int(nbytes), 1)
        if self.classes:
            i = bisect.bisect_left(self.classes, n)
            if i < len(self.classes):
                return self.classes[i]
        if self.mode == 'pow2':
            return max(self.min_bytes, 1 << (n - 1).bit_length())
        if self.mode == 'page':
            return -(-n // self.page_bytes) * self.page_bytes
        return n


@dataclass
class PoolStats:
    """Counters of one pool; every field is a plain number so it can go straight into JSON or a message."""
    name: str
    kind: str
    allocations: int = 0  # real allocations (cudaMalloc / cudaHostAlloc / np.empty)
    frees: int = 0  # real frees (trim, over the cache limit, close)
    acquires: int = 0
    reuses: int = 0  # acquires served from the free lists: allocations avoided
    releases: int = 0
    checked_out: int = 0
    checked_out_bytes: int = 0  # capacity of buffers now checked out
    requested_bytes: int = 0  # bytes asked for by buffers now checked out (<= checked_out_bytes)
    pending: int = 0  # released with a fence that has not passed yet
    pending_bytes: int = 0
    cached: int = 0  # free and reusable
    cached_bytes: int = 0
    reserved_bytes: int = 0  # everything this pool holds: checked out + pending + cached
    high_water_checked_out: int = 0
    high_water_checked_out_bytes: int = 0
    high_water_reserved_bytes: int = 0
    alloc_ns: int = 0  # time spent in real allocations
    free_ns: int = 0

    @property
    def hit_rate(self) -> float:
        return self.reuses / self.acquires if self.acquires else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d['hit_rate'] = self.hit_rate
        return d


class PooledBuffer:
    """A buffer checked out of a pool. Release it (or use `with`) exactly once."""

    __slots__ = ('pool', 'block', 'nbytes', 'id', 'tag', 'checkout_ns', '_released')

    def __init__(self, pool: BufferPool, block: Block, nbytes: int, buf_id: int, tag: str, now_ns: int):
        self.pool = pool
        self.block = block
        self.nbytes = nbytes
        self.id = buf_id
        self.tag = tag
        self.checkout_ns = now_ns
        self._released = False

    @property
    def capacity(self) -> int:
        return self.block.nbytes

    @property
    def released(self) -> bool:
        return self._released

    def view(self, shape: tuple[int, ...], dtype: str = 'uint8') -> Any:
        """Typed array over the buffer: numpy (host), torch tensor or CudaArrayRef (device)."""
        if self._released:
            raise PoolError(f'buffer {self.id} ({self.tag}) used after release')
        return self.pool.runtime.view(self.block, tuple(shape), dtype)

    def release(self, fence: Event | None = None) -> None:
        self.pool.release(self, fence)

    def __enter__(self) -> PooledBuffer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._released:
            self.release()

    def __repr__(self) -> str:
        return f'PooledBuffer(id={self.id}, tag={self.tag!r}, nbytes={self.nbytes}, capacity={self.capacity})'


class BufferPool:
    """Size-classed, fence-aware pool of one memory kind on one runtime."""

    def __init__(self, runtime: Runtime, kind: str, size_classes: SizeClasses | None = None,
                 max_cached_bytes: int | None = None, name: str = '',
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        if kind not in ('host', 'pinned', 'device'):
            raise ValueError(f"pool kind {kind!r} is not one of 'host', 'pinned', 'device'")
        self.runtime = runtime
        self.kind = kind
        self.size_classes = size_classes or SizeClasses()
        self.max_cached_bytes = max_cached_bytes
        self.name = name or f'{runtime.name}-{kind}'
        self._clock = clock
        self._lock = threading.Lock()
        self._free: dict[int, list[Block]] = defaultdict(list)  # capacity -> blocks (LIFO: warm first)
        self._pending: deque[tuple[Block, Event]] = deque()
        self._out: dict[int, PooledBuffer] = {}
        self._ids = itertools.count(1)
        self._stats = PoolStats(self.name, kind)
        self._closed = False

    # ---------------------------------------------------------------------------- checkout / return

    def acquire(self, nbytes: int, tag: str = '') -> PooledBuffer:
        """A buffer of at least `nbytes`; reused when a free (fence-passed) one of the class exists."""
        capacity = self.size_classes.round(nbytes)
        with self._lock:
            if self._closed:
                raise PoolError(f'pool {self.name} is closed')
            to_free = self._reap_locked()
            self._stats.acquires += 1
            free = self._free.get(capacity)
            block = free.pop() if free else None
            if block is not None:
                self._stats.reuses += 1
                self._stats.cached -= 1
                self._stats.cached_bytes -= capacity
        self._free_blocks(to_free)
        if block is None:
            # Allocate outside the lock: cudaHostAlloc can take milliseconds.
            t0 = time.perf_counter_ns()
            block = self.runtime.alloc(capacity, self.kind)
            dt = time.perf_counter_ns() - t0
            with self._lock:
                self._stats.allocations += 1
                self._stats.alloc_ns += dt
        with self._lock:
            buf = PooledBuffer(self, block, int(nbytes), next(self._ids), tag, self._clock())
            self._out[buf.id] = buf
            st = self._stats
            st.checked_out += 1
            st.checked_out_bytes += capacity
            st.requested_bytes += int(nbytes)
            st.high_water_checked_out = max(st.high_water_checked_out, st.checked_out)
            st.high_water_checked_out_bytes = max(st.high_water_checked_out_bytes, st.checked_out_bytes)
            self._account_locked()
        return buf

    def release(self, buf: PooledBuffer, fence: Event | None = None) -> None:
        """Return `buf`; with `fence`, it is reused only after that event has passed."""
        to_free: list[Block] = []
        with self._lock:
            if buf.pool is not self:
                raise PoolError(f'buffer {buf.id} ({buf.tag}) belongs to pool {buf.pool.name}, '
                                f'not {self.name}')
            if buf._released or buf.id not in self._out:
                raise PoolError(f'buffer {buf.id} ({buf.tag}) released twice')
            buf._released = True
            del self._out[buf.id]
            st = self._stats
            st.releases += 1
            st.checked_out -= 1
            st.checked_out_bytes -= buf.capacity
            st.requested_bytes -= buf.nbytes
            if self._closed:
                to_free.append(buf.block)
            elif fence is not None and not fence.query():
                self._pending.append((buf.block, fence))
                st.pending += 1
                st.pending_bytes += buf.capacity
            else:
                to_free += self._cache_locked(buf.block)
            self._account_locked()
        self._free_blocks(to_free)

    # ------------------------------------------------------------------------------------ upkeep

    def reap(self) -> int:
        """Move buffers whose fences have passed to the free lists; returns how many moved."""
        with self._lock:
            before = self._stats.pending
            to_free = self._reap_locked()
            moved = before - self._stats.pending
        self._free_blocks(to_free)
        return moved

    def trim(self, keep_bytes: int = 0) -> int:
        """Free cached buffers (largest first) until at most `keep_bytes` stay cached; returns bytes freed."""
        with self._lock:
            to_free = self._reap_locked()
            for capacity in sorted(self._free, reverse=True):
                blocks = self._free[capacity]
                while blocks and self._stats.cached_bytes > keep_bytes:
                    to_free.append(blocks.pop())
                    self._stats.cached -= 1
                    self._stats.cached_bytes -= capacity
            self._account_locked()
        self._free_blocks(to_free)
        return sum(b.nbytes for b in to_free)

    def stats(self) -> PoolStats:
        with self._lock:
            to_free = self._reap_locked()
            snapshot = PoolStats(**asdict(self._stats))
        self._free_blocks(to_free)
        return snapshot

    def outstanding(self, now_ns: int | None = None) -> list[dict[str, Any]]:
        """Buffers checked out now: id, tag, bytes, age. A growing list here is a leak."""
        now = self._clock() if now_ns is None else now_ns
        with self._lock:
            return [{'id': b.id, 'tag': b.tag, 'nbytes': b.nbytes, 'capacity': b.capacity,
                     'age_ms': (now - b.checkout_ns) / 1e6} for b in self._out.values()]

    def close(self, wait: bool = True) -> list[dict[str, Any]]:
        """Free everything this pool holds; returns the leaks (buffers still checked out), logged once.

        Leaked buffers stay allocated until they are released (then they are freed at once), since some
        stream may still be using them. Pending buffers are freed after their fences pass (`wait`), or
        left to the garbage collector when `wait` is false.
        """
        leaks = self.outstanding()
        with self._lock:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            self._stats.pending = 0
            self._stats.pending_bytes = 0
        to_free = []
        for block, event in pending:
            if wait:
                event.synchronize()
                to_free.append(block)
        self._free_blocks(to_free)
        self.trim(0)
        if leaks:
            _log.warning('pool %s closed with %d buffer(s) still checked out: %s', self.name, len(leaks),
                         ', '.join(f"{x['tag'] or x['id']} ({x['nbytes']} B)" for x in leaks[:8]))
        return leaks

    # ---------------------------------------------------------------------------------- internals

    def _reap_locked(self) -> list[Block]:
        """Move fence-passed buffers to the free lists; returns blocks to free (cache over its limit)."""
        to_free: list[Block] = []
        if not self._pending:
            return to_free
        keep: deque[tuple[Block, Event]] = deque()
        for block, event in self._pending:
            if event.query():
                self._stats.pending -= 1
                self._stats.pending_bytes -= block.nbytes
                to_free += self._cache_locked(block)
            else:
                keep.append((block, event))
        self._pending = keep
        self._account_locked()
        return to_free

    def _cache_locked(self, block: Block) -> list[Block]:
        """Put `block` on its free list; returns [block] instead when the cache would exceed its limit."""
        st = self._stats
        if self.max_cached_bytes is not None and st.cached_bytes + block.nbytes > self.max_cached_bytes:
            return [block]
        self._free[block.nbytes].append(block)
        st.cached += 1
        st.cached_bytes += block.nbytes
        return []

    def _account_locked(self) -> None:
        st = self._stats
        st.reserved_bytes = st.checked_out_bytes + st.pending_bytes + st.cached_bytes
        st.high_water_reserved_bytes = max(st.high_water_reserved_bytes, st.reserved_bytes)

    def _free_blocks(self, blocks: list[Block]) -> None:
        for block in blocks:
            t0 = time.perf_counter_ns()
            self.runtime.free(block)
            dt = time.perf_counter_ns() - t0
            with self._lock:
                self._stats.frees += 1
                self._stats.free_ns += dt


def host_pool(runtime: Runtime, pinned: bool = True, **kwargs: Any) -> BufferPool:
    """Pinned (page-locked) staging buffers on a GPU runtime; plain host memory on the CPU fallback."""
    kind = 'pinned' if pinned and runtime.is_gpu else 'host'
    return BufferPool(runtime, kind, name=kwargs.pop('name', f'{runtime.name}-{kind}'), **kwargs)


def device_pool(runtime: Runtime, **kwargs: Any) -> BufferPool:
    """Device buffers (host memory standing in for them on the CPU fallback)."""
    return BufferPool(runtime, 'device', name=kwargs.pop('name', f'{runtime.name}-device'), **kwargs)
