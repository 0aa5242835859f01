"""`inference_node`: sensor_msgs/Image in, classification or detection results out, stage times reported.

Flow per frame: the subscription callback validates the image's layout (cheap: no pixel is touched) and
puts it in a bounded per-topic queue that keeps the newest frames; a worker in its own callback group takes
up to `max_batch_size` queued frames (oldest first, across topics), preprocesses them (on the GPU when the
engine runs there), runs the engine, post-processes (top-k, or boxes after NMS mapped back to image
pixels), publishes one result message per frame and one stage-time report per frame on `~/stage_times`.
A slow engine therefore drops frames at the queue (counted) instead of piling them up.

Results (std_msgs/Float32MultiArray, on `<input topic>/detections` unless `output_topic` is set):

- classification: rows of [class_id, score], best first; layout.dim[0] = ('classes', k, 2k),
  layout.dim[1] = ('class_id,score', 2, 2).
- detection: rows of [x1, y1, x2, y2, score, class_id] in input-image pixels, best first;
  layout.dim[0] = ('detections', M, 6M), layout.dim[1] = ('x1,y1,x2,y2,score,class_id', 6, 6).

Float32MultiArray has no header, so latency travels on `~/stage_times` (isaac_perf.core.stage_times), which
carries the input frame's stamp and the stages `transport`, `queue`, `pre`, `infer`, `post` in ms.

Bad input never stops the node: a frame with a wrong encoding, step or size, or empty data, a missing or
corrupt model, an engine that cannot load here (other GPU, other TensorRT), or tensor names that do not
match the model are logged (once per kind per few seconds), counted, reported on /diagnostics, and the
frame is dropped. Fix the parameter with `ros2 param set` and the engine is reloaded.
"""
from __future__ import annotations

import array
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from isaac_perf.core.engines.base import Engine, EngineError, EngineOptions
from isaac_perf.core.frames import ImageFormatError
from isaac_perf.core.inference_runner import DropCounter, FrameResult, InferenceRunner
from isaac_perf.core.params import ParamSpec
from isaac_perf.core.preprocess import ENCODINGS as MODEL_ENCODINGS
from isaac_perf.ros.compat import try_shutdown
from isaac_perf.ros.conversions import check_image, image_to_numpy, stamp_to_ns
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.qos import qos_from_name, qos_name_error

NODE_NAME = 'inference_node'
BACKENDS = ('auto', 'onnxruntime', 'torch', 'tensorrt')
MODELS = ('resnet50', 'detector', '')
TASKS = ('auto', 'classification', 'detection')
STAGES = ('transport', 'queue', 'pre', 'infer', 'post')
CLASS_LABELS = ('classes', 'class_id,score')
DETECTION_LABELS = ('detections', 'x1,y1,x2,y2,score,class_id')
LOG_REPEAT_S = 5.0  # the same kind of error is logged at most once per this many seconds


def _names(values: Sequence[str]) -> tuple[str, ...]:
    # List parameters default to [''] (rclpy cannot type an empty list); '' entries mean nothing.
    return tuple(v for v in values if v)


def _device_ok(value: str) -> str:
    if value in ('auto', 'cpu', 'cuda') or (value.startswith('cuda:') and value[5:].isdigit()):
        return ''
    return f"device={value!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('input_topics', ['/camera_0/image_raw'], 'sensor_msgs/Image topics to run; one engine serves '
              'them all (frames of several topics share a batch).'),
    ParamSpec('output_topic', '', "Results topic; '' = <input topic>/detections for each input. With "
              'several inputs it must contain {i} (the input index).'),
    ParamSpec('model', 'resnet50', "Built-in model to generate and run; '' = use model_file_path.",
              choices=MODELS),
    ParamSpec('model_file_path', '', 'ONNX model to run when model is empty (Isaac ROS: model_file_path).'),
    ParamSpec('engine_file_path', '', 'TensorRT plan to load or build; empty = the engine cache '
              '(keyed by model hash, precision, shapes, GPU and TensorRT version).'),
    ParamSpec('force_engine_update', False, 'Rebuild the engine even when a cached one matches.'),
    ParamSpec('backend', 'auto', 'Inference backend; auto = tensorrt, then torch (with a GPU), else '
              'onnxruntime. A backend that cannot run here falls back with a warning.', choices=BACKENDS),
    ParamSpec('device', 'auto', "Where to run: 'auto', 'cpu', 'cuda' or 'cuda:N'.", check=_device_ok),
    ParamSpec('max_batch_size', 4, 'Most frames run as one batch (and the engine profile maximum).',
              min=1, max=256),
    ParamSpec('enable_fp16', False, 'Run in FP16 where the backend can (torch, TensorRT).'),
    ParamSpec('cuda_graphs', False, 'torch backend on a GPU: replay one captured CUDA graph per batch size.'),
    ParamSpec('torch_compile', 'none', 'torch backend on a GPU: AOTInductor compilation, cached on disk.',
              choices=('none', 'default', 'max-autotune')),
    ParamSpec('input_tensor_names', [''], "The model's input tensor names, checked at load; [''] = take "
              "the model's."),
    ParamSpec('output_tensor_names', [''], "The model's output tensor names, checked at load; [''] = take "
              "the model's."),
    ParamSpec('input_qos', 'SENSOR_DATA', "QoS of the image subscriptions: 'SENSOR_DATA', 'DEFAULT', "
              "'SYSTEM_DEFAULT', optionally with short keys such as 'best_effort,depth=2'. SENSOR_DATA (best "
              "effort) accepts every camera driver; with a reliable publisher such as image_source, "
              "'SENSOR_DATA,reliable' keeps large frames that best effort loses between processes "
              "(docs/tuning.md), and config/pipeline.yaml sets it.", check=qos_name_error),
    ParamSpec('output_qos', 'DEFAULT', 'QoS of the result and stage-time publishers (same names).',
              check=qos_name_error),
    ParamSpec('queue_depth', 1, 'Frames kept per input topic while the engine is busy; older ones are '
              'dropped (counted).', min=1, max=64),
    ParamSpec('input_width', 0, "Model input width; 0 = the model's own (resnet50 224, detector 320).",
              min=0, max=4096),
    ParamSpec('input_height', 0, 'Model input height; 0 = the model\'s own.', min=0, max=4096),
    ParamSpec('resize', 'letterbox', 'How frames are fitted to the model input.',
              choices=('letterbox', 'stretch')),
    ParamSpec('task', 'auto', 'Post-processing; auto = from the model (boxes+scores outputs = detection).',
              choices=TASKS),
    ParamSpec('top_k', 5, 'Classes reported per frame (classification).', min=1, max=1000),
    ParamSpec('score_threshold', 0.25, 'Minimum detection score.', min=0.0, max=1.0),
    ParamSpec('nms_iou_threshold', 0.45, 'IoU above which NMS suppresses a lower-scoring box.',
              min=0.0, max=1.0),
    ParamSpec('max_detections', 100, 'Most detections reported per frame.', min=1, max=10000),
    ParamSpec('gil_switch_interval_us', 200, "Python's GIL switch interval for this process, in microseconds "
              '(0 = leave the interpreter default of 5000). Every GPU op releases and re-takes the GIL; with '
              'the executor thread busy in Python each re-take waited up to the interval, which held the '
              'torch pipeline on the H100 at under 1 frame/s at the default.', min=0, max=100000),
    ParamSpec('warmup_iterations', 2, 'Batches run at load so the first frames do not pay start-up costs.',
              min=0, max=100),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status of this node.',
              min=0.05, max=60.0),
    ParamSpec('verbose', False, 'Log every batch (timings) and the engine build at info level.'),
)

_RELOAD_KEYS = {'model', 'model_file_path', 'engine_file_path', 'force_engine_update', 'backend', 'device',
                'max_batch_size', 'enable_fp16', 'cuda_graphs', 'torch_compile', 'input_tensor_names',
                'output_tensor_names', 'input_width', 'input_height', 'resize', 'task'}
_IO_KEYS = {'input_topics', 'output_topic', 'input_qos', 'output_qos', 'queue_depth'}


def output_topics(values: dict[str, Any]) -> list[str]:
    """Result topic of each input topic."""
    inputs = list(_names(values['input_topics']))
    pattern = values['output_topic']
    if not pattern:
        return [f'{t.rstrip("/")}/detections' for t in inputs]
    return [pattern.replace('{i}', str(i)) for i in range(len(inputs))]


def cross_check(values: dict[str, Any]) -> list[str]:
    """Rules between parameters (start-up and `ros2 param set` alike); messages say what to change."""
    errors = []
    inputs = _names(values['input_topics'])
    if not inputs:
        errors.append('input_topics is empty: list at least one sensor_msgs/Image topic')
    elif len(set(inputs)) != len(inputs):
        errors.append(f'input_topics has duplicates: {list(inputs)}')
    if len(inputs) > 1 and values['output_topic'] and '{i}' not in values['output_topic']:
        errors.append(f"output_topic {values['output_topic']!r} must contain {{i}} with several input_topics")
    width, height = values['input_width'], values['input_height']
    if values['model'] == 'resnet50' and width and height and width != height:
        errors.append(f'resnet50 takes square inputs: input_width={width} and input_height={height} differ')
    if values['model'] == 'resnet50' and 0 < max(width, height) < 32:
        errors.append('resnet50 needs an input of at least 32x32')
    if values['model'] == 'detector':
        for name in ('input_width', 'input_height'):
            if values[name] and (values[name] % 32 or values[name] < 64):
                errors.append(f'detector {name}={values[name]}: use a multiple of 32, at least 64')
    if values['model'] == 'detector' and values['task'] == 'classification':
        errors.append('task=classification does not fit model=detector: use task auto or detection')
    if values['model'] == 'resnet50' and values['task'] == 'detection':
        errors.append('task=detection does not fit model=resnet50: use task auto or classification')
    return errors


def _runtime_check(values: dict[str, Any]) -> list[str]:
    """Extra rules for `ros2 param set` only: refuse what is sure to fail, like a file that is not there."""
    errors = cross_check(values)
    if values['model'] == '':
        path = values['model_file_path']
        if not path:
            errors.append("model is '' so model_file_path must name an ONNX file")
        elif not Path(path).expanduser().is_file():
            errors.append(f'model_file_path {path!r} does not exist')
    return errors


def results_message(result: FrameResult) -> Float32MultiArray:
    """A Float32MultiArray with the labelled row layout documented in this module."""
    rows = result.rows
    labels = CLASS_LABELS if result.task == 'classification' else DETECTION_LABELS
    cols = rows.shape[1]
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=labels[0], size=rows.shape[0], stride=rows.shape[0] * cols),
                      MultiArrayDimension(label=labels[1], size=cols, stride=cols)]
    msg.data = array.array('f', np.ascontiguousarray(rows, dtype=np.float32).tobytes())  # no per-item checks
    return msg


def stage_message(report: stage_times.StageReport) -> Float64MultiArray:
    labels, values = stage_times.encode(report)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=1, stride=1) for label in labels]
    msg.data = values
    return msg


# --------------------------------------------------------------------------------------------------------
# The node.

@dataclass
class _Pending:
    msg: Image
    input_index: int
    received_ns: int


class InferenceNode(Node):
    """Subscribes images, runs the engine in its own callback group, publishes results and stage times."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop('node_name', NODE_NAME), **kwargs)
        self._lock = threading.Lock()  # guards queues, counters and the publisher table
        self._values: dict[str, Any] = {}
        self._values = declare_params(
            self, PARAMS, on_change=self._on_change,
            extra_check=lambda changes: _runtime_check({**self._values, **changes}))
        errors = cross_check(self._values)
        if errors:
            raise ValueError('invalid start-up parameters: ' + '; '.join(errors))
        self.frames_received = 0
        self.frames_processed = 0
        self.results_published = 0
        self.batches = 0
        self.drops = DropCounter()
        self.engine_ready = threading.Event()
        self.last_error = ''
        self.engine_error = ''  # why there is no engine ('' when one is loaded)
        self.warnings: list[str] = []  # fallbacks taken at load (no GPU, ...), for diagnostics
        self._last_logged: dict[str, tuple[float, str]] = {}
        self._stage_sum = dict.fromkeys(STAGES, 0.0)
        self._stage_count = 0
        self._runner: InferenceRunner | None = None
        self._engine: Engine | None = None
        self._reload_pending = True
        self._queues: list[deque[_Pending]] = []
        self._subscriptions: list[Any] = []
        self._result_publishers: list[Any] = []
        self.input_topics: list[str] = []
        self.output_topics: list[str] = []
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._stage_publisher = None
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._create_io()
        self._diag_timer = self.create_timer(self._values['diagnostics_period_s'], self._publish_diagnostics)
        self._apply_switch_interval()
        # One dedicated thread owns the engine: loads it, warms it up and runs every batch. CUDA state is
        # per thread (current stream, cuDNN handles, PyTorch's cuDNN plan cache), so work handed to whichever
        # executor thread is free re-tuned every convolution on each new thread: on the H100 that held the
        # pipeline at 0.4 results/s with the GPU idle. The thread also loads the engine off the constructor.
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._wake.set()
        self._worker = threading.Thread(target=self._worker_loop, name='inference_worker', daemon=True)
        self._worker.start()

    # -- set-up -------------------------------------------------------------------------------------

    def _create_io(self) -> None:
        with self._lock:
            for sub in self._subscriptions:
                self.destroy_subscription(sub)
            for pub in self._result_publishers:
                self.destroy_publisher(pub)
            if self._stage_publisher is not None:
                self.destroy_publisher(self._stage_publisher)
            v = self._values
            self.input_topics = list(_names(v['input_topics']))
            self.output_topics = output_topics(v)
            in_qos = qos_from_name(v['input_qos'])
            out_qos = qos_from_name(v['output_qos'])
            self._queues = [deque(maxlen=v['queue_depth']) for _ in self.input_topics]
            self._subscriptions = [
                self.create_subscription(Image, topic, self._make_callback(i), in_qos,
                                         callback_group=self._input_group)
                for i, topic in enumerate(self.input_topics)]
            self._result_publishers = [self.create_publisher(Float32MultiArray, topic, out_qos)
                                       for topic in self.output_topics]
            self._stage_publisher = self.create_publisher(Float64MultiArray, '~/stage_times', out_qos)

    def _make_callback(self, index: int) -> Callable[[Image], None]:
        def on_image(msg: Image) -> None:
            self._on_image(msg, index)
        return on_image

    def _on_change(self, changes: dict[str, Any]) -> None:
        self._values.update(changes)
        keys = set(changes)
        if keys & _IO_KEYS:
            self._create_io()
        if keys & _RELOAD_KEYS:
            self._reload_pending = True
            self.engine_ready.clear()
            self._wake.set()
        elif self._runner is not None:
            runner = self._runner
            runner.top_k = self._values['top_k']
            runner.score_threshold = self._values['score_threshold']
            runner.nms_iou_threshold = self._values['nms_iou_threshold']
            runner.max_detections = self._values['max_detections']
        if 'gil_switch_interval_us' in keys:
            self._apply_switch_interval()
        if 'diagnostics_period_s' in keys:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(changes['diagnostics_period_s'], self._publish_diagnostics)
        self.get_logger().info(f'parameters changed: {sorted(keys)}')

    def _model_path(self) -> str:
        from isaac_perf.core.models import model_file_for
        v = self._values
        try:
            return model_file_for(v['model'], v['model_file_path'], v['input_width'], v['input_height'])
        except ValueError as exc:
            raise EngineError(str(exc)) from exc

    def _load_engine(self) -> None:
        """(Re)load the engine from the current parameters; failures leave the node running without one."""
        from isaac_perf.core.engines.factory import create_engine
        self._reload_pending = False
        old, self._runner, self._engine = self._engine, None, None
        if old is not None:
            old.close()
        v = self._values
        warnings: list[str] = []

        def warn(message: str) -> None:
            warnings.append(message)
            self.get_logger().warning(message)

        options = EngineOptions(
            device=v['device'], precision='fp16' if v['enable_fp16'] else 'fp32',
            max_batch_size=v['max_batch_size'], force_rebuild=v['force_engine_update'],
            cuda_graphs=v['cuda_graphs'], compile=v['torch_compile'],
            input_names=_names(v['input_tensor_names']), output_names=_names(v['output_tensor_names']),
            extra={'engine_file_path': v['engine_file_path'], 'verbose': v['verbose']})
        started = time.monotonic()
        try:
            path = self._model_path()
            engine = create_engine(v['backend'], path, options, log=warn)
            try:
                runner = InferenceRunner(
                    engine, task=v['task'], resize=v['resize'], top_k=v['top_k'],
                    score_threshold=v['score_threshold'], nms_iou_threshold=v['nms_iou_threshold'],
                    max_detections=v['max_detections'], input_size=(v['input_width'], v['input_height']),
                    log=warn)
                if v['warmup_iterations']:
                    # Every batch size the worker can form (GPU: one CUDA graph / kernel choice each).
                    sizes = tuple(range(1, runner.max_batch + 1)) if runner.on_gpu else \
                        tuple(sorted({1, runner.max_batch}))
                    engine.warmup(sizes if not runner.static_batch else (runner.static_batch,),
                                  v['warmup_iterations'])
            except BaseException:
                engine.close()
                raise
        except (EngineError, OSError, ValueError, RuntimeError, ImportError) as exc:
            # A missing/corrupt model, an engine for another GPU, tensor names that do not match...
            self.engine_error = str(exc)
            self._report_error('engine_load', f'cannot load the model: {exc}')
            return
        with self._lock:
            self._engine, self._runner = engine, runner
        self.engine_error = ''
        self.warnings = warnings
        self.get_logger().info(
            f'engine ready in {time.monotonic() - started:.1f} s: backend={engine.backend} '
            f'device={engine.device} '
            f"model={Path(path).name} task={runner.task} input={runner.config.width}x{runner.config.height} "
            f"max_batch={runner.max_batch} preprocess={'gpu' if runner._torch_pre is not None else 'cpu'}")
        self.engine_ready.set()

    # -- input --------------------------------------------------------------------------------------

    def _on_image(self, msg: Image, index: int) -> None:
        received_ns = self.get_clock().now().nanoseconds
        try:
            check_image(msg)
            if msg.encoding not in MODEL_ENCODINGS:
                raise ImageFormatError(f'encoding {msg.encoding!r} cannot be fed to the model: '
                                       f'publish one of {", ".join(MODEL_ENCODINGS)}')
        except ImageFormatError as exc:
            topic = self.input_topics[index] if index < len(self.input_topics) else '?'
            with self._lock:
                self.frames_received += 1
                self.drops.add('bad_input')
            self._report_error('bad_input', f'frame on {topic} dropped: {exc}')
            return
        with self._lock:
            if index >= len(self._queues):
                return  # a callback from subscriptions being replaced
            self.frames_received += 1
            queue = self._queues[index]
            if len(queue) == queue.maxlen:
                self.drops.add('queue_overflow')  # the deque drops the oldest to keep the newest
            queue.append(_Pending(msg, index, received_ns))
        self._wake.set()

    def _take_batch(self, limit: int) -> list[_Pending]:
        with self._lock:
            heads = sorted((q[0].received_ns, i) for i, q in enumerate(self._queues) if q)
            batch: list[_Pending] = []
            while heads and len(batch) < limit:
                _, i = heads.pop(0)
                batch.append(self._queues[i].popleft())
                if self._queues[i]:
                    heads.append((self._queues[i][0].received_ns, i))
                    heads.sort()
            return batch

    def _pending(self) -> bool:
        with self._lock:
            return any(self._queues)

    # -- the worker (own callback group) -----------------------------------------------------------

    def _work(self) -> None:
        if self._reload_pending:
            self._load_engine()
        runner = self._runner
        if runner is None:
            dropped = self._take_batch(1 << 30)
            if dropped:
                with self._lock:
                    self.drops.add('no_engine', len(dropped))
                self._report_error('no_engine', f'{len(dropped)} frame(s) dropped: no engine '
                                   f'({self.engine_error or "still loading"})')
            return
        batch = self._take_batch(runner.max_batch)
        if batch:
            self._run_batch(runner, batch)
        if self._pending() or self._reload_pending:
            self._wake.set()

    def _run_batch(self, runner: InferenceRunner, batch: list[_Pending]) -> None:
        start_ns = self.get_clock().now().nanoseconds
        try:
            frames = [(image_to_numpy(p.msg), p.msg.encoding) for p in batch]
            results, stages = runner.run(frames)
        except ImageFormatError as exc:
            with self._lock:
                self.drops.add('bad_input', len(batch))
            self._report_error('bad_input', f'{len(batch)} frame(s) dropped: {exc}')
            return
        except Exception as exc:  # noqa: BLE001 - any engine failure drops the batch; the node goes on
            with self._lock:
                self.drops.add('engine_error', len(batch))
            self._report_error('engine_error', f'inference failed, {len(batch)} frame(s) dropped: '
                               f'{type(exc).__name__}: {exc}')
            return
        post_start = time.perf_counter()
        with self._lock:
            publishers = list(self._result_publishers)
            stage_publisher = self._stage_publisher
        for pending, result in zip(batch, results, strict=True):
            if pending.input_index < len(publishers):
                publishers[pending.input_index].publish(results_message(result))
        publish_ms = (time.perf_counter() - post_start) * 1e3
        for pending in batch:
            stamp_ns = stamp_to_ns(pending.msg.header.stamp)
            # One report per frame: batch_size counts the frames a report covers (the monitor sums it
            # for FPS), so it is 1 here; the engine's batch size is in /diagnostics.
            report = stage_times.StageReport(stamp_ns=stamp_ns, batch_size=1, stages_ms={
                'transport': max(0.0, (pending.received_ns - stamp_ns) / 1e6) if stamp_ns else 0.0,
                'queue': max(0.0, (start_ns - pending.received_ns) / 1e6),
                'pre': stages['pre'], 'infer': stages['infer'], 'post': stages['post'] + publish_ms})
            stage_publisher.publish(stage_message(report))
            with self._lock:
                for name, value in report.stages_ms.items():
                    self._stage_sum[name] += value
                self._stage_count += 1
        with self._lock:
            self.frames_processed += len(batch)
            self.results_published += len(batch)
            self.batches += 1
        if self._values['verbose']:
            self.get_logger().info(f'batch of {len(batch)}: ' + ', '.join(
                f'{k} {v:.2f} ms' for k, v in stages.items()))

    # -- errors and diagnostics ---------------------------------------------------------------------

    def _report_error(self, kind: str, message: str) -> None:
        now = time.monotonic()
        self.last_error = message
        last = self._last_logged.get(kind)
        if last is None or now - last[0] >= LOG_REPEAT_S or last[1] != message and now - last[0] >= 1.0:
            self._last_logged[kind] = (now, message)
            self.get_logger().error(message)

    def stage_means(self) -> dict[str, float]:
        """Mean ms per stage since start (for reports)."""
        with self._lock:
            count = max(self._stage_count, 1)
            return {k: v / count for k, v in self._stage_sum.items()}

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f'{self.get_name()}: inference',
                                  hardware_id=self.get_fully_qualified_name())
        with self._lock:
            counts = {
                'frames_received': self.frames_received, 'frames_processed': self.frames_processed,
                'results_published': self.results_published, 'batches': self.batches,
                'total_dropped_frames': self.drops.total,
                **{f'dropped_{k}': v for k, v in self.drops.by_reason.items()},
            }
        engine = self._engine
        if self.engine_error:
            status.level = DiagnosticStatus.ERROR
            status.message = f'no engine: {self.engine_error}'
        elif engine is None:
            status.level = DiagnosticStatus.WARN
            status.message = 'loading the engine'
        elif self.last_error and (counts['dropped_bad_input'] or counts['dropped_engine_error']):
            status.level = DiagnosticStatus.ERROR
            status.message = self.last_error
        elif self.warnings:
            status.level = DiagnosticStatus.WARN
            status.message = self.warnings[-1]
        else:
            status.level = DiagnosticStatus.OK
            status.message = f'running on {engine.backend} ({engine.device})'
        pairs: dict[str, Any] = dict(counts)
        pairs['last_error'] = self.last_error
        if engine is not None:
            pairs.update(backend=engine.backend, device=engine.device)
        pairs.update({f'{k}_ms_mean': f'{v:.3f}' for k, v in self.stage_means().items()})
        pairs['input_topics'] = ','.join(self.input_topics)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in pairs.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _apply_switch_interval(self) -> None:
        interval_us = self._values['gil_switch_interval_us']
        if interval_us > 0:
            sys.setswitchinterval(interval_us / 1e6)

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._wake.wait(timeout=0.1):
                continue
            self._wake.clear()
            try:
                self._work()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one bad batch
                self.get_logger().error(f'inference worker: {type(exc).__name__}: {exc}')

    def destroy_node(self) -> None:
        self._stopping.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        engine, self._engine, self._runner = self._engine, None, None
        if engine is not None:
            engine.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = InferenceNode()
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
