"""`stream_batcher`: N camera topics in, dynamic batches on K CUDA streams, per-camera results out.

The ROS side of `isaac_perf.core.batching` (DynamicBatcher) and `isaac_perf.core.scheduler`
(BatchScheduler, MultiStreamPipeline):

- one subscription per camera (sensor_msgs/Image, `camera_topics`); the callback only validates the
  image header, views its pixels without a copy and queues the frame in the batcher (bounded per camera,
  drop-oldest, counted);
- a worker thread (not an executor callback: it blocks on CUDA events, never on the executor) sends a batch
  when it is full or its oldest frame has waited `max_queue_delay_ms`, over `num_streams` lanes with
  double-buffered pinned/device pools, and publishes every frame's result on its camera's own topic, in
  capture order per camera;
- results: `<camera topic>/<output_suffix>` (/camera_0/image_raw -> /camera_0/image_raw/detections, the
  rule of inference_node), the same std_msgs/Float32MultiArray layout as inference_node (classification
  rows [class_id, score]; detection rows [x1, y1, x2, y2, score, class_id] in the camera's pixels);
- `~/stage_times` (isaac_perf.core.stage_times), one report per frame with its header stamp, batch_size 1
  (the monitor sums it into FPS) and the stages transport, queue, pre, infer, post; after total_ms come
  four extra labelled fields: `engine_batch_size` (frames in the GPU batch it ran in), `dropped` (the
  camera's drops so far), `camera_index` and `gpu_index` (the CUDA device that ran its batch, -1 = CPU);
- several GPUs (`gpu_ids`): one engine per GPU, each with its own streams and pools; batches go to the
  least-loaded GPU (core.scheduler.MultiDeviceScheduler), each at most `max_batch_size_per_gpu` frames;
- `/diagnostics`: batch sizes, queue delays, drops per camera, streams, pool reuse and high-water marks.

Runtime parameters (the qos_tuner changes them live): `max_batch_size`, `max_queue_delay_ms`,
`num_streams`, `queue_depth`, `preferred_batch_sizes` take effect on the next batch without losing or
repeating a frame; `input_reliability` and `camera_topics` recreate the subscriptions (a removed camera's
queued frames still drain); model/backend parameters reload the engine in the worker while frames wait in
the batcher.
"""
from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension

from isaac_perf.core import stage_times
from isaac_perf.core.batch_model import ModelPlan
from isaac_perf.core.batching import NS_PER_MS, BatchPolicy, DynamicBatcher
from isaac_perf.core.cuda.batch_compute import EngineCompute
from isaac_perf.core.cuda.runtime import CpuRuntime, create_runtime, visible_gpus
from isaac_perf.core.cuda.streams import POLICIES
from isaac_perf.core.engines.base import Engine, EngineError, EngineOptions
from isaac_perf.core.frames import ImageFormatError
from isaac_perf.core.params import ParamSpec
from isaac_perf.core.preprocess import ENCODINGS as MODEL_ENCODINGS
from isaac_perf.core.scheduler import (
    ComputeDevice,
    FrameResult,
    MultiDeviceScheduler,
    MultiStreamPipeline,
    batch_limit_errors,
    batch_limits,
    gpu_ids_errors,
    resolve_gpu_ids,
)
from isaac_perf.nodes.inference import results_message
from isaac_perf.ros.compat import try_shutdown
from isaac_perf.ros.conversions import check_image, image_to_numpy, stamp_to_ns
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.qos import qos_from_name

NODE_NAME = 'stream_batcher'
RELIABILITY = ('best_effort', 'reliable')
BACKENDS = ('auto', 'onnxruntime', 'torch', 'tensorrt')
MODELS = ('resnet50', 'detector', '')
TASKS = ('auto', 'classification', 'detection')
SUBSCRIPTION_DEPTH = 5  # DDS history per camera; the batcher's own bound is queue_depth
EXTRA_FIELDS = ('engine_batch_size', 'dropped', 'camera_index', 'gpu_index')
LOG_REPEAT_S = 5.0


def _names(values: list[str]) -> list[str]:
    return [v for v in values if v]


def result_topic(camera_topic: str, suffix: str) -> str:
    """/camera_0/image_raw -> /camera_0/image_raw/<suffix>: inference_node's rule (<input topic>/...)."""
    return f'{camera_topic.rstrip("/")}/{suffix.strip("/")}'


_VISIBLE: list[str] | None = None


def visible() -> list[str]:
    """The GPUs this process sees (asked once: enumerating CUDA devices is slow and does not change)."""
    global _VISIBLE
    if _VISIBLE is None:
        _VISIBLE = visible_gpus()
    return _VISIBLE


def _gpu_ids_ok(values: list[int]) -> str:
    return '; '.join(gpu_ids_errors(values, []))  # format only; existence is checked in cross_check


def _limits_ok(values: list[int]) -> str:
    return '; '.join(batch_limit_errors(values, max(len(values), 1)))


def _preferred_ok(values: list[int]) -> str:
    bad = [v for v in values if not (v == 0 or 1 <= v <= 256)]
    return f'preferred_batch_sizes {bad}: each entry must be 1..256 (0 entries mean none)' if bad else ''


def _device_ok(value: str) -> str:
    if value in ('auto', 'cpu', 'cuda') or (value.startswith('cuda:') and value[5:].isdigit()):
        return ''
    return f"device={value!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('camera_topics', ['/camera_0/image_raw', '/camera_1/image_raw'],
              'sensor_msgs/Image topics to batch, one per camera (the round-robin order is this order).'),
    ParamSpec('output_suffix', 'detections', 'Results go to <camera topic>/<output_suffix> (as in '
              'inference_node: /camera_0/image_raw/detections).'),
    ParamSpec('input_reliability', 'best_effort', 'Reliability of the camera subscriptions; changing it '
              'recreates them.', choices=RELIABILITY),
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
    ParamSpec('model', 'resnet50', "Built-in model to generate and run; '' = use model_file_path.",
              choices=MODELS),
    ParamSpec('model_file_path', '', 'ONNX model to run when model is empty.'),
    ParamSpec('backend', 'auto', 'Inference backend; auto = tensorrt, then torch (with a GPU), else '
              'onnxruntime.', choices=BACKENDS),
    ParamSpec('device', 'auto', "Where to run: 'auto', 'cpu', 'cuda' or 'cuda:N'.", check=_device_ok),
    ParamSpec('enable_fp16', True, 'Run in FP16 where the backend can (torch, TensorRT).'),
    ParamSpec('cuda_graphs', False, 'torch backend on a GPU: one engine per stream, each replaying one CUDA '
              'graph per batch-size bucket (powers of two up to max_batch_size; batches are zero-padded up '
              'to a bucket). Removes the per-kernel launch cost; changing num_streams then reloads.'),
    ParamSpec('input_width', 0, "Model input width; 0 = the model's own (resnet50 224, detector 320).",
              min=0, max=4096),
    ParamSpec('input_height', 0, "Model input height; 0 = the model's own.", min=0, max=4096),
    ParamSpec('resize', 'letterbox', 'How frames are fitted to the model input.',
              choices=('letterbox', 'stretch')),
    ParamSpec('task', 'auto', 'Post-processing; auto = from the model outputs.', choices=TASKS),
    ParamSpec('top_k', 5, 'Classes reported per frame (classification).', min=1, max=1000),
    ParamSpec('score_threshold', 0.25, 'Minimum detection score.', min=0.0, max=1.0),
    ParamSpec('nms_iou_threshold', 0.45, 'IoU above which NMS suppresses a lower-scoring box.',
              min=0.0, max=1.0),
    ParamSpec('max_detections', 100, 'Most detections reported per frame.', min=1, max=10000),
    ParamSpec('warmup_iterations', 2, 'Runs per batch size at engine load (powers of two up to '
              'max_batch_size).', min=0, max=100),
    ParamSpec('camera_timeout_s', 2.0, 'A camera silent this long is reported stopped (its queued frames '
              'drain; it rejoins with its next frame).', min=0.05, max=3600.0),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status of this node.',
              min=0.05, max=60.0),
)

_BATCH_KEYS = {'max_batch_size', 'max_queue_delay_ms', 'queue_depth', 'preferred_batch_sizes'}
_IO_KEYS = {'camera_topics', 'input_reliability', 'output_suffix'}
_RELOAD_KEYS = {'model', 'model_file_path', 'backend', 'device', 'enable_fp16', 'input_width',
                'input_height', 'resize', 'task', 'cuda_graphs', 'gpu_ids'}


def _on_device(target: str) -> AbstractContextManager:
    """torch's current device set to `target` ('cuda:N') while an engine is built there; else nothing."""
    if not target.startswith('cuda:'):
        return nullcontext()
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.device(target)
    except ImportError:
        pass
    return nullcontext()  # no CUDA here: create_engine falls back (with a warning) as before


def gpu_plan(values: dict[str, Any], gpus: list[str]) -> list[int]:
    """The GPU indices the engines go to ([] = one device chosen by `device` alone, as a single engine).

    device 'cpu' -> []; 'cuda:N' -> [N]; 'auto' / 'cuda' -> gpu_ids resolved against the visible GPUs
    (raises ValueError naming them for an index that does not exist).
    """
    device = values['device']
    if device == 'cpu' or not gpus:
        return []
    if device.startswith('cuda:'):
        return [int(device[5:])]
    return resolve_gpu_ids(list(values['gpu_ids']), gpus)


def policy_from(values: dict[str, Any]) -> BatchPolicy:
    return BatchPolicy(max_batch_size=int(values['max_batch_size']),
                       max_queue_delay_ns=int(round(float(values['max_queue_delay_ms']) * NS_PER_MS)),
                       preferred_batch_sizes=tuple(int(p) for p in values['preferred_batch_sizes'] if p),
                       queue_depth=int(values['queue_depth']))


def cross_check(values: dict[str, Any]) -> list[str]:
    """Rules between parameters; messages say what to change (start-up and `ros2 param set` alike)."""
    errors = []
    topics = _names(list(values['camera_topics']))
    if not topics:
        errors.append('camera_topics is empty: list at least one sensor_msgs/Image topic')
    elif len(set(topics)) != len(topics):
        errors.append(f'camera_topics has duplicates: {topics}')
    elif not values['output_suffix'].strip('/'):
        errors.append('output_suffix is empty: give a name such as detections')
    else:
        outs = [result_topic(t, values['output_suffix']) for t in topics]
        clash = sorted({o for o in outs if outs.count(o) > 1})
        if clash:
            errors.append(f'cameras share a result topic {clash}: list each camera topic once (a trailing '
                          '/ names the same topic)')
    errors += policy_from(values).errors()
    ids = [int(i) for i in values['gpu_ids']]
    explicit = bool(ids) and ids != [-1]
    if values['device'].startswith('cuda:') and explicit:
        errors.append(f"device={values['device']} names one GPU but gpu_ids={ids}: set device to cuda (or "
                      'auto) to use gpu_ids, or gpu_ids to [-1]')
    elif values['device'] != 'cpu' and explicit:
        errors += gpu_ids_errors(ids, visible())
    if values['device'] != 'cpu':
        try:
            n = len(gpu_plan(values, visible())) or 1
        except ValueError:
            n = 1  # reported above
        errors += batch_limit_errors(list(values['max_batch_size_per_gpu']), n)
    width, height = values['input_width'], values['input_height']
    if values['model'] == 'resnet50' and width and height and width != height:
        errors.append(f'resnet50 takes square inputs: input_width={width} and input_height={height} differ')
    if values['model'] == 'detector':
        for name in ('input_width', 'input_height'):
            if values[name] and (values[name] % 32 or values[name] < 64):
                errors.append(f'detector {name}={values[name]}: use a multiple of 32, at least 64')
    if values['model'] == '' and values['model_file_path'] and \
            not Path(values['model_file_path']).expanduser().is_file():
        errors.append(f"model_file_path {values['model_file_path']!r} does not exist")
    if values['model'] == '' and not values['model_file_path']:
        errors.append("model is '' so model_file_path must name an ONNX file")
    return errors


# ------------------------------------------------------------------------------------------ model

def model_path(values: dict[str, Any]) -> str:
    from isaac_perf.core.models import model_file_for
    try:
        return model_file_for(values['model'], values['model_file_path'], values['input_width'],
                              values['input_height'])
    except ValueError as exc:
        raise EngineError(str(exc)) from exc


def stage_message(result: FrameResult, transport_ms: float, dropped: int, camera_index: int
                  ) -> Float64MultiArray:
    """One frame's stage report; the extra fields are appended after total_ms (EXTRA_FIELDS order)."""
    report = stage_times.StageReport(stamp_ns=result.stamp_ns, batch_size=1,
                                     stages_ms={'transport': transport_ms, **result.stages_ms})
    labels, values = stage_times.encode(report)
    labels += list(EXTRA_FIELDS)
    values += [float(result.batch_size), float(dropped), float(camera_index), float(result.gpu_index)]
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=1, stride=1) for label in labels]
    msg.data = values
    return msg


# ------------------------------------------------------------------------------------------- node


class StreamBatcher(Node):
    """Batches frames of several cameras on a GPU (or the CPU) and publishes per-camera results."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop('node_name', NODE_NAME), **kwargs)
        self._lock = threading.Lock()  # counters, publisher table
        self._values: dict[str, Any] = {}
        self._values = declare_params(self, PARAMS, on_change=self._on_change,
                                      extra_check=lambda changes: cross_check({**self._values, **changes}))
        errors = cross_check(self._values)
        if errors:
            raise ValueError('invalid start-up parameters: ' + '; '.join(errors))
        self.batcher = DynamicBatcher(policy_from(self._values))
        self.pipeline = MultiStreamPipeline(self.batcher, None)
        self.frames_received = 0
        self.bad_input = 0
        self.results_published = 0
        self.failed_frames = 0
        self.engine_error = ''
        self.last_error = ''
        self.engine: Engine | None = None
        self.plan: ModelPlan | None = None
        self.engine_ready = threading.Event()
        self._last_logged: dict[str, float] = {}
        self._reload = True
        self._pending_streams: int | None = None
        self._pending_limits = False
        self._buckets: tuple[int, ...] = ()
        self._extra_engines: list[Engine] = []  # cuda_graphs: the engines of streams 1..K-1
        self._camera_index: dict[str, int] = {}
        self._subscriptions: list[Any] = []
        self._result_pubs: dict[str, Any] = {}  # camera topic -> publisher; kept while a camera drains
        self._stopped_logged: set[str] = set()
        self._stage_pub = self.create_publisher(Float64MultiArray, '~/stage_times', 50)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._create_io()
        self._diag_timer = self.create_timer(self._values['diagnostics_period_s'], self._periodic)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name='stream_batcher_worker', daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------- parameters

    def _on_change(self, changes: dict[str, Any]) -> None:
        self._values.update(changes)
        keys = set(changes)
        if keys & _BATCH_KEYS:
            self.batcher.configure(**{f: getattr(policy_from(self._values), f) for f in (
                'max_batch_size', 'max_queue_delay_ns', 'preferred_batch_sizes', 'queue_depth')})
        if keys & {'max_batch_size_per_gpu', 'max_batch_size'}:
            self._pending_limits = True  # applied by the worker, which owns the scheduler
        if 'num_streams' in keys:
            self._pending_streams = int(changes['num_streams'])  # applied by the worker, which owns streams
            if self._values['cuda_graphs']:
                self._reload = True  # one engine per stream: new streams need their own engines
        if 'max_batch_size' in keys and self.engine is not None and \
                int(changes['max_batch_size']) > self.engine.max_batch_size:
            self._reload = True  # a fixed engine profile (TensorRT) must grow
        if 'max_batch_size' in keys and self._values['cuda_graphs'] and \
                int(changes['max_batch_size']) > max(self._buckets, default=0):
            self._reload = True  # graphs are captured up to the old maximum only
        if keys & _IO_KEYS:
            self._create_io()
        if keys & _RELOAD_KEYS:
            self._reload = True
            self.engine_ready.clear()
        if 'diagnostics_period_s' in keys:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(changes['diagnostics_period_s'], self._periodic)
        self._wake.set()
        self.get_logger().info('parameters changed: '
                               + ', '.join(f'{k}={v}' for k, v in sorted(changes.items())))

    def _create_io(self) -> None:
        v = self._values
        topics = _names(list(v['camera_topics']))
        qos = qos_from_name(v['input_reliability'], depth=SUBSCRIPTION_DEPTH)
        with self._lock:
            for sub in self._subscriptions:
                self.destroy_subscription(sub)
            removed = [t for t in self._camera_index if t not in topics]
            self._camera_index = {t: i for i, t in enumerate(topics)}
            for topic in topics:
                out = result_topic(topic, v['output_suffix'])
                old = self._result_pubs.get(topic)
                if old is None or old.topic_name != out:
                    if old is not None:
                        self.destroy_publisher(old)
                    self._result_pubs[topic] = self.create_publisher(Float32MultiArray, out, 10)
            self._subscriptions = [
                self.create_subscription(Image, topic, self._make_callback(topic), qos,
                                         callback_group=MutuallyExclusiveCallbackGroup())
                for topic in topics]
        for topic in topics:
            self.batcher.add_camera(topic)
        for topic in removed:
            self.batcher.stop_camera(topic)  # its queued frames still drain and are published

    def _make_callback(self, topic: str):
        def on_image(msg: Image) -> None:
            self._on_image(topic, msg)
        return on_image

    # ------------------------------------------------------------------------------------ input

    def _on_image(self, topic: str, msg: Image) -> None:
        ros_now = self.get_clock().now().nanoseconds
        now = time.perf_counter_ns()
        try:
            check_image(msg)
            if msg.encoding not in MODEL_ENCODINGS:
                raise ImageFormatError(f'encoding {msg.encoding!r} cannot be fed to the model: publish one '
                                       f'of {", ".join(MODEL_ENCODINGS)}')
            pixels = image_to_numpy(msg)  # a view of the message's buffer: no copy here
        except ImageFormatError as exc:
            with self._lock:
                self.frames_received += 1
                self.bad_input += 1
            self._report('bad_input', f'frame on {topic} dropped: {exc}')
            return
        stamp = stamp_to_ns(msg.header.stamp)
        transport_ms = max(0.0, (ros_now - stamp) / 1e6) if stamp else 0.0
        if not pixels.flags['C_CONTIGUOUS']:
            pixels = np.ascontiguousarray(pixels)  # padded rows: one compacting copy
        with self._lock:
            self.frames_received += 1
        self.pipeline.push(topic, pixels, stamp, now, key=(msg.height, msg.width, msg.encoding),
                           meta=transport_ms)
        self._wake.set()

    # ----------------------------------------------------------------------------------- worker

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply_pending()
                self._publish(self.pipeline.step(time.perf_counter_ns()))
                self._idle()
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything one batch does
                self._report('worker', f'batch processing failed: {type(exc).__name__}: {exc}')
                time.sleep(0.01)

    def _idle(self) -> None:
        sched = self.pipeline.scheduler
        now = time.perf_counter_ns()
        if sched is not None and sched.in_flight:
            if not sched.has_capacity():
                self._publish(self.pipeline.wait(now))  # every lane busy: wait for the oldest batch
                return
            timeout = 0.0005  # batches in flight: look again soon
        else:
            deadline = self.batcher.next_deadline_ns()
            timeout = 0.5 if deadline is None else max(0.0, (deadline - now) / 1e9)
            if sched is None:
                timeout = min(timeout, 0.05)
        if timeout > 0:
            self._wake.wait(timeout)
        self._wake.clear()

    def _apply_pending(self) -> None:
        if self._reload:
            self._load_engine()
        if self._pending_streams is not None and self.pipeline.scheduler is not None:
            k, self._pending_streams = self._pending_streams, None
            self.pipeline.scheduler.set_num_streams(k)
        sched = self.pipeline.scheduler
        if self._pending_limits and isinstance(sched, MultiDeviceScheduler):
            self._pending_limits = False
            try:
                sched.limits = batch_limits(list(self._values['max_batch_size_per_gpu']),
                                            len(sched.devices))
            except ValueError as exc:  # cross_check refuses this; keep the old limits if it slips by
                self._report('params', f'max_batch_size_per_gpu not applied: {exc}')

    def _load_engine(self) -> None:
        from isaac_perf.core.engines.factory import create_engine
        self._reload = False
        v = dict(self._values)
        self._publish(self.pipeline.set_scheduler(None))  # finish what the old engine has in flight
        old, self.engine, self.plan = self.engine, None, None
        for e in [old] + self._extra_engines:
            if e is not None:
                e.close()
        self._extra_engines = []
        started = time.monotonic()
        warnings: list[str] = []

        def warn(message: str) -> None:
            warnings.append(message)
            self.get_logger().warning(message)

        fixed_profile = v['backend'] == 'tensorrt'
        sizes = tuple(sorted({min(1 << i, v['max_batch_size']) for i in range(9)}))
        try:
            gpus = gpu_plan(v, visible())
        except ValueError as exc:
            self.engine_error = str(exc)
            self._report('engine_load', f'cannot place the engines: {exc}')
            return
        ids = [int(i) for i in v['gpu_ids']]
        if not gpus and v['device'] != 'cpu' and ids and ids != [-1]:
            warn(f'gpu_ids={ids} but no CUDA GPU is visible here: running on {v["device"]} (CPU fallback)')
        # One engine per GPU; with device auto/cuda on GPU 0 alone the engine gets `device` as before, so
        # the single-GPU setup is unchanged.
        single = len(gpus) <= 1 and (not gpus or gpus == [0] or v['device'].startswith('cuda:'))
        targets = [v['device']] if single else [f'cuda:{g}' for g in gpus]
        per_device: list[list[Engine]] = []
        try:
            path = model_path(v)
            for target in targets:
                options = EngineOptions(device=target, precision='fp16' if v['enable_fp16'] else 'fp32',
                                        max_batch_size=int(v['max_batch_size']) if fixed_profile else 256,
                                        cuda_graphs=bool(v['cuda_graphs']))
                engines: list[Engine] = []
                per_device.append(engines)
                with _on_device(target):  # weights, warm-up and CUDA graphs on that GPU
                    engines.append(create_engine(v['backend'], path, options, log=warn))
                    if len(per_device) == 1:
                        plan = ModelPlan(per_device[0][0], self._values)  # live values: top_k etc. apply
                        graphs = bool(getattr(engines[0], 'use_graphs', False))
                        on_gpu = str(engines[0].device).startswith('cuda') and engines[0].backend == 'torch'
                    if graphs:  # one engine (and one set of graph buffers) per stream
                        engines += [create_engine(v['backend'], path, options, log=warn)
                                    for _ in range(int(v['num_streams']) - 1)]
                    if v['warmup_iterations'] or graphs:
                        for e in engines:
                            e.warmup(sizes, max(1, int(v['warmup_iterations'])))
                if not on_gpu:
                    if len(targets) > 1:
                        warn(f'{engines[0].backend} on {engines[0].device}: spreading over GPUs needs the '
                             f'torch backend on CUDA; using one engine (gpu_ids={gpus} ignored)')
                    break
        except (EngineError, OSError, ValueError, RuntimeError, ImportError) as exc:
            for group in per_device:
                for e in group:
                    e.close()
            self.engine_error = str(exc)
            self._report('engine_load', f'cannot load the model (frames wait, then drop): {exc}')
            return
        except BaseException:
            for group in per_device:
                for e in group:
                    e.close()
            raise
        engine = per_device[0][0]
        self._buckets = sizes if graphs else ()
        top_k = (lambda: int(self._values['top_k'])) if plan.task == 'classification' else 0
        limits = batch_limits(list(v['max_batch_size_per_gpu']), len(per_device)) \
            if len(v['max_batch_size_per_gpu']) in (0, 1, len(per_device)) else [None] * len(per_device)
        devices = []
        for group, limit in zip(per_device, limits, strict=True):
            if on_gpu:
                runtime = create_runtime('torch', device=str(group[0].device))
            else:
                runtime = CpuRuntime()
            compute = [EngineCompute(e, plan.config, gpu=runtime.is_gpu, buckets=self._buckets, topk=top_k)
                       for e in group]
            devices.append(ComputeDevice(runtime, compute, max_batch_size=limit))
        self._extra_engines = [e for group in per_device for e in group][1:]
        sched = MultiDeviceScheduler(devices, num_streams=int(v['num_streams']),
                                     depth=int(v['buffers_per_stream']), policy=v['stream_policy'],
                                     stage_threads=int(v['stage_threads']) if on_gpu else 0)
        runtime = sched.runtime
        self.engine, self.plan = engine, plan
        self.pipeline.post = plan.post
        self.pipeline.set_scheduler(sched)
        self.engine_error = ''
        self.engine_ready.set()
        self.get_logger().info(
            f'engine ready in {time.monotonic() - started:.1f} s: backend={engine.backend} '
            f'device={engine.device} runtime={runtime.describe()} task={plan.task} '
            f'input={plan.config.width}x{plan.config.height} streams={sched.num_streams} '
            f'gpus={sched.device_indices} limits={sched.limits} '
            f'cuda_graphs={"buckets " + str(self._buckets) if graphs else "off"}')

    # ---------------------------------------------------------------------------------- output

    def _publish(self, results: list[FrameResult]) -> None:
        if not results:
            return
        stats = self.batcher.stats().cameras
        for r in results:
            if r.error:
                with self._lock:
                    self.failed_frames += 1
                self._report('engine_error', f'frame {r.seq} of {r.camera} failed: {r.error}')
                continue
            with self._lock:
                pub = self._result_pubs.get(r.camera)
                index = self._camera_index.get(r.camera, -1)
            if pub is None:
                continue
            pub.publish(results_message(r.result))
            dropped = stats[r.camera].dropped if r.camera in stats else 0
            self._stage_pub.publish(stage_message(r, float(r.meta or 0.0), dropped, index))
            with self._lock:
                self.results_published += 1

    def _report(self, kind: str, message: str) -> None:
        self.last_error = message
        now = time.monotonic()
        if now - self._last_logged.get(kind, -1e9) >= LOG_REPEAT_S:
            self._last_logged[kind] = now
            self.get_logger().error(message)

    # ------------------------------------------------------------------------------ diagnostics

    def _periodic(self) -> None:
        cameras = self.batcher.stats().cameras
        self._stopped_logged = {c for c in self._stopped_logged if c in cameras and cameras[c].stopped}
        now = time.perf_counter_ns()
        timeout = int(self._values['camera_timeout_s'] * 1e9)
        for camera in self.batcher.idle_cameras(now, timeout):
            self.batcher.stop_camera(camera)
            if camera not in self._stopped_logged:
                self._stopped_logged.add(camera)
                self.get_logger().warning(f'camera {camera} sent nothing for '
                                          f'{self._values["camera_timeout_s"]} s: marked stopped, its '
                                          'queued frames drain')
        self._publish_diagnostics()

    def diagnostics_values(self) -> dict[str, Any]:
        stats = self.batcher.stats()
        delays = np.asarray(self.batcher.queue_delays_ns, dtype=np.float64) / 1e6
        with self._lock:
            values: dict[str, Any] = {
                'frames_received': self.frames_received, 'results_published': self.results_published,
                'total_dropped_frames': stats.dropped + self.bad_input + self.failed_frames,
                'dropped_overload': stats.dropped, 'dropped_bad_input': self.bad_input,
                'dropped_engine_error': self.failed_frames}
        values.update({
            'batches': stats.batches, 'batch_size_mean': f'{stats.mean_batch_size:.2f}',
            'batch_sizes': ' '.join(f'{k}:{n}' for k, n in sorted(stats.batch_sizes.items())),
            'batch_reasons': ' '.join(f'{k}:{n}' for k, n in sorted(stats.reasons.items())),
            'queue_delay_ms_p50': f'{np.percentile(delays, 50):.3f}' if delays.size else 'nan',
            'queue_delay_ms_p99': f'{np.percentile(delays, 99):.3f}' if delays.size else 'nan',
            'queued': stats.queued,
            'max_batch_size': stats.policy.max_batch_size,
            'max_queue_delay_ms': stats.policy.max_queue_delay_ns / NS_PER_MS,
            'queue_depth': stats.policy.queue_depth})
        for cam, s in stats.cameras.items():
            values[f'camera {cam}'] = (f'received {s.received} dropped {s.dropped} queued {s.queued} '
                                       f'{"stopped" if s.stopped else "active"}')
        sched = self.pipeline.scheduler
        if sched is not None:
            values.update({'num_streams': sched.num_streams, 'in_flight': sched.in_flight,
                           'host_waits': sched.host_waits, 'runtime': sched.runtime.name,
                           'gpus': ' '.join(map(str, sched.device_indices))})
            multi = len(sched.schedulers) > 1
            for i, sub in enumerate(sched.schedulers):
                dev = sched.device_indices[i]
                values[f'device {dev}'] = (f'batches {sched.batches_per_device[i]} frames '
                                           f'{sched.frames_per_device[i]} in_flight {sub.in_flight} '
                                           f'batch_limit {sched.limits[i] or "max_batch_size"}')
                for pool in sub.pools():
                    p = pool.stats()
                    name = f'pool {p.name}' + (f' gpu{dev}' if multi else '')
                    values[name] = (f'hit_rate {p.hit_rate:.3f} allocations {p.allocations} '
                                    f'checked_out {p.checked_out} high_water_mb '
                                    f'{p.high_water_reserved_bytes / 2**20:.1f}')
        if self.engine is not None:
            values.update(backend=self.engine.backend, device=self.engine.device)
        values['last_error'] = self.last_error
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=f'{self.get_name()}: stream_batcher',
                                  hardware_id=self.get_fully_qualified_name())
        if self.engine_error:
            status.level, status.message = DiagnosticStatus.ERROR, f'no engine: {self.engine_error}'
        elif self.engine is None:
            status.level, status.message = DiagnosticStatus.WARN, 'loading the engine'
        elif values['total_dropped_frames']:
            status.level = DiagnosticStatus.WARN
            status.message = f"{values['total_dropped_frames']} frame(s) dropped"
        else:
            status.level, status.message = DiagnosticStatus.OK, f'batching on {self.engine.device}'
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def destroy_node(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=10.0)
        sched = self.pipeline.scheduler
        if sched is not None:
            leaks = sched.close()
            if any(leaks.values()):
                self.get_logger().warning(f'buffers still checked out at shutdown: {leaks}')
        for engine in [self.engine] + self._extra_engines:
            if engine is not None:
                engine.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = StreamBatcher()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        try_shutdown()  # rclpy.try_shutdown is Iron+


if __name__ == '__main__':
    main()
