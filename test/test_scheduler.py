"""BatchScheduler and MultiStreamPipeline on the CPU runtime (same code path as on a GPU), batched
preprocessing against the reference, and a real ONNX Runtime engine through the whole pipeline."""
import numpy as np
import pytest

from isaac_perf.core.batching.batcher import BatchPolicy, DynamicBatcher
from isaac_perf.core.batching.compute import BatchPreprocessor, EngineCompute, key_encoding
from isaac_perf.core.batching.pipeline import MultiStreamPipeline
from isaac_perf.core.batching.scheduler import BatchScheduler
from isaac_perf.core.cuda.base import CpuRuntime
from isaac_perf.core.cuda.runtime import create_runtime
from isaac_perf.core.cuda.streams import EventTrace
from isaac_perf.core.inference.preprocess import PreprocessConfig, preprocess_numpy

MS = 1_000_000


def frame_sum(x, stream, meta):
    """A stand-in model: one number per frame (its pixel sum), so results are checkable exactly."""
    return {'sum': np.asarray(x).reshape(len(x), -1).sum(axis=1, dtype=np.int64)}


def make_pipeline(num_streams=2, policy='round_robin', compute=frame_sum, clock=None, **batch):
    rt = CpuRuntime()
    kw = {} if clock is None else {'clock': clock}
    sched = BatchScheduler(rt, compute, num_streams=num_streams, policy=policy, **kw)
    b = DynamicBatcher(BatchPolicy(**{'max_batch_size': 4, 'max_queue_delay_ns': 2 * MS, 'queue_depth': 8,
                                      **batch}))
    return MultiStreamPipeline(b, sched, post=lambda out, frames: [int(v) for v in out['sum']], **kw)


def img(value, shape=(4, 4, 3)):
    return np.full(shape, value, np.uint8)


def test_results_come_back_per_camera_in_capture_order_with_exact_values():
    p = make_pipeline()
    results = []
    for t in range(12):
        for c in range(3):
            p.push(f'cam{c}', img(t + c), stamp_ns=1000 + t, now_ns=t * MS)
        results += p.step(t * MS)
    results += p.drain(100 * MS)
    by_cam = {}
    for r in results:
        by_cam.setdefault(r.camera, []).append(r)
    assert sorted(by_cam) == ['cam0', 'cam1', 'cam2']
    for c, rs in by_cam.items():
        k = int(c[-1])
        assert [r.seq for r in rs] == list(range(12))
        assert [r.result for r in rs] == [(t + k) * 48 for t in range(12)]
        assert [r.stamp_ns for r in rs] == [1000 + t for t in range(12)]
        assert all(r.error == '' for r in rs)
    assert p.scheduler.close() == {'host': [], 'device': []}  # no leaked buffer


def test_batches_go_round_robin_over_the_streams_and_the_pools_reuse_buffers():
    p = make_pipeline(num_streams=3, max_queue_delay_ns=0, max_batch_size=2)
    lanes = []
    orig = p.scheduler._finish

    def spy(job):
        lanes.append(job.lane)
        return orig(job)

    p.scheduler._finish = spy
    for t in range(12):
        p.push('a', img(t), 0, now_ns=t)
        p.push('b', img(t), 0, now_ns=t)
        p.step(t)
    assert lanes == [0, 1, 2] * 4
    host, dev = p.scheduler.host_pool.stats(), p.scheduler.device_pool.stats()
    assert host.acquires == 12 and host.allocations == 1 and host.reuses == 11
    assert dev.allocations == 1 and dev.high_water_checked_out == 1


def test_staging_with_threads_copies_every_frame_into_place():
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, (6, 5, 3), dtype=np.uint8) for _ in range(7)]
    for threads in (0, 3, 8):
        sched = BatchScheduler(CpuRuntime(), frame_sum, num_streams=1, stage_threads=threads)
        sched.submit(frames, meta=None)
        (c,) = sched.wait_all()
        assert c.outputs['sum'].tolist() == [int(f.sum(dtype=np.int64)) for f in frames]
        assert sched.close() == {'host': [], 'device': []}


def test_each_stream_can_have_its_own_compute_function():
    calls = []

    def make(k):
        def compute(x, stream, meta):
            calls.append((k, stream))
            return frame_sum(x, stream, meta)
        return compute

    sched = BatchScheduler(CpuRuntime(), [make(0), make(1)], num_streams=2)
    p = MultiStreamPipeline(DynamicBatcher(BatchPolicy(max_batch_size=1, max_queue_delay_ns=0)), sched)
    for t in range(4):
        p.push('a', img(t), 0, now_ns=t)
        p.step(t)
    lanes = [lane.compute for lane in sched._lanes]
    # lane i runs compute i (its own engine instance) on its own compute stream
    assert calls == [(0, lanes[0]), (1, lanes[1]), (0, lanes[0]), (1, lanes[1])]


def test_least_loaded_prefers_the_stream_with_fewest_batches_in_flight():
    sched = BatchScheduler(CpuRuntime(), frame_sum, num_streams=3, policy='least_loaded')
    for lane in sched._lanes[:2]:  # pretend lanes 0 and 1 are busy
        lane.in_flight.append(None)
    assert sched._choose().index == 2
    for lane in sched._lanes[:2]:
        lane.in_flight.clear()


def test_changing_num_streams_and_batch_size_mid_stream_loses_and_repeats_nothing():
    p = make_pipeline(num_streams=2, max_batch_size=3, max_queue_delay_ns=1 * MS, queue_depth=100)
    results = []
    for t in range(60):
        for c in range(4):
            p.push(f'c{c}', img((t * 4 + c) % 250), 0, now_ns=t * MS)
        if t == 15:
            p.scheduler.set_num_streams(1)
        if t == 30:
            p.scheduler.set_num_streams(4)
            p.batcher.configure(max_batch_size=8)
        if t == 45:
            p.batcher.configure(max_batch_size=1, max_queue_delay_ns=0)
        results += p.step(t * MS)
    results += p.drain(1000 * MS)
    keys = [(r.camera, r.seq) for r in results]
    assert len(keys) == len(set(keys)) == 240
    assert p.scheduler.num_streams == 4 and p.batcher.stats().dropped == 0
    for c in range(4):
        assert [r.seq for r in results if r.camera == f'c{c}'] == list(range(60))


def test_an_engine_error_fails_its_batch_only_and_order_is_kept():
    calls = []

    def flaky(x, stream, meta):
        calls.append(meta.id)
        if meta.id == 1:
            raise RuntimeError('CUDA out of memory (simulated by the test)')
        return frame_sum(x, stream, meta)

    p = make_pipeline(compute=flaky, max_batch_size=2, max_queue_delay_ns=0)
    results = []
    for t in range(4):
        p.push('a', img(t), 0, now_ns=t)
        p.push('b', img(t), 0, now_ns=t)
        results += p.step(t)
    results += p.drain(10)
    assert [(r.camera, r.seq, r.error != '') for r in results if r.camera == 'a'] == [
        ('a', 0, False), ('a', 1, True), ('a', 2, False), ('a', 3, False)]
    assert 'out of memory' in results[2].error and p.errors == 1
    assert p.scheduler.close() == {'host': [], 'device': []}


def test_stage_times_are_consecutive_and_add_up_to_the_latency():
    ticks = iter(range(MS, 10**12, 250_000))  # the pipeline clock: 1 ms, then +0.25 ms per read
    p = make_pipeline(clock=lambda: next(ticks), max_batch_size=2, max_queue_delay_ns=0)
    p.push('a', img(1), 0, now_ns=0)
    p.push('a', img(2), 0, now_ns=0)
    (r1, r2) = p.step(1 * MS)
    for r in (r1, r2):
        assert r.stages_ms['queue'] == 1.0
        assert r.stages_ms['pre'] > 0 and r.stages_ms['infer'] >= 0 and r.stages_ms['post'] > 0
        assert sum(r.stages_ms.values()) == pytest.approx(r.latency_ms)
        assert r.batch_size == 2


# ---------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize('encoding,shape,resize', [
    ('rgb8', (48, 64, 3), 'letterbox'), ('bgr8', (48, 64, 3), 'stretch'), ('mono8', (40, 30, 1), 'letterbox'),
    ('mono16', (32, 32, 1), 'stretch'), ('bgra8', (33, 65, 4), 'letterbox')])
def test_batched_torch_preprocessing_matches_the_numpy_reference(encoding, shape, resize):
    torch = pytest.importorskip('torch')
    cfg = PreprocessConfig(width=40, height=24, resize=resize)
    rng = np.random.default_rng(3)
    dtype = np.uint16 if encoding == 'mono16' else np.uint8
    frames = rng.integers(0, np.iinfo(dtype).max, (3,) + shape, dtype=dtype)
    ref, _ = preprocess_numpy([(f, encoding) for f in frames], cfg)
    pre = BatchPreprocessor(cfg)
    assert np.array_equal(pre.numpy(frames, encoding), ref)
    t = torch.from_numpy(frames.view(np.int16) if dtype == np.uint16 else frames)
    got = pre.torch(t, encoding).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4


def test_fast_topk_matches_the_reference_topk():
    from isaac_perf.core.batching.compute import topk_numpy
    from isaac_perf.core.inference.postprocess import topk
    logits = np.random.default_rng(2).standard_normal((6, 1000)).astype(np.float32)
    ids, scores = topk_numpy(logits, 5)
    ref_ids, ref_scores = topk(logits, 5)
    assert np.array_equal(ids, ref_ids) and np.allclose(scores, ref_scores, rtol=1e-6)


def test_key_encoding_reads_the_batch_key():
    assert key_encoding((480, 640, 'bgr8')) == 'bgr8'
    assert key_encoding(None, 'mono8') == 'mono8'


def test_a_real_onnx_runtime_engine_through_the_pipeline_matches_per_frame_inference(tmp_path):
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.models import build_detector
    path = build_detector(64, 64, num_classes=4, cache_dir=tmp_path)
    engine = create_engine('onnxruntime', str(path))
    cfg = PreprocessConfig.for_detector(64, 64)
    compute = EngineCompute(engine, cfg, gpu=False)
    rt = create_runtime('cpu')
    trace = EventTrace(rt)
    sched = BatchScheduler(rt, compute, num_streams=2, trace=trace)
    batcher = DynamicBatcher(BatchPolicy(max_batch_size=4, max_queue_delay_ns=0, queue_depth=4))
    p = MultiStreamPipeline(batcher, sched, post=lambda out, frames: list(out['scores'].copy()))
    rng = np.random.default_rng(0)
    frames = {f'cam{c}': [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(3)]
              for c in range(3)}
    results = []
    for t in range(3):
        for cam, fs in frames.items():
            p.push(cam, fs[t], 0, now_ns=t, key=(48, 80, 'rgb8'))
        results += p.step(t)
    results += p.drain(10)
    assert len(results) == 9 and compute.batches == sched.submitted
    for r in results:
        x, _ = preprocess_numpy([(frames[r.camera][r.seq], 'rgb8')], cfg)
        want = engine.infer({'images': x})['scores'][0]
        assert np.abs(r.result - want).max() < 1e-4
    trace.collect(block=True)
    assert {s.name for s in trace.spans} == {'h2d', 'compute'}
    assert sched.close() == {'host': [], 'device': []}
    # Bucketed batch sizes (for engines with one CUDA graph per size): 3 frames run as 4, same results.
    padded = EngineCompute(engine, cfg, gpu=False, buckets=(2, 4))
    stack = np.stack([frames['cam0'][0], frames['cam1'][0], frames['cam2'][0]])
    out = padded(stack, None, None)
    assert out['scores'].shape[0] == 4 and padded.padded_frames == 1
    plain = EngineCompute(engine, cfg, gpu=False)(stack, None, None)
    assert np.abs(out['scores'][:3] - plain['scores']).max() < 1e-5


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_pipeline_with_torch_engine_matches_cpu_and_overlaps_copies(tmp_path):
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    from isaac_perf.core.cuda.streams import copy_compute_overlap
    from isaac_perf.core.inference.engines.base import EngineOptions
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.models import build_detector
    path = build_detector(128, 128, num_classes=4, cache_dir=tmp_path)
    engine = create_engine('torch', str(path),
                           EngineOptions(device='cuda', precision='fp16', max_batch_size=8))
    ref = create_engine('onnxruntime', str(path), EngineOptions(device='cpu'))
    cfg = PreprocessConfig.for_detector(128, 128)
    rt = create_runtime('torch')
    trace = EventTrace(rt)
    sched = BatchScheduler(rt, EngineCompute(engine, cfg, gpu=True), num_streams=2, trace=trace)
    batcher = DynamicBatcher(BatchPolicy(max_batch_size=8, max_queue_delay_ns=0, queue_depth=64))
    p = MultiStreamPipeline(batcher, sched, post=lambda out, frames: list(out['scores'].copy()))
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(64)]
    results = []
    for i, f in enumerate(frames):
        p.push(f'cam{i % 8}', f, 0, now_ns=i, key=(480, 640, 'rgb8'))
        if i % 8 == 7:
            results += p.step(i)
    results += p.drain(10**9)
    assert len(results) == 64
    for r in results[:8]:
        x, _ = preprocess_numpy([(frames[r.seq * 8 + int(r.camera[3:])], 'rgb8')], cfg)
        want = ref.infer({'images': x})['scores'][0]
        assert np.abs(r.result - want).max() < 2e-2  # FP16 against FP32
    trace.collect(block=True)
    assert copy_compute_overlap(trace.spans)['num_copies'] == sched.submitted
    assert sched.close() == {'host': [], 'device': []}


def test_wait_reads_the_clock_after_waiting_so_no_queue_delay_is_negative():
    t = [0]
    p = make_pipeline(num_streams=1, clock=lambda: t[0], max_queue_delay_ns=0, max_batch_size=1)
    p.push('a', img(1), 0, now_ns=0)
    results = p.step(0)                        # the first frame's batch is sent
    t[0] = 7 * MS
    p.push('a', img(2), 0, now_ns=7 * MS)      # a frame that arrives while the worker waits
    results += p.wait()                        # dispatches at the clock read after the wait
    results += p.drain(t[0])
    assert [r.result for r in results] == [48, 96]
    assert min(p.batcher.queue_delays_ns) >= 0, list(p.batcher.queue_delays_ns)
    p2 = make_pipeline(num_streams=1, clock=lambda: t[0], max_queue_delay_ns=0, max_batch_size=1)
    p2.push('a', img(1), 0, now_ns=7 * MS)
    p2.step(7 * MS)
    p2.push('a', img(2), 0, now_ns=9 * MS)
    p2.wait(8 * MS)                            # an explicit time is used as given (simulated clocks)
    assert min(p2.batcher.queue_delays_ns) < 0


def test_a_step_returns_results_while_frames_keep_arriving_faster_than_the_engine():
    """On a synchronous runtime (the CPU) every lane is free again as soon as submit returns. When frames
    arrive faster than the engine runs (ResNet-50 on a CPU: 52 ms a frame against 30 arriving per second),
    a due batch is always waiting: dispatch must still hand back what finished, or no result is ever
    published (seen under tuned_pipeline.launch.py: 12 results, then 1154 frames pending and none out)."""
    arrivals = iter(range(1, 10_000))
    pipe = None

    def slow_model(x, stream, meta):  # two new frames arrive while each batch runs
        for _ in range(2):
            n = next(arrivals)
            pipe.push('cam0', img(n % 200), stamp_ns=n, now_ns=n * MS)
        return frame_sum(x, stream, meta)

    pipe = make_pipeline(num_streams=2, compute=slow_model, max_queue_delay_ns=0, max_batch_size=1,
                         queue_depth=1000)
    pipe.push('cam0', img(0), stamp_ns=0, now_ns=0)
    results = pipe.step(1 * MS)
    assert results and results[0].seq == 0  # the first batch's result, not an endless dispatch
    assert len(results) <= pipe.scheduler.num_streams * pipe.scheduler.depth
