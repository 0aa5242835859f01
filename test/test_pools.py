"""Buffer pools (size classes, reuse, fenced release, leak accounting), the CPU runtime, the stream pool and
the event-trace interval arithmetic. GPU variants are marked `gpu` and skip without CUDA."""
import json
import logging

import numpy as np
import pytest

from isaac_perf.core.cuda.base import CpuRuntime, Event
from isaac_perf.core.cuda.pools import BufferPool, PoolError, SizeClasses, device_pool, host_pool
from isaac_perf.core.cuda.runtime import create_runtime
from isaac_perf.core.cuda.streams import (
    EventTrace,
    Span,
    StreamPool,
    copy_compute_overlap,
    merge_intervals,
    overlap_ms,
)

KIB = 1024


class ManualEvent(Event):
    """Stands in for a CUDA event still in flight: it passes only when the test says so."""

    def __init__(self):
        self.passed = False

    def record(self, stream=None):
        return self

    def query(self):
        return self.passed

    def synchronize(self):
        self.passed = True

    def elapsed_ms(self, end):
        return 0.0


def cpu_pool(**kw):
    return BufferPool(CpuRuntime(), 'host', **kw)


# -------------------------------------------------------------------------------------- size classes


def test_power_of_two_classes_with_a_floor():
    sc = SizeClasses('pow2', min_bytes=4 * KIB)
    assert [sc.round(n) for n in (0, 1, 4096, 4097, 640 * 480 * 3, 1 << 20)] == [
        4096, 4096, 4096, 8192, 1 << 20, 1 << 20]


def test_page_classes_and_explicit_classes():
    page = SizeClasses('page', page_bytes=256 * KIB)
    assert [page.round(n) for n in (1, 256 * KIB, 256 * KIB + 1)] == [256 * KIB, 256 * KIB, 512 * KIB]
    listed = SizeClasses('pow2', min_bytes=1, classes=(5000, 1000))
    assert [listed.round(n) for n in (999, 1000, 1001, 6000)] == [1000, 1000, 5000, 8192]
    assert SizeClasses('exact').round(12345) == 12345
    with pytest.raises(ValueError, match='pow2, page, exact'):
        SizeClasses('fibonacci')
    with pytest.raises(ValueError, match='positive'):
        SizeClasses(classes=(0,))


# -------------------------------------------------------------------------------------------- reuse


def test_a_released_buffer_is_reused_for_any_request_of_its_class():
    pool = cpu_pool()
    a = pool.acquire(3000, tag='a')
    block = a.block
    assert a.capacity == 4096 and a.nbytes == 3000
    a.release()
    b = pool.acquire(4000, tag='b')
    assert b.block is block  # same memory, no new allocation
    c = pool.acquire(5000, tag='c')  # another class: a real allocation
    s = pool.stats()
    assert (s.allocations, s.reuses, s.acquires) == (2, 1, 3)
    assert s.hit_rate == pytest.approx(1 / 3)
    assert (s.checked_out, s.checked_out_bytes, s.requested_bytes) == (2, 4096 + 8192, 9000)
    b.release()
    c.release()
    s = pool.stats()
    assert (s.cached, s.cached_bytes, s.reserved_bytes, s.checked_out) == (2, 12288, 12288, 0)


def test_views_are_typed_arrays_over_the_buffer():
    pool = cpu_pool()
    with pool.acquire(2 * 3 * 4) as buf:
        v = buf.view((2, 3), 'float32')
        v[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
        assert buf.view((6,), 'float32').tolist() == [0, 1, 2, 3, 4, 5]
        with pytest.raises(ValueError, match='does not fit'):
            buf.view((4096,), 'float32')
    assert buf.released
    with pytest.raises(PoolError, match='after release'):
        buf.view((1,), 'uint8')


def test_a_fenced_buffer_is_not_reused_before_its_event_passes():
    pool = cpu_pool()
    first = pool.acquire(1000)
    fence = ManualEvent()
    first.release(fence=fence)
    s = pool.stats()
    assert (s.pending, s.pending_bytes, s.cached) == (1, 4096, 0)
    second = pool.acquire(1000)  # the first is still being read by a stream: allocate another
    assert second.block is not first.block and pool.stats().allocations == 2
    fence.passed = True
    assert pool.reap() == 1
    third = pool.acquire(1000)
    assert third.block is first.block and pool.stats().reuses == 1


def test_the_cache_limit_frees_instead_of_caching_and_trim_frees_the_rest():
    pool = cpu_pool(max_cached_bytes=4096)
    a, b = pool.acquire(4096), pool.acquire(4096)
    a.release()
    b.release()  # would exceed the cache limit: really freed
    s = pool.stats()
    assert (s.cached, s.frees, s.reserved_bytes) == (1, 1, 4096)
    assert pool.trim() == 4096
    assert pool.stats().reserved_bytes == 0 and pool.stats().frees == 2


# ----------------------------------------------------------------------------------------- accounting


def test_leak_accounting_lists_what_is_checked_out_and_close_reports_it(caplog):
    clock = iter(range(0, 10**9, 1_000_000)).__next__  # 1 ms per call
    pool = BufferPool(CpuRuntime(), 'host', clock=clock, name='staging')
    bufs = [pool.acquire(100 * (i + 1), tag=f'frame{i}') for i in range(3)]
    bufs[1].release()
    out = pool.outstanding(now_ns=10_000_000)
    assert [(x['tag'], x['nbytes'], x['age_ms']) for x in out] == [('frame0', 100, 10.0),
                                                                    ('frame2', 300, 8.0)]
    s = pool.stats()
    assert (s.high_water_checked_out, s.high_water_checked_out_bytes, s.checked_out) == (3, 3 * 4096, 2)
    with caplog.at_level(logging.WARNING):
        leaks = pool.close()
    assert [x['tag'] for x in leaks] == ['frame0', 'frame2']
    assert 'staging closed with 2 buffer(s) still checked out' in caplog.text
    frees = pool.stats().frees
    bufs[0].release()  # a leak released after close is freed at once
    assert pool.stats().frees == frees + 1
    with pytest.raises(PoolError, match='closed'):
        pool.acquire(10)


def test_misuse_is_refused_with_the_buffer_named():
    pool, other = cpu_pool(), cpu_pool(name='other')
    buf = pool.acquire(10, tag='img')
    buf.release()
    with pytest.raises(PoolError, match=r'\(img\) released twice'):
        buf.release()
    foreign = other.acquire(10, tag='x')
    with pytest.raises(PoolError, match='belongs to pool other'):
        pool.release(foreign)


def test_steady_state_per_frame_traffic_allocates_once_per_class():
    pool = cpu_pool()
    for _ in range(1000):
        with pool.acquire(640 * 480 * 3):
            pass
    s = pool.stats()
    assert (s.allocations, s.reuses, s.high_water_reserved_bytes) == (1, 999, 1 << 20)


# ------------------------------------------------------------------------------------ runtime choice


def test_cpu_fallback_runtime_has_always_passed_events_and_synchronous_copies():
    rt = create_runtime('cpu')
    assert rt.name == 'cpu' and not rt.is_gpu
    hp, dp = host_pool(rt), device_pool(rt)
    assert hp.kind == 'host' and dp.kind == 'device'  # no pinned memory without CUDA
    src, dst = hp.acquire(16), dp.acquire(16)
    src.view((16,))[:] = np.arange(16, dtype=np.uint8)
    s = rt.new_stream()
    start = s.record()
    rt.copy_async(dst.block, src.block, 16, s)
    end = s.record()
    assert end.query() and start.elapsed_ms(end) >= 0.0
    assert dst.view((16,)).tolist() == list(range(16))
    with pytest.raises(ValueError, match='overruns'):
        rt.copy_async(dst.block, src.block, 1 << 20, s)


def test_asking_for_a_gpu_runtime_without_cuda_falls_back_to_the_cpu_with_a_warning(caplog):
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with caplog.at_level(logging.WARNING):
        rt = create_runtime('torch')
    assert rt.name == 'cpu' and 'no CUDA runtime available' in caplog.text
    with pytest.raises(ValueError, match='not one of'):
        create_runtime('opencl')


# --------------------------------------------------------------------------------------- stream pool


def test_stream_pool_round_robin_least_loaded_and_resize():
    rr = StreamPool(CpuRuntime(), 3)
    assert [rr.choose() for _ in range(5)] == [0, 1, 2, 0, 1]
    loads = [2, 0, 1]
    ll = StreamPool(CpuRuntime(), 3, policy='least_loaded')
    assert ll.choose(lambda i: loads[i]) == 1
    loads = [0, 0, 0]
    assert [ll.choose(lambda i: loads[i]) for _ in range(3)] == [2, 0, 1]  # ties rotate
    retired = rr.resize(1)
    assert len(retired) == 2 and len(rr) == 1 and rr.choose() == 0
    rr.resize(4)
    assert [s.index for s in rr.streams] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match='at least one'):
        rr.resize(0)


# ---------------------------------------------------------------------------------------- trace maths


def test_interval_union_and_overlap_are_exact():
    assert merge_intervals([(5, 7), (0, 2), (1, 3), (7, 8), (9, 9)]) == [(0, 3), (5, 8)]
    assert overlap_ms([(0, 10)], [(2, 3), (5, 12)]) == 6
    assert overlap_ms([(0, 1)], [(1, 2)]) == 0
    spans = [Span('h2d', 's0.copy', 0, 2), Span('compute', 's0.compute', 1, 5), Span('h2d', 's1.copy', 4, 6),
             Span('compute', 's1.compute', 6, 9)]
    r = copy_compute_overlap(spans)
    assert (r['copy_ms'], r['copy_hidden_ms'], r['copy_hidden_fraction']) == (4, 2, 0.5)


def test_event_trace_resolves_spans_and_writes_chrome_json(tmp_path):
    rt = CpuRuntime()
    trace = EventTrace(rt)
    s = rt.new_stream()
    for i in range(3):
        a = s.record()
        b = s.record()
        trace.add('compute', 'stream0.compute', a, b, job=i)
    pending = ManualEvent()
    trace.add('h2d', 'stream1.copy', s.record(), pending)
    assert trace.collect() == 3 and len(trace.spans) == 3  # the unfinished pair stays pending
    doc = json.loads(trace.write_chrome_trace(tmp_path / 'trace.json').read_text())
    xs = [e for e in doc['traceEvents'] if e['ph'] == 'X']
    assert [e['args']['job'] for e in xs] == [0, 1, 2]
    assert all(e['dur'] >= 0 and e['name'] == 'compute' for e in xs)
    assert [e['args']['name'] for e in doc['traceEvents'] if e['ph'] == 'M'] == ['stream0.compute']


# ------------------------------------------------------------------------------------------------ GPU


def _cuda_torch():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    return torch


@pytest.mark.gpu
def test_torch_runtime_pinned_and_device_pools_round_trip():
    _cuda_torch()
    rt = create_runtime('torch')
    hp, dp = host_pool(rt), device_pool(rt)
    assert hp.kind == 'pinned'
    src, dev, back = hp.acquire(1 << 20), dp.acquire(1 << 20), hp.acquire(1 << 20)
    data = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8)
    src.view((1 << 20,))[:] = data
    s = rt.new_stream()
    rt.copy_async(dev.block, src.block, 1 << 20, s)
    rt.copy_async(back.block, dev.block, 1 << 20, s)
    done = s.record()
    src.release(fence=done)
    done.synchronize()
    assert np.array_equal(back.view((1 << 20,)), data)
    hp.reap()  # the fence has passed: the staging buffer is reusable now
    assert (hp.stats().pending, hp.stats().cached) == (0, 1)
    for b in (dev, back):
        b.release()
    assert hp.close() == [] and dp.close() == []


@pytest.mark.gpu
def test_cuda_python_runtime_round_trip():
    pytest.importorskip('cuda.bindings')
    rt = create_runtime('cuda-python')
    if rt.name != 'cuda-python':
        pytest.skip('cuda-python has no device here')
    hp, dp = host_pool(rt), device_pool(rt)
    src, dev, back = hp.acquire(4096), dp.acquire(4096), hp.acquire(4096)
    src.view((4096,))[:] = np.arange(4096) % 251
    s = rt.new_stream()
    a = s.record()
    rt.copy_async(dev.block, src.block, 4096, s)
    rt.copy_async(back.block, dev.block, 4096, s)
    b = s.record()
    b.synchronize()
    assert a.elapsed_ms(b) >= 0.0
    assert np.array_equal(back.view((4096,)), np.arange(4096) % 251)
    for buf in (src, dev, back):
        buf.release()
    assert hp.close() == [] and dp.close() == []
