"""Multi-device routing (core.batching.multi_device.MultiDeviceScheduler) on the CPU, the GPU count as a
tuner knob,
stream_batcher's gpu_ids / max_batch_size_per_gpu parameters, and (marked gpu) the multi-device path on one
GPU giving the outputs of the single-device path.

Routing is checked on simulated devices (core.cuda.runtime.SimRuntime): host memory like the CPU runtime,
but each batch takes virtual time on its device, so batches really are in flight and every routing decision
is an exact, hand-computed sequence.
"""
import numpy as np
import pytest

from isaac_perf.core.batching.batcher import BatchPolicy, DynamicBatcher
from isaac_perf.core.batching.multi_device import ComputeDevice, MultiDeviceScheduler
from isaac_perf.core.batching.pipeline import MultiStreamPipeline
from isaac_perf.core.batching.placement import (
    batch_limit_errors,
    batch_limits,
    gpu_ids_errors,
    resolve_gpu_ids,
)
from isaac_perf.core.batching.scheduler import BatchScheduler
from isaac_perf.core.cuda.base import CpuRuntime
from isaac_perf.core.cuda.sim import SimClock, SimRuntime
from isaac_perf.core.tuning.advisor import advise
from isaac_perf.core.tuning.knobs import PipelineState, Requirements, batcher_knobs
from isaac_perf.core.tuning.plant import BatchedPipelineModel
from isaac_perf.core.tuning.search import gpu_axis, gpu_ids_for

MS = 1_000_000


def sim_compute(cost_ns: int):
    """A batch costs `cost_ns` of device time; the output is each frame's sum (checks the data path)."""
    def compute(x, stream, meta):
        stream.busy(cost_ns)
        return {'sum': np.asarray(x, dtype=np.int64).reshape(len(x), -1).sum(axis=1)}
    return compute


def sim_devices(clock, costs_ms, limits=None, streams=1):
    limits = limits or [None] * len(costs_ms)
    devices = [ComputeDevice(SimRuntime(clock, i), sim_compute(int(c * MS)), max_batch_size=lim)
               for i, (c, lim) in enumerate(zip(costs_ms, limits, strict=True))]
    return MultiDeviceScheduler(devices, num_streams=streams, depth=2, clock=clock)


def frames(n, value=1, shape=(2, 2, 3)):
    return [np.full(shape, value + i, np.uint8) for i in range(n)]


# ------------------------------------------------------------------------------------------- routing


def test_least_loaded_routing_by_batches_then_frames_in_flight():
    clock = SimClock()
    sched = sim_devices(clock, [1.0, 4.0])  # device 0 takes 1 ms per batch, device 1 takes 4 ms
    assert sched.device_indices == [0, 1]
    # t=0: both idle -> 0; then 1 (0 holds a batch); tie at one each -> 0 (its turn); 0 now full (depth 2)
    ids = [sched.submit(frames(2)) for _ in range(3)]
    assert sched.loads() == [2, 1]
    assert ids == [0, 1, 2]
    clock.advance_to(2 * MS)  # device 0 finished both (1 ms each, one stream); device 1 busy until 4 ms
    sched.submit(frames(2))  # -> 0 (no batch in flight there)
    assert sched.batches_per_device == [3, 1]
    done = sched.poll()
    assert [(c.job_id, c.device) for c in done] == [(0, 0), (2, 0)]
    clock.advance_to(4 * MS)
    done = sched.poll()
    # completions come back in submit order over all devices: job 1 (device 1) before job 3 (device 0)
    assert [(c.job_id, c.device) for c in done] == [(1, 1), (3, 0)]
    assert [c.outputs['sum'].tolist() for c in done] == [[12, 24], [12, 24]]
    # all idle, device 1's turn (the start rotates past the last pick); then device 0 (idle); then a tie
    # on batches per lane (one each): the device with fewer frames in flight wins
    a = sched.submit(frames(4))
    b = sched.submit(frames(1))
    c = sched.submit(frames(1))
    clock.advance_to(100 * MS)
    by_id = {comp.job_id: (comp.device, comp.batch_size) for comp in sched.poll()}
    assert by_id == {a: (1, 4), b: (0, 1), c: (0, 1)}  # c: device 0 held 1 frame, device 1 held 4
    assert sched.close() == {'host': [], 'device': []}


def test_idle_identical_devices_take_turns_and_cpu_devices_work():
    # CPU runtime: work is synchronous, nothing stays in flight, so equal devices simply alternate.
    devices = [ComputeDevice(CpuRuntime(), sim_compute_cpu) for _ in range(3)]
    sched = MultiDeviceScheduler(devices, num_streams=2)
    for k in range(6):
        sched.submit(frames(1, value=k))
    assert sched.batches_per_device == [2, 2, 2]
    done = sched.poll()
    assert [c.job_id for c in done] == list(range(6))
    assert [int(c.outputs['sum'][0]) for c in done] == [12 * k for k in range(6)]
    assert all(c.device == -1 for c in done)  # CPU runtime: no CUDA device
    for c in done:
        c.release()
    assert sched.close() == {'host': [], 'device': []}


def sim_compute_cpu(x, stream, meta):
    return {'sum': np.asarray(x, dtype=np.int64).reshape(len(x), -1).sum(axis=1)}


def test_per_gpu_batch_limits_respected_and_every_frame_once():
    clock = SimClock()
    sched = sim_devices(clock, [1.0, 1.0], limits=[2, None])
    cams = [f'c{i}' for i in range(8)]
    batcher = DynamicBatcher(BatchPolicy(max_batch_size=8, max_queue_delay_ns=1 * MS, queue_depth=8))
    pipe = MultiStreamPipeline(batcher, sched, clock=clock)
    for k in range(3):
        for c in cams:
            pipe.push(c, np.full((2, 2, 3), k, np.uint8), stamp_ns=k, now_ns=clock())
    # t=0, 24 frames queued: device 0 (limit 2) gets a full batch of 2, device 1 one of 8, device 0 (a tie
    # on batches per lane, fewer frames) another 2, then device 1 (device 0 full) another 8: no lane free.
    assert pipe.step(clock()) == []
    sizes = [(d, n) for d, n in zip(sched.batches_per_device, sched.frames_per_device, strict=True)]
    assert sizes == [(2, 4), (2, 16)]
    assert not sched.has_capacity()
    results = []
    for t in range(1, 30):
        clock.advance_to(t * MS)
        results += pipe.step(clock())
    results += pipe.drain(clock())
    on0 = {r.batch_id: r.batch_size for r in results if r.gpu_index == 0}
    on1 = {r.batch_id: r.batch_size for r in results if r.gpu_index == 1}
    assert on0 and on1
    assert max(on0.values()) <= 2 and max(on1.values()) == 8
    assert sorted((r.camera, r.seq) for r in results) == sorted((c, k) for c in cams for k in range(3))
    assert sched.close() == {'host': [], 'device': []}


def test_per_camera_order_kept_when_a_later_batch_finishes_first():
    clock = SimClock()
    sched = sim_devices(clock, [10.0, 1.0])  # device 0 slow, device 1 fast
    batcher = DynamicBatcher(BatchPolicy(max_batch_size=2, max_queue_delay_ns=0, queue_depth=4))
    pipe = MultiStreamPipeline(batcher, sched, clock=clock)
    for k in range(2):
        for c in ('a', 'b'):
            pipe.push(c, np.full((2, 2, 3), 10 * k + (c == 'b'), np.uint8), stamp_ns=k, now_ns=clock())
        assert pipe.step(clock()) == []
    assert sched.batches_per_device == [1, 1]  # seq 0 of both cameras on device 0, seq 1 on device 1
    clock.advance_to(1 * MS)
    assert pipe.step(clock()) == []  # seq 1 is done (device 1) but seq 0 (device 0) is not: held back
    assert pipe.orderer.waiting() == 4 and sched.in_flight == 1
    clock.advance_to(10 * MS)
    out = pipe.step(clock())
    assert [(r.camera, r.seq, r.gpu_index) for r in out] == [('a', 0, 0), ('a', 1, 1), ('b', 0, 0),
                                                              ('b', 1, 1)]
    assert [int(r.result['sum']) for r in out if r.camera == 'b'] == [12, 11 * 12]
    assert sched.close() == {'host': [], 'device': []}


def test_single_device_multi_path_equals_batch_scheduler():
    """Same frames, same batches: MultiDeviceScheduler with one device == BatchScheduler (CPU runtime)."""
    rng = np.random.default_rng(3)
    data = [[rng.integers(0, 255, (4, 5, 3), dtype=np.uint8) for _ in range(5)] for _ in range(3)]

    def run(sched):
        pipe = MultiStreamPipeline(DynamicBatcher(BatchPolicy(max_batch_size=4, max_queue_delay_ns=0)), sched)
        out = []
        for k in range(5):
            for i in range(3):
                pipe.push(f'c{i}', data[i][k], k, k)
            out += pipe.step(k)
        out += pipe.drain(10)
        sched.close()
        return [(r.camera, r.seq, r.batch_id, r.batch_size, r.result['sum'].tolist()) for r in out]

    single = run(BatchScheduler(CpuRuntime(), sim_compute_cpu, num_streams=2))
    multi = run(MultiDeviceScheduler([ComputeDevice(CpuRuntime(), sim_compute_cpu)], num_streams=2))
    assert single == multi and len(single) == 15


def test_batch_larger_than_every_limit_is_refused_with_the_fix():
    sched = MultiDeviceScheduler([ComputeDevice(CpuRuntime(), sim_compute_cpu, max_batch_size=2)])
    with pytest.raises(ValueError, match='larger than every device batch limit'):
        sched.submit(frames(3))
    assert sched.batch_limit() == 2 and sched.max_batch_limit() == 2


# ------------------------------------------------------------------------------------- configuration


def test_gpu_ids_resolution_and_errors_name_the_visible_gpus():
    visible = ['NVIDIA H100', 'NVIDIA H100']
    assert resolve_gpu_ids([-1], visible) == [0, 1]
    assert resolve_gpu_ids([], visible) == [0, 1]
    assert resolve_gpu_ids([1, 0], visible) == [1, 0]
    assert resolve_gpu_ids([-1], []) == []  # no CUDA: one CPU device
    assert resolve_gpu_ids([1], []) == []  # explicit ids without a GPU: the caller warns, runs on CPU
    errors = gpu_ids_errors([0, 3], visible)
    assert errors == ['gpu_ids [0, 3]: GPU 3 does not exist; visible GPUs: 0 (NVIDIA H100), 1 (NVIDIA H100)']
    assert 'listed twice' in gpu_ids_errors([0, 0], visible)[0]
    assert 'not GPU indices' in gpu_ids_errors([-1, 0], visible)[0]
    with pytest.raises(ValueError, match='GPU 2 does not exist'):
        resolve_gpu_ids([2], visible)


def test_per_gpu_batch_limits():
    assert batch_limits([0], 2) == [None, None]
    assert batch_limits([], 3) == [None, None, None]
    assert batch_limits([4], 2) == [4, 4]
    assert batch_limits([2, 0], 2) == [2, None]
    assert 'has 3 entries for 2 device(s)' in batch_limit_errors([1, 2, 3], 2)[0]
    assert 'outside 0..256' in batch_limit_errors([300], 1)[0]
    with pytest.raises(ValueError):
        batch_limits([-1], 1)


# ------------------------------------------------------------------------------------------- tuning


def test_tuner_treats_gpu_count_as_a_knob():
    assert gpu_axis(4).values == (1, 2, 3, 4)
    assert gpu_axis(4, limit=2).values == (1, 2)
    assert gpu_axis(0).values == (1,)  # no GPU: nothing to search
    assert gpu_ids_for(3) == [0, 1, 2]
    model = BatchedPipelineModel(cameras=8, overhead_ms=4.0, per_frame_ms=0.25)
    one = model.evaluate({'max_batch_size': 8, 'num_streams': 1, 'num_gpus': 1})
    two = model.evaluate({'max_batch_size': 8, 'num_streams': 1, 'num_gpus': 2})
    # saturated: capacity adds up; each GPU runs a batch of 8 in 4 + 2 = 6 ms
    assert one.throughput_fps == pytest.approx(8000 / 6)
    assert two.throughput_fps == pytest.approx(2 * 8000 / 6)
    assert one == model.evaluate({'max_batch_size': 8, 'num_streams': 1})  # default: one GPU
    knobs = batcher_knobs(gpus=(1, 2))
    assert [k.values for k in knobs if k.name == 'num_gpus'] == [(1, 2)]
    state = PipelineState(config={'max_batch_size': 8, 'num_streams': 1, 'num_gpus': 1,
                                  'max_queue_delay_ms': 2.0}, fps=1000.0, latency_p99_ms=10.0,
                          gpu_util_pct=95.0, cameras=8, mean_batch=8.0)
    changes = advise(Requirements(max_latency_ms=33.0), state, knobs, purpose='explore').changes
    gpu = [c for c in changes if 'num_gpus' in c.new]
    assert gpu and gpu[0].new == {'num_gpus': 2} and gpu[0].expected_fps == pytest.approx(2000.0)
    over = PipelineState(config=state.config, fps=1000.0, latency_p99_ms=50.0, gpu_util_pct=95.0, cameras=8,
                         mean_batch=8.0)
    fixes = advise(Requirements(max_latency_ms=33.0), over, knobs, purpose='fix').changes
    assert any(c.new.get('num_gpus') == 2 for c in fixes)
    assert not [c for c in advise(Requirements(max_latency_ms=33.0), state, batcher_knobs(),
                                  purpose='explore').changes if 'num_gpus' in c.new]


def test_qos_tuner_maps_num_gpus_onto_gpu_ids():
    pytest.importorskip('rclpy')
    from isaac_perf.nodes.qos_tuner import knob_from_target, knob_to_target
    assert knob_to_target('num_gpus', 2) == ('gpu_ids', [0, 1])
    assert knob_from_target('num_gpus', [0, 1, 2], max_gpus=4) == 3
    assert knob_from_target('num_gpus', [-1], max_gpus=4) == 4
    assert knob_to_target('max_batch_size', 8.0) == ('max_batch_size', 8)


# ---------------------------------------------------------------------------------------------- node


@pytest.mark.ros
def test_stream_batcher_refuses_bad_gpu_settings_and_reports_gpu_index(ros_context, spin, tmp_path):
    pytest.importorskip('rclpy')
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray, Float64MultiArray

    from isaac_perf.core.inference.models import build_detector
    from isaac_perf.nodes.stream_batcher import StreamBatcher
    from isaac_perf.ros.conversions import numpy_to_image

    model = str(build_detector(64, 64, num_classes=4, cache_dir=tmp_path))
    cam = '/mgt/cam0/image_raw'
    params = dict(camera_topics=[cam], input_reliability='reliable', max_batch_size=4, max_queue_delay_ms=0.0,
                  model='', model_file_path=model, backend='onnxruntime', device='cpu', enable_fp16=False,
                  task='detection', warmup_iterations=0, gpu_ids=[-1], max_batch_size_per_gpu=[0])
    node = StreamBatcher(context=ros_context,
                         parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    harness = Node('mgt_harness', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(harness)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    results, reports = [], []
    pub = harness.create_publisher(Image, cam, reliable)
    # inference_node's rule: <input topic>/detections
    harness.create_subscription(Float32MultiArray, cam + '/detections', results.append, reliable)
    harness.create_subscription(Float64MultiArray, '/stream_batcher/stage_times',
                                lambda m: reports.append(dict(zip([d.label for d in m.layout.dim], m.data,
                                                                  strict=True))), reliable)
    try:
        for name, value, reason in (('gpu_ids', [0, 0], 'listed twice'),
                                    ('gpu_ids', [-2], 'not GPU indices'),
                                    ('max_batch_size_per_gpu', [300], 'outside 0..256'),
                                    ('max_batch_size_per_gpu', [-1], 'outside 0..256')):
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and reason in result.reason, (name, value, result.reason)
        assert node.set_parameters([Parameter('max_batch_size_per_gpu', value=[2])])[0].successful
        assert node.engine_ready.wait(20.0), node.engine_error
        assert spin(executor, lambda: pub.get_subscription_count() == 1 and harness.count_publishers(
            cam + '/detections') == 1, 10.0)
        pub.publish(numpy_to_image(np.zeros((48, 64, 3), np.uint8), 'rgb8', stamp_ns=1_000_000_000))
        assert spin(executor, lambda: results and reports, 10.0)
        assert reports[0]['gpu_index'] == -1.0  # CPU runtime
        labels = list(reports[0])
        assert labels[-4:] == ['engine_batch_size', 'dropped', 'camera_index', 'gpu_index']  # appended
        values = node.diagnostics_values()
        assert values['gpus'] == '-1' and 'batch_limit 2' in values['device -1']
    finally:
        executor.shutdown()
        node.destroy_node()
        harness.destroy_node()


# ----------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_multi_device_path_on_one_gpu_gives_the_single_device_outputs(tmp_path):
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    from isaac_perf.core.batching.compute import EngineCompute
    from isaac_perf.core.cuda.torch_runtime import TorchRuntime
    from isaac_perf.core.inference.engines.base import EngineOptions
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.models import build_resnet50
    from isaac_perf.core.inference.preprocess import PreprocessConfig

    path = str(build_resnet50(image_size=224, cache_dir=tmp_path))
    engine = create_engine('torch', path, EngineOptions(device='cuda:0', precision='fp32', max_batch_size=64),
                           fallback=False)
    cfg = PreprocessConfig(width=224, height=224)
    rng = np.random.default_rng(0)
    data = [[rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(3)] for _ in range(8)]

    def run(sched):
        pipe = MultiStreamPipeline(DynamicBatcher(BatchPolicy(max_batch_size=8, max_queue_delay_ns=0,
                                                              queue_depth=8)), sched)
        for k in range(3):
            for i in range(8):
                pipe.push(f'c{i}', data[i][k], k, k, key=(480, 640, 'rgb8'))
        out = pipe.step(10)  # every batch fits the lanes: sent at once, composed the same way each run
        out += pipe.drain(10)
        batches = list(getattr(sched, 'batches_per_device', [3]))
        leaks = sched.close()
        assert not any(leaks.values())
        return {(r.camera, r.seq): r for r in out}, batches

    def compute():
        return EngineCompute(engine, cfg, gpu=True)

    single, _ = run(BatchScheduler(TorchRuntime('cuda'), compute(), num_streams=2))
    multi, multi_batches = run(MultiDeviceScheduler([ComputeDevice(TorchRuntime('cuda:0'), compute())],
                                                    num_streams=2))
    # two "devices" on the same GPU: routing over several devices (one with a batch limit of 4)
    two, two_batches = run(MultiDeviceScheduler(
        [ComputeDevice(TorchRuntime('cuda:0'), compute()),
         ComputeDevice(TorchRuntime('cuda:0'), compute(), max_batch_size=4)], num_streams=2))
    expected = {(f'c{i}', k) for i in range(8) for k in range(3)}
    assert set(single) == set(multi) == set(two) == expected
    assert multi_batches == [3] and two_batches[0] >= 1 and two_batches[1] >= 1
    assert not any(r.error for d in (single, multi, two) for r in d.values())
    assert {r.gpu_index for r in multi.values()} == {0} and {r.gpu_index for r in two.values()} == {0}
    assert max(r.batch_size for r in two.values() if r.batch_size != 8) <= 4
    for key, a in single.items():
        b = multi[key]
        assert (a.batch_id, a.batch_size) == (b.batch_id, b.batch_size)  # the same batches...
        for name in a.result:  # ...give the same outputs
            scale = float(np.abs(a.result[name]).max()) or 1.0
            np.testing.assert_allclose(b.result[name], a.result[name], rtol=1e-4, atol=1e-5 * scale)
            # other batch sizes (4 on the limited device) may pick other conv algorithms (TF32): rounding
            np.testing.assert_allclose(two[key].result[name], a.result[name], rtol=1e-2, atol=1e-2 * scale)
    engine.close()
