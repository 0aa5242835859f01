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

Float32MultiArray has no header, so latency travels on `~/stage_times`
(isaac_perf.core.telemetry.stage_times), which
carries the input frame's stamp and the stages `transport`, `queue`, `pre`, `infer`, `post` in ms.

Bad input never stops the node: a frame with a wrong encoding, step or size, or empty data, a missing or
corrupt model, an engine that cannot load here (other GPU, other TensorRT), or tensor names that do not
match the model are logged (once per kind per few seconds), counted, reported on /diagnostics, and the
frame is dropped. Fix the parameter with `ros2 param set` and the engine is reloaded.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray

from isaac_perf.core.inference.batches import take_oldest_first, warmup_batch_sizes
from isaac_perf.core.inference.engines.base import Engine, EngineError, EngineOptions
from isaac_perf.core.inference.frames import ImageFormatError
from isaac_perf.core.inference.health import inference_summary
from isaac_perf.core.inference.node_params import (
    DIAGNOSTICS_SPEC,
    MODEL_RELOAD_KEYS,
    MODEL_SPECS,
    POSTPROCESS_SPECS,
    fp16_spec,
    model_file_errors,
    model_path,
    model_rule_errors,
    names,
    topic_list_errors,
)
from isaac_perf.core.inference.runner import DropCounter, InferenceRunner
from isaac_perf.core.params import ParamSpec
from isaac_perf.core.pipeline_graph import output_topics
from isaac_perf.core.telemetry import stage_times
from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import Status
from isaac_perf.core.transport.errors import refusal_severity
from isaac_perf.core.transport.params import ZERO_COPY_READER
from isaac_perf.ros import executors
from isaac_perf.ros.conversions import (
    check_model_image,
    image_to_numpy,
    results_message,
    stage_message,
    stamp_to_ns,
)
from isaac_perf.ros.diagnostics import Updater
from isaac_perf.ros.frame_transport import FrameSubscriber, ReceivedFrame, subscriber_values
from isaac_perf.ros.log import LogLimiter
from isaac_perf.ros.node_main import StartupError, run_node
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.qos import qos_from_name, qos_name_error, replaceable_publisher
from isaac_perf.ros.receipt import ReceiptLosses

NODE_NAME = 'inference_node'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
STAGES = ('transport', 'queue', 'pre', 'infer', 'post')
LOG_REPEAT_S = 5.0  # the same kind of error is logged at most once per this many seconds

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('input_topics', ['/camera_0/image_raw'], 'sensor_msgs/Image topics to run; one engine serves '
              'them all (frames of several topics share a batch).'),
    ParamSpec('output_topic', '', "Results topic; '' = <input topic>/detections for each input. With "
              'several inputs it must contain {i} (the input index).'),
    *MODEL_SPECS,
    ParamSpec('engine_file_path', '', 'TensorRT plan to load or build; empty = the engine cache '
              '(keyed by model hash, precision, shapes, GPU and TensorRT version).'),
    ParamSpec('force_engine_update', False, 'Rebuild the engine even when a cached one matches.'),
    ParamSpec('max_batch_size', 4, 'Most frames run as one batch (and the engine profile maximum).',
              min=1, max=256),
    fp16_spec(False),
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
    ZERO_COPY_READER,
    *POSTPROCESS_SPECS,
    ParamSpec('gil_switch_interval_us', 200, "Python's GIL switch interval for this process, in microseconds "
              '(0 = leave the interpreter default of 5000). Every GPU op releases and re-takes the GIL; with '
              'the executor thread busy in Python each re-take waited up to the interval, which held the '
              'torch pipeline on the H100 at under 1 frame/s at the default.', min=0, max=100000),
    ParamSpec('warmup_iterations', 2, 'Batches run at load so the first frames do not pay start-up costs.',
              min=0, max=100),
    DIAGNOSTICS_SPEC,
    ParamSpec('verbose', False, 'Log every batch (timings) and the engine build at info level.'),
)

_RELOAD_KEYS = MODEL_RELOAD_KEYS | {'engine_file_path', 'force_engine_update', 'max_batch_size',
                                    'torch_compile', 'input_tensor_names', 'output_tensor_names'}
_INPUT_KEYS = {'input_topics', 'input_qos', 'queue_depth', 'zero_copy'}
_OUTPUT_KEYS = {'input_topics', 'output_topic', 'output_qos'}  # result topics follow the inputs' names
_IO_KEYS = _INPUT_KEYS | _OUTPUT_KEYS


def cross_check(values: dict[str, Any]) -> list[str]:
    """Rules between parameters (start-up and `ros2 param set` alike); messages say what to change."""
    inputs = names(values['input_topics'])
    errors = topic_list_errors('input_topics', inputs)
    if len(inputs) > 1 and values['output_topic'] and '{i}' not in values['output_topic']:
        errors.append(f"output_topic {values['output_topic']!r} must contain {{i}} with several input_topics")
    return errors + model_rule_errors(values)


def _runtime_check(values: dict[str, Any]) -> list[str]:
    """Extra rules for `ros2 param set` only: refuse what is sure to fail, like a file that is not there.
    (At start-up a missing file is not refused: the node runs, reports it, and waits for a fix.)"""
    return cross_check(values) + model_file_errors(values)


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
        # Everything destroy_node() touches exists before anything can fail.
        self._lock = threading.Lock()  # guards queues, counters and the publisher table
        # Held while the worker publishes and while _create_io replaces the publishers: a topic change at
        # run time must not destroy a publisher under a publish() (InvalidHandle). Taken before _lock.
        self._publish_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._runner: InferenceRunner | None = None
        self._engine: Engine | None = None
        self._values: dict[str, Any] = {}
        self._values = declare_params(
            self, PARAMS, on_change=self._on_change,
            extra_check=lambda changes: _runtime_check({**self._values, **changes}))
        errors = cross_check(self._values)
        if errors:
            raise StartupError('invalid start-up parameters: ' + '; '.join(errors))
        self.frames_received = 0
        self.frames_processed = 0
        self.results_published = 0
        # Frames that never reached this node: gaps in each publisher's sequence numbers (DDS history
        # overwritten, network loss) and the middleware's message-lost event. Frames that did reach it
        # are processed, dropped by cause, or pending (queued or in the engine): every one is counted.
        self.losses = ReceiptLosses()
        self._log = LogLimiter(self.get_logger())
        self.batches = 0
        self.drops = DropCounter()
        self.engine_ready = threading.Event()
        self.last_error = ''
        self.engine_error = ''  # why there is no engine ('' when one is loaded)
        self.warnings: list[str] = []  # fallbacks taken at load (no GPU, ...), for diagnostics
        self._last_logged: dict[str, tuple[float, str]] = {}
        self._stage_sum = dict.fromkeys(STAGES, 0.0)
        self._stage_count = 0
        self._reload_pending = True
        self._retry_at = 0.0  # monotonic time of the next load attempt after an out-of-memory failure
        self._load_retry_s = 0.0
        self._queues: list[deque[_Pending]] = []
        self._frame_subs: list[Any] = []
        self._result_publishers: list[Any] = []
        self.input_topics: list[str] = []
        self.output_topics: list[str] = []
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._stage_publisher = None
        self._create_io()
        self._diagnostics = self._create_updater()
        self._apply_switch_interval()
        # One dedicated thread owns the engine: loads it, warms it up and runs every batch. CUDA state is
        # per thread (current stream, cuDNN handles, PyTorch's cuDNN plan cache), so work handed to whichever
        # executor thread is free re-tuned every convolution on each new thread: on the H100 that held the
        # pipeline at 0.4 results/s with the GPU idle. The thread also loads the engine off the constructor.
        self._wake.set()
        self._worker = threading.Thread(target=self._worker_loop, name='inference_worker', daemon=True)
        self._worker.start()

    # -- set-up -------------------------------------------------------------------------------------

    def _create_io(self, inputs: bool = True, outputs: bool = True) -> None:
        """(Re)create the subscriptions and/or the publishers: only what a parameter change touches, so an
        output change never tears down the inputs (entities destroyed under a multi-threaded executor's
        wait are what rclpy trips over)."""
        with self._publish_lock, self._lock:
            v = self._values
            if inputs:
                for sub in self._frame_subs:
                    sub.destroy()
                self.input_topics = names(v['input_topics'])
                in_qos = qos_from_name(v['input_qos'])
                self._queues = [deque(maxlen=v['queue_depth']) for _ in self.input_topics]
                self._frame_subs = [self._subscribe(i, topic, in_qos)
                                    for i, topic in enumerate(self.input_topics)]
            if outputs:
                for pub in self._result_publishers:
                    self.destroy_publisher(pub)
                if self._stage_publisher is not None:
                    self.destroy_publisher(self._stage_publisher)
                self.output_topics = output_topics(v)
                out_qos = qos_from_name(v['output_qos'])
                self._result_publishers = [replaceable_publisher(self, Float32MultiArray, topic, out_qos)
                                           for topic in self.output_topics]
                self._stage_publisher = replaceable_publisher(self, Float64MultiArray, '~/stage_times',
                                                              out_qos)

    def _subscribe(self, index: int, topic: str, qos: Any) -> FrameSubscriber:
        """An image subscription (zero-copy where the publisher offers it) that also reports what the
        middleware lost: the message-lost event where the RMW offers it, and gaps in each publisher's
        sequence numbers (message info) always."""
        return FrameSubscriber(self, topic, lambda msg: self._on_image(msg, index), qos, losses=self.losses,
                               source=index, zero_copy=self._values['zero_copy'],
                               on_refused=lambda reason, message: self._on_refused(index, reason, message),
                               callback_group=self._input_group)

    def _on_refused(self, index: int, reason: str, message: str) -> None:
        topic = self.input_topics[index] if index < len(self.input_topics) else '?'
        with self._lock:
            self.frames_received += 1  # published, then lost here: counted as a drop with its cause
            self.drops.add(f'zero_copy_{reason}')
        severity = refusal_severity(reason)
        if severity == 'warning':
            self._log.throttled(f'zero_copy_{reason}', f'frame on {topic} dropped: {message}', LOG_REPEAT_S)
        elif severity == 'error':
            self._report_error(f'zero_copy_{reason}', f'frame on {topic} dropped: {message}')

    def _on_change(self, changes: dict[str, Any]) -> None:
        self._values.update(changes)
        keys = set(changes)
        if keys & _IO_KEYS:
            self._create_io(inputs=bool(keys & _INPUT_KEYS), outputs=bool(keys & _OUTPUT_KEYS))
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
            self._diagnostics.destroy()
            self._diagnostics = self._create_updater()
        self.get_logger().info(f'parameters changed: {sorted(keys)}')

    def _load_engine(self) -> None:
        """(Re)load the engine from the current parameters; failures leave the node running without one."""
        from isaac_perf.core.inference.engines.factory import create_engine
        self._reload_pending = False
        old, self._runner, self._engine = self._engine, None, None
        if old is not None:
            old.close()
        v = self._values
        warnings: list[str] = []

        def warn(message: str) -> None:
            warnings.append(message)
            if self.context.ok():  # not after Ctrl-C: rosout is gone
                self.get_logger().warning(message)

        options = EngineOptions(
            device=v['device'], precision='fp16' if v['enable_fp16'] else 'fp32',
            max_batch_size=v['max_batch_size'], force_rebuild=v['force_engine_update'],
            cuda_graphs=v['cuda_graphs'], compile=v['torch_compile'],
            input_names=tuple(names(v['input_tensor_names'])),
            output_names=tuple(names(v['output_tensor_names'])),
            extra={'engine_file_path': v['engine_file_path'], 'verbose': v['verbose']})
        started = time.monotonic()
        try:
            path = model_path(v)
            engine = create_engine(v['backend'], path, options, log=warn)
            try:
                runner = InferenceRunner(
                    engine, task=v['task'], resize=v['resize'], top_k=v['top_k'],
                    score_threshold=v['score_threshold'], nms_iou_threshold=v['nms_iou_threshold'],
                    max_detections=v['max_detections'], input_size=(v['input_width'], v['input_height']),
                    log=warn)
                if v['warmup_iterations']:
                    engine.warmup(warmup_batch_sizes(runner.max_batch, runner.on_gpu, runner.static_batch),
                                  v['warmup_iterations'])
            except BaseException:
                engine.close()
                raise
        except MemoryError:
            # Out of memory while loading: often transient (another process's peak). Say so, and retry
            # with a growing delay instead of sitting at 'loading the engine' forever.
            delay = self._load_retry_s = min(60.0, max(2.0, 2 * self._load_retry_s))
            self._retry_at = time.monotonic() + delay
            self.engine_error = (f'out of memory while loading the model; retrying in {delay:g} s '
                                 '(free memory, or lower max_batch_size / use a smaller model)')
            self._report_error('engine_load', f'cannot load the model: {self.engine_error}')
            return
        except (EngineError, OSError, ValueError, RuntimeError, ImportError) as exc:
            # A missing/corrupt model, an engine for another GPU, tensor names that do not match...
            self.engine_error = str(exc)
            self._report_error('engine_load', f'cannot load the model: {exc}')
            return
        self._load_retry_s = 0.0
        if not self.context.ok():  # Ctrl-C came during the load: release it quietly (rosout is gone)
            engine.close()
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

    def _on_image(self, msg: Image | ReceivedFrame, index: int) -> None:
        received_ns = self.get_clock().now().nanoseconds
        try:
            check_model_image(msg)
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
            return take_oldest_first(self._queues, limit, lambda p: p.received_ns)

    def _pending(self) -> bool:
        with self._lock:
            return any(self._queues)

    # -- the worker (own callback group) -----------------------------------------------------------

    def _retry_due(self) -> bool:
        return self._retry_at > 0 and time.monotonic() >= self._retry_at

    def _work(self) -> None:
        if self._reload_pending or self._retry_due():
            self._retry_at = 0.0
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
        with self._publish_lock:
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
        if not self.context.ok():
            return  # after Ctrl-C rosout is gone
        if last is None or now - last[0] >= LOG_REPEAT_S or last[1] != message and now - last[0] >= 1.0:
            self._last_logged[kind] = (now, message)
            self.get_logger().error(message)

    def stage_means(self) -> dict[str, float]:
        """Mean ms per stage since start (for reports)."""
        with self._lock:
            count = max(self._stage_count, 1)
            return {k: v / count for k, v in self._stage_sum.items()}

    def _create_updater(self) -> Updater:
        updater = Updater(self, self._values['diagnostics_period_s'],
                          hardware_id=self.get_fully_qualified_name())
        updater.add('inference', self._diagnose)
        return updater

    def _diagnose(self, status: Status) -> None:
        with self._lock:
            status.update({
                'frames_received': self.frames_received, 'frames_processed': self.frames_processed,
                'results_published': self.results_published, 'batches': self.batches,
                'total_dropped_frames': self.drops.total,
                **{f'dropped_{k}': v for k, v in self.drops.by_reason.items()},
                'frames_pending': self.frames_received - self.frames_processed - self.drops.total,
                **self.losses.values(),
            })
            drops = dict(self.drops.by_reason)
        engine = self._engine
        inference_summary(status, engine_error=self.engine_error, loaded=engine is not None,
                          running_on=f'{engine.backend} ({engine.device})' if engine is not None else '',
                          last_error=self.last_error, drops_by_reason=drops, warnings=self.warnings)
        status.add('last_error', self.last_error)
        if engine is not None:
            status.update({'backend': str(engine.backend), 'device': str(engine.device)})
        status.update({f'{k}_ms_mean': f'{v:.3f}' for k, v in self.stage_means().items()})
        status.add('input_topics', ','.join(self.input_topics))
        status.update(subscriber_values(self._frame_subs))
        wrong = self._wrong_type_publishers()
        if wrong:
            status.merge_summary(Level.ERROR, wrong)
            self._log.once(f'type-{wrong}', wrong, 'error')

    def _wrong_type_publishers(self) -> str:
        """Publishers of another message type on an input topic deliver nothing (DDS does not match them)
        and the middleware gives no event for it here: found from the graph instead."""
        for topic in self.input_topics:
            types = sorted({i.topic_type for i in self.get_publishers_info_by_topic(topic)} - {IMAGE_TYPE})
            if types:
                return (f'{topic} is published as {", ".join(types)}, not {IMAGE_TYPE}: those messages never '
                        'arrive; publish sensor_msgs/Image there or change input_topics')
        return ''

    def _apply_switch_interval(self) -> None:
        interval_us = self._values['gil_switch_interval_us']
        if interval_us > 0:
            sys.setswitchinterval(interval_us / 1e6)

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._wake.wait(timeout=0.1) and not self._retry_due():
                continue
            self._wake.clear()
            try:
                self._work()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one bad batch
                if not self.context.ok():
                    return  # Ctrl-C: the publishers went with the context; stop without a word
                self.get_logger().error(f'inference worker: {type(exc).__name__}: {exc}')

    def destroy_node(self) -> None:
        self._stopping.set()
        worker = self._worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout=30.0)
        engine, self._engine, self._runner = self._engine, None, None
        if engine is not None:
            engine.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # One executor thread: the image callbacks are O(1) (a header check, a queue push) and the engine has
    # its own thread, so more executor threads only contend for the GIL (BENCHMARKS.md, issue 11).
    run_node(InferenceNode, args, executor_factory=executors.factory('', 'single'))


if __name__ == '__main__':
    main()
