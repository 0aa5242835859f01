"""The pure logic inference_node and stream_batcher delegate to core: model rules, frame checks, queue
merge, warm-up sizes, engine placement and /diagnostics levels (no ROS, exact values)."""
from collections import deque

import pytest

from isaac_perf.core.batching.health import batcher_summary
from isaac_perf.core.batching.placement import (
    Placement,
    device_limits,
    graph_buckets,
    placement_errors,
    plan_placement,
)
from isaac_perf.core.inference.batches import take_oldest_first, warmup_batch_sizes
from isaac_perf.core.inference.engines.base import EngineError
from isaac_perf.core.inference.frames import ImageFormatError
from isaac_perf.core.inference.health import inference_summary, source_summary
from isaac_perf.core.inference.node_params import (
    MODEL_SPECS,
    check_model_frame,
    device_error,
    fp16_spec,
    model_file_errors,
    model_path,
    model_rule_errors,
    names,
    topic_list_errors,
)
from isaac_perf.core.params import spec_defaults
from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import Status

GPUS = ['NVIDIA H200', 'NVIDIA H200']


def model_values(**over):
    return {**spec_defaults(MODEL_SPECS), **over}


# ------------------------------------------------------------------------------------- parameters

def test_device_names():
    assert [device_error(d) for d in ('auto', 'cpu', 'cuda', 'cuda:3')] == ['', '', '', '']
    assert "use 'auto', 'cpu', 'cuda' or 'cuda:N'" in device_error('gpu0')
    assert device_error('cuda:x') != ''


def test_fp16_default_is_per_node_and_the_rest_is_shared():
    assert fp16_spec(True).default is True and fp16_spec(False).default is False
    assert fp16_spec(True).description == fp16_spec(False).description
    assert names(['', '/a', '', '/b']) == ['/a', '/b']


def test_model_rules():
    assert model_rule_errors(model_values()) == []
    assert model_rule_errors(model_values(input_width=224, input_height=160)) == [
        'resnet50 takes square inputs: input_width=224 and input_height=160 differ']
    assert model_rule_errors(model_values(input_width=16)) == ['resnet50 needs an input of at least 32x32']
    assert model_rule_errors(model_values(task='detection')) == [
        'task=detection does not fit model=resnet50: use task auto or classification']
    assert model_rule_errors(model_values(model='detector', input_width=100, input_height=32)) == [
        'detector input_width=100: use a multiple of 32, at least 64',
        'detector input_height=32: use a multiple of 32, at least 64']
    assert model_rule_errors(model_values(model='detector', input_width=384, input_height=256)) == []


def test_model_file_rules_and_path(tmp_path):
    assert model_file_errors(model_values()) == []
    assert model_file_errors(model_values(model='')) == [
        "model is '' so model_file_path must name an ONNX file"]
    missing = str(tmp_path / 'missing.onnx')
    assert model_file_errors(model_values(model='', model_file_path=missing)) == [
        f'model_file_path {missing!r} does not exist: give the path of an ONNX file']
    # A set path is the model that runs, so it is checked even while a built-in model is named.
    assert model_file_errors(model_values(model='detector', model_file_path=missing))[0].startswith(
        f'model_file_path {missing!r} does not exist')
    present = tmp_path / 'm.onnx'
    present.write_bytes(b'')
    assert model_file_errors(model_values(model='', model_file_path=str(present))) == []
    assert model_path(model_values(model='', model_file_path=str(present))) == str(present)
    assert model_path(model_values(model='detector', model_file_path=str(present))) == str(present)
    with pytest.raises(EngineError, match='no model'):
        model_path(model_values(model=''))


def test_topic_lists():
    assert topic_list_errors('input_topics', ['/a']) == []
    assert topic_list_errors('input_topics', []) == [
        'input_topics is empty: list at least one sensor_msgs/Image topic']
    assert topic_list_errors('camera_topics', ['/a', '/a']) == ["camera_topics has duplicates: ['/a', '/a']"]


def test_model_frame_check():
    check_model_frame('rgb8', 4, 2, 12, 24)
    with pytest.raises(ImageFormatError, match="encoding 'rgb16' cannot be fed to the model"):
        check_model_frame('rgb16', 4, 2, 24, 48)  # a valid layout, but not a model input
    with pytest.raises(ImageFormatError):
        check_model_frame('rgb8', 4, 2, 12, 23)  # one byte short


# ----------------------------------------------------------------------------------- batches

def test_warmup_sizes():
    assert warmup_batch_sizes(4, on_gpu=True) == (1, 2, 3, 4)
    assert warmup_batch_sizes(4, on_gpu=False) == (1, 4)
    assert warmup_batch_sizes(1, on_gpu=False) == (1,)
    assert warmup_batch_sizes(8, on_gpu=True, static_batch=2) == (2,)


def test_take_oldest_first_merges_queues_by_arrival():
    queues = [deque([10, 40, 50]), deque([20, 30]), deque(), deque([5])]
    assert take_oldest_first(queues, 4, lambda t: t) == [5, 10, 20, 30]
    assert [list(q) for q in queues] == [[40, 50], [], [], []]
    assert take_oldest_first(queues, 10, lambda t: t) == [40, 50]
    assert take_oldest_first(queues, 10, lambda t: t) == []


def test_take_oldest_first_breaks_ties_by_queue_index():
    queues = [deque([(7, 'a0'), (9, 'a1')]), deque([(7, 'b0')])]
    assert take_oldest_first(queues, 3, lambda t: t[0]) == [(7, 'a0'), (7, 'b0'), (9, 'a1')]


# --------------------------------------------------------------------------------- placement

def test_placement_single_and_several_gpus():
    assert plan_placement('cpu', [-1], GPUS) == Placement([], ['cpu'])
    assert plan_placement('auto', [-1], GPUS) == Placement([0, 1], ['cuda:0', 'cuda:1'])
    assert plan_placement('auto', [0], GPUS) == Placement([0], ['auto'])  # one GPU: device as written
    assert plan_placement('cuda', [1], GPUS) == Placement([1], ['cuda:1'])
    assert plan_placement('cuda:1', [-1], GPUS) == Placement([1], ['cuda:1'])
    assert plan_placement('auto', [1, 0], GPUS).targets == ['cuda:1', 'cuda:0']


def test_placement_without_a_gpu_warns_and_runs_on_device():
    placement = plan_placement('cuda', [0, 1], [])
    assert placement.gpus == [] and placement.targets == ['cuda']
    assert 'no CUDA GPU is visible here' in placement.warning
    assert plan_placement('auto', [-1], []).warning == ''
    with pytest.raises(ValueError, match='GPU 2 does not exist'):
        plan_placement('auto', [0, 2], GPUS)


def test_placement_errors():
    assert placement_errors('auto', [-1], [0], GPUS) == []
    assert 'names one GPU but gpu_ids=[0]' in placement_errors('cuda:1', [0], [0], GPUS)[0]
    assert 'GPU 5 does not exist' in placement_errors('auto', [5], [0], GPUS)[0]
    assert 'has 3 entries for 2 device(s)' in placement_errors('auto', [-1], [1, 2, 3], GPUS)[0]
    assert placement_errors('cpu', [5], [1, 2, 3], GPUS) == []  # gpu rules do not apply on the CPU


def test_device_limits_and_buckets():
    assert device_limits([4, 0], 2) == [4, None]
    assert device_limits([4, 2], 1) == [None]  # asked for two GPUs, fell back to one device
    assert device_limits([3], 2) == [3, 3]
    assert graph_buckets(8) == (1, 2, 4, 8)
    assert graph_buckets(6) == (1, 2, 4, 6)
    assert graph_buckets(1) == (1,)


# ------------------------------------------------------------------------------------ health

def inference_status(**over):
    args = dict(engine_error='', loaded=True, running_on='onnxruntime (cpu)', last_error='',
                drops_by_reason={'queue_overflow': 0, 'bad_input': 0, 'engine_error': 0}, warnings=[])
    args.update(over)
    status = Status()
    inference_summary(status, **args)
    return status.level, status.message


def test_inference_levels():
    assert inference_status() == (Level.OK, 'running on onnxruntime (cpu)')
    assert inference_status(engine_error='missing.onnx') == (Level.ERROR, 'no engine: missing.onnx')
    assert inference_status(loaded=False) == (Level.WARN, 'loading the engine')
    assert inference_status(warnings=['no GPU', 'tensorrt missing']) == (Level.WARN, 'tensorrt missing')
    assert inference_status(last_error='bad frame', drops_by_reason={'bad_input': 1}) == (
        Level.ERROR, 'bad frame')
    # Overflow is load, not a fault: the level stays OK.
    assert inference_status(last_error='x', drops_by_reason={'queue_overflow': 3})[0] == Level.OK


def test_batcher_and_source_levels():
    status = Status()
    batcher_summary(status, engine_error='', loaded=True, device='cuda:0', dropped=0)
    assert (status.level, status.message) == (Level.OK, 'batching on cuda:0')
    batcher_summary(status, engine_error='', loaded=True, device='cuda:0', dropped=3)
    assert (status.level, status.message) == (Level.WARN, '3 frame(s) dropped')
    batcher_summary(status, engine_error='boom', loaded=False, device='', dropped=3)
    assert (status.level, status.message) == (Level.ERROR, 'no engine: boom')
    source_summary(status, '', 2)
    assert (status.level, status.message) == (Level.OK, 'publishing 2 camera(s)')
    source_summary(status, 'no such folder', 0)
    assert (status.level, status.message) == (Level.ERROR, 'no such folder')


# ----------------------------------------------------------------------------- device engines

def batcher_values(model, **over):
    from isaac_perf.core.batching.node_params import PARAMS as BATCHER_PARAMS
    return {**spec_defaults(BATCHER_PARAMS), 'model': '', 'model_file_path': model, 'backend': 'onnxruntime',
            'device': 'cpu', 'enable_fp16': False, 'task': 'detection', 'warmup_iterations': 0, **over}


def test_engines_on_several_targets_fall_back_to_one_cpu_device(tmp_path):
    pytest.importorskip('onnxruntime')
    from isaac_perf.core.batching.device_engines import build_scheduler, load_engines
    from isaac_perf.core.inference.models import build_detector
    values = batcher_values(str(build_detector(64, 64, num_classes=4, cache_dir=tmp_path)),
                            max_batch_size_per_gpu=[3, 5])
    logged = []
    engines = load_engines(values, values, ['cuda:0', 'cuda:1'], logged.append)
    try:
        # onnxruntime is not torch on CUDA: one engine, and the log says the GPU list was not used.
        assert len(engines.per_device) == 1 and engines.extra_engines == []
        assert any('spreading over GPUs needs the torch backend' in m for m in logged), logged
        assert (engines.graphs, engines.on_gpu, engines.buckets, engines.plan.task) == (
            False, False, (), 'detection')
        sched = build_scheduler(engines, values, values)
        # Two per-GPU limits for the one device actually built: no limit rather than a wrong one.
        assert (sched.device_indices, sched.limits, sched.num_streams) == ([-1], [None], 2)
        sched.close()
    finally:
        engines.close()


def test_engine_load_failure_raises_and_builds_nothing(tmp_path):
    from isaac_perf.core.batching.device_engines import load_engines
    values = batcher_values(str(tmp_path / 'missing.onnx'))
    with pytest.raises(EngineError, match='missing.onnx'):
        load_engines(values, values, ['cpu'], print)
