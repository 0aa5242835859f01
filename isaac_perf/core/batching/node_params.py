"""stream_batcher's parameters and the rules between them (no ROS: the node declares this table).

The model parameters are inference_node's (`core.inference.node_params`); around them come the cameras,
the batching policy (`BatchPolicy`), the CUDA streams and the GPUs engines are placed on.
"""
from __future__ import annotations

from typing import Any

from isaac_perf.core.batching.batcher import NS_PER_MS, BatchPolicy
from isaac_perf.core.batching.placement import batch_limit_errors, gpu_ids_errors, placement_errors
from isaac_perf.core.cuda.streams import POLICIES
from isaac_perf.core.inference.node_params import (
    DIAGNOSTICS_SPEC,
    MODEL_RELOAD_KEYS,
    MODEL_SPECS,
    POSTPROCESS_SPECS,
    fp16_spec,
    model_file_errors,
    model_rule_errors,
    names,
    topic_list_errors,
)
from isaac_perf.core.params import ParamSpec
from isaac_perf.core.transport.params import ZERO_COPY_READER

RELIABILITY = ('best_effort', 'reliable')


def result_topic(camera_topic: str, suffix: str) -> str:
    """/camera_0/image_raw -> /camera_0/image_raw/<suffix>: inference_node's rule (<input topic>/...)."""
    return f'{camera_topic.rstrip("/")}/{suffix.strip("/")}'


def _gpu_ids_ok(values: list[int]) -> str:
    return '; '.join(gpu_ids_errors(values, []))  # format only; existence: cross_check


def _limits_ok(values: list[int]) -> str:
    return '; '.join(batch_limit_errors(values, max(len(values), 1)))


def _preferred_ok(values: list[int]) -> str:
    bad = [v for v in values if not (v == 0 or 1 <= v <= 256)]
    return f'preferred_batch_sizes {bad}: each entry must be 1..256 (0 entries mean none)' if bad else ''


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('camera_topics', ['/camera_0/image_raw', '/camera_1/image_raw'],
              'sensor_msgs/Image topics to batch, one per camera (the round-robin order is this order).'),
    ParamSpec('output_suffix', 'detections', 'Results go to <camera topic>/<output_suffix> (as in '
              'inference_node: /camera_0/image_raw/detections).'),
    ParamSpec('input_reliability', 'reliable', 'Reliability of the camera subscriptions; changing it '
              'recreates them. reliable by default: between processes best effort lost frames over the '
              'shared-memory segment (640x480 rgb8 and larger); best_effort suits small frames and '
              'best-effort camera drivers.', choices=RELIABILITY),
    ParamSpec('max_batch_size', 8, 'A batch is sent as soon as it holds this many frames.', min=1, max=256),
    ParamSpec('max_queue_delay_ms', 5.0, 'A partial batch is sent once its oldest frame has waited this '
              'long (0 = send whatever is queued at once).', min=0.0, max=1000.0),
    ParamSpec('preferred_batch_sizes', [0], 'Batch sizes sent at once when they can be formed (Triton '
              'semantics); [0] = none.', check=_preferred_ok),
    ParamSpec('queue_depth', 4, 'Frames queued per camera; a new frame into a full queue evicts the '
              'oldest (counted as dropped).', min=1, max=1000),
    ParamSpec('num_streams', 2, 'CUDA streams (lanes of copy + compute stream) batches are spread over.',
              min=1, max=16),
    ParamSpec('stream_policy', 'round_robin', 'How a batch picks its stream.', choices=POLICIES),
    ParamSpec('gpu_ids', [-1], 'CUDA GPUs to spread batches over, one engine each (least-loaded routing); '
              '[-1] = every visible GPU. Ignored with device cpu or cuda:N, and (with a warning) on a '
              'machine without a GPU. Changing it reloads the engines.', check=_gpu_ids_ok),
    ParamSpec('max_batch_size_per_gpu', [0], 'Largest batch per GPU, one entry per gpu_ids entry or one '
              'for all; 0 = max_batch_size ([0] = no per-GPU limit). Live.', check=_limits_ok),
    ParamSpec('stage_threads', 4, 'Threads that copy a batch\'s frames into pinned staging memory (GPU '
              'runtime; 0 or 1 = the worker thread alone).', min=0, max=32, read_only=True),
    ParamSpec('buffers_per_stream', 2, 'Batches in flight per stream (2 = double buffering: the upload '
              'of the next batch overlaps the compute of this one).', min=1, max=8, read_only=True),
    *MODEL_SPECS,
    fp16_spec(True),
    ParamSpec('cuda_graphs', False, 'torch backend on a GPU: one engine per stream, each replaying one CUDA '
              'graph per batch-size bucket (powers of two up to max_batch_size; batches are zero-padded up '
              'to a bucket). Removes the per-kernel launch cost; changing num_streams then reloads.'),
    ParamSpec('graph_max_batch_size', 0, 'Warm the engine (and capture CUDA graphs) for every bucket up to '
              'this batch size at load, so max_batch_size changes up to it never reload (a tuner sets it to '
              'its batch_size_max); 0 = max_batch_size.', min=0, max=256),
    ParamSpec('graph_streams', 0, 'With cuda_graphs, build one engine per stream for this many streams at '
              'load, so num_streams changes up to it never reload; 0 = num_streams.', min=0, max=16),
    ParamSpec('measure_batch_latency', True, 'Time one batch at each warmed size after load and publish the '
              'curve in /diagnostics as batch_latency_ms (the qos_tuner plans its start from it).',
              read_only=True),
    *POSTPROCESS_SPECS,
    ParamSpec('warmup_iterations', 2, 'Runs per batch size at engine load (powers of two up to '
              'max_batch_size).', min=0, max=100),
    ParamSpec('camera_timeout_s', 2.0, 'A camera silent this long is reported stopped (its queued frames '
              'drain; it rejoins with its next frame). Time the node itself could not listen (its '
              'diagnostics timer ran late) does not count as silence.', min=0.05, max=3600.0),
    ParamSpec('gil_switch_interval_us', 200, "Python's GIL switch interval for this process, in "
              'microseconds (0 = the interpreter default of 5000). Every GPU op releases and re-takes the '
              'GIL; at the default each re-take waited up to 5 ms behind the camera callbacks, which '
              'stretched the engine load (CUDA graph capture) to minutes under 8 cameras.',
              min=0, max=100000, read_only=True),
    ZERO_COPY_READER,
    DIAGNOSTICS_SPEC,
)

# Which parameters change what at run time: the batch policy, the subscriptions, the engines.
BATCH_KEYS = frozenset({'max_batch_size', 'max_queue_delay_ms', 'queue_depth', 'preferred_batch_sizes'})
IO_KEYS = frozenset({'camera_topics', 'input_reliability', 'output_suffix', 'zero_copy'})
RELOAD_KEYS = MODEL_RELOAD_KEYS | {'gpu_ids', 'graph_max_batch_size', 'graph_streams'}


def policy_from(values: dict[str, Any]) -> BatchPolicy:
    return BatchPolicy(max_batch_size=int(values['max_batch_size']),
                       max_queue_delay_ns=int(round(float(values['max_queue_delay_ms']) * NS_PER_MS)),
                       preferred_batch_sizes=tuple(int(p) for p in values['preferred_batch_sizes'] if p),
                       queue_depth=int(values['queue_depth']))


def _topic_errors(values: dict[str, Any]) -> list[str]:
    topics = names(values['camera_topics'])
    errors = topic_list_errors('camera_topics', topics)
    if errors:
        return errors
    if not values['output_suffix'].strip('/'):
        return ['output_suffix is empty: give a name such as detections']
    outs = [result_topic(t, values['output_suffix']) for t in topics]
    clash = sorted({o for o in outs if outs.count(o) > 1})
    if clash:
        return [f'cameras share a result topic {clash}: list each camera topic once (a trailing / names the '
                'same topic)']
    return []


def cross_check(values: dict[str, Any], visible: list[str]) -> list[str]:
    """Rules between parameters given the GPUs this process sees; messages say what to change (start-up
    and `ros2 param set` alike)."""
    return (_topic_errors(values) + policy_from(values).errors()
            + placement_errors(values['device'], values['gpu_ids'], values['max_batch_size_per_gpu'], visible)
            + model_rule_errors(values) + model_file_errors(values))
