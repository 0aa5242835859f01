"""`stream_batcher`: N camera topics in, dynamic batches on K CUDA streams, per-camera results out.

The ROS side of `isaac_perf.core.batching.batcher` (DynamicBatcher) and `isaac_perf.core.batching.scheduler`
(BatchScheduler, MultiStreamPipeline). Its parameters and their rules are `core.batching.node_params`,
which engines go on which GPU `core.batching.placement` and `core.batching.device_engines`, its
/diagnostics values and level `core.batching.health`; this module only translates ROS <-> core:

- one `ros.frame_transport.FrameSubscriber` per camera (`camera_topics`): frames come through shared memory
  from publishers that offer it (image_source; `zero_copy`), as plain sensor_msgs/Image from the others;
  the callback only validates the image header, views its pixels without a copy and queues the frame in the
  batcher (bounded per camera, drop-oldest, counted);
- a worker thread (not an executor callback: it blocks on CUDA events, never on the executor) sends a batch
  when it is full or its oldest frame has waited `max_queue_delay_ms`, over `num_streams` lanes with
  double-buffered pinned/device pools, and publishes every frame's result on its camera's own topic, in
  capture order per camera;
- results: `<camera topic>/<output_suffix>` (/camera_0/image_raw -> /camera_0/image_raw/detections, the
  rule of inference_node), the same std_msgs/Float32MultiArray layout as inference_node (classification
  rows [class_id, score]; detection rows [x1, y1, x2, y2, score, class_id] in the camera's pixels);
- `~/stage_times` (isaac_perf.core.telemetry.stage_times), one report per frame with its header stamp,
batch_size 1
  (the monitor sums it into FPS) and the stages transport, queue, pre, infer, post; after total_ms come
  four extra labelled fields: `engine_batch_size` (frames in the GPU batch it ran in), `dropped` (the
  camera's drops so far), `camera_index` and `gpu_index` (the CUDA device that ran its batch, -1 = CPU);
- several GPUs (`gpu_ids`): one engine per GPU, each with its own streams and pools; batches go to the
  least-loaded GPU (core.batching.multi_device.MultiDeviceScheduler), each at most `max_batch_size_per_gpu`
  frames;
- `/diagnostics`: batch sizes, queue delays, drops per camera, streams, pool reuse and high-water marks.

Runtime parameters (the qos_tuner changes them live): `max_batch_size`, `max_queue_delay_ms`,
`num_streams`, `queue_depth`, `preferred_batch_sizes` take effect on the next batch without losing or
repeating a frame; `input_reliability` and `camera_topics` recreate the subscriptions (a removed camera's
queued frames still drain); model/backend parameters reload the engine in the worker while frames wait in
the batcher.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray

from isaac_perf.core.batching.batcher import DynamicBatcher
from isaac_perf.core.batching.device_engines import EngineSet, build_scheduler, load_engines
from isaac_perf.core.batching.health import batcher_summary, batching_values, scheduler_values
from isaac_perf.core.batching.model import ModelPlan
from isaac_perf.core.batching.multi_device import MultiDeviceScheduler
from isaac_perf.core.batching.node_params import (
    BATCH_KEYS,
    IO_KEYS,
    PARAMS,
    RELOAD_KEYS,
    policy_from,
    result_topic,
)
from isaac_perf.core.batching.node_params import cross_check as batcher_cross_check
from isaac_perf.core.batching.pipeline import FrameResult, MultiStreamPipeline
from isaac_perf.core.batching.placement import batch_limits, plan_placement
from isaac_perf.core.cuda.runtime import visible_gpus
from isaac_perf.core.inference.engines.base import Engine, EngineError
from isaac_perf.core.inference.frames import ImageFormatError
from isaac_perf.core.inference.node_params import names
from isaac_perf.core.telemetry import stage_times
from isaac_perf.core.telemetry.health import Status
from isaac_perf.core.transport.errors import refusal_severity
from isaac_perf.core.tuning.planner import LatencyCurve
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
from isaac_perf.ros.node_main import StartupError, run_node
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.qos import qos_from_name, replaceable_publisher
from isaac_perf.ros.receipt import ReceiptLosses

__all__ = ['PARAMS', 'StreamBatcher', 'cross_check', 'main', 'result_topic']

NODE_NAME = 'stream_batcher'
SUBSCRIPTION_DEPTH = 5  # DDS history per camera; the batcher's own bound is queue_depth
EXTRA_FIELDS = ('engine_batch_size', 'dropped', 'camera_index', 'gpu_index')
LOG_REPEAT_S = 5.0


def cross_check(values: dict[str, Any]) -> list[str]:
    """The parameter rules against the GPUs this process sees (start-up and `ros2 param set` alike)."""
    return batcher_cross_check(values, visible())


_VISIBLE: list[str] | None = None


def visible() -> list[str]:
    """The GPUs this process sees (asked once: enumerating CUDA devices is slow and does not change)."""
    global _VISIBLE
    if _VISIBLE is None:
        _VISIBLE = visible_gpus()
    return _VISIBLE


def frame_stage_message(result: FrameResult, transport_ms: float, dropped: int, camera_index: int
                        ) -> Float64MultiArray:
    """One frame's stage report; the extra fields are appended after total_ms (EXTRA_FIELDS order)."""
    report = stage_times.StageReport(stamp_ns=result.stamp_ns, batch_size=1,
                                     stages_ms={'transport': transport_ms, **result.stages_ms})
    extra = (result.batch_size, dropped, camera_index, result.gpu_index)
    return stage_message(report, dict(zip(EXTRA_FIELDS, extra, strict=True)))


# ------------------------------------------------------------------------------------------- node


class StreamBatcher(Node):
    """Batches frames of several cameras on a GPU (or the CPU) and publishes per-camera results."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop('node_name', NODE_NAME), **kwargs)
        self._started = time.monotonic()
        # Everything destroy_node() touches exists before anything can fail.
        self._lock = threading.Lock()  # counters, publisher table
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.pipeline: MultiStreamPipeline | None = None
        self.engines: EngineSet | None = None
        self._values: dict[str, Any] = {}
        self._values = declare_params(self, PARAMS, on_change=self._on_change,
                                      extra_check=lambda changes: cross_check({**self._values, **changes}))
        errors = cross_check(self._values)
        if errors:
            raise StartupError('invalid start-up parameters: ' + '; '.join(errors))
        self.batcher = DynamicBatcher(policy_from(self._values))
        self.pipeline = MultiStreamPipeline(self.batcher, None)
        self.frames_received = 0
        self.bad_input = 0
        self.results_published = 0
        self.failed_frames = 0
        self.unpublished = 0  # results of a camera whose publisher is gone (dropped, counted)
        self.refused: dict[str, int] = {}  # zero-copy frames that could not be read, by reason (dropped)
        # Frames lost before receipt (publisher sequence gaps, the middleware's message-lost event), as
        # inference_node counts them: published = received + lost before receipt, and received =
        # published results + dropped + pending.
        self.losses = ReceiptLosses()
        self.engine_error = ''
        self.last_error = ''
        self.engine_ready = threading.Event()
        self._last_logged: dict[str, float] = {}
        self._reload = True
        self._pending_streams: int | None = None
        self._pending_limits = False
        self._camera_index: dict[str, int] = {}
        self._frame_subs: list[Any] = []
        self._result_pubs: dict[str, Any] = {}  # camera topic -> publisher; kept while a camera drains
        self._stopped_logged: set[str] = set()
        self.time_to_engine_ready_s: float | None = None
        self.time_to_first_result_s: float | None = None
        # The cameras are subscribed once the first engine is ready, not before: while the model loads,
        # frames arriving at 240/s (deserialised, queued, then dropped) took the GIL from the load and
        # stretched it to minutes. The worker triggers this guard condition; the executor subscribes.
        self._listening = False
        self._listen_guard = self.create_guard_condition(self._start_listening)
        self._last_tick: float | None = None
        if self._values['gil_switch_interval_us'] > 0:
            # Every GPU op releases and re-takes the GIL; at the 5 ms default each re-take waited behind
            # the camera callbacks (the same convoy inference_node's parameter fixes).
            sys.setswitchinterval(self._values['gil_switch_interval_us'] / 1e6)
        self._stage_pub = self.create_publisher(Float64MultiArray, '~/stage_times', 50)
        # Published from _periodic, right after the camera-timeout check, so a status never lags it.
        self._diagnostics = Updater(self, 0.0, hardware_id=self.get_fully_qualified_name())
        self._diagnostics.add('stream_batcher', self._diagnose)
        self._create_io()
        self._diag_timer = self.create_timer(self._values['diagnostics_period_s'], self._periodic)
        self._worker = threading.Thread(target=self._run, name='stream_batcher_worker', daemon=True)
        self._worker.start()

    @property
    def engine(self) -> Engine | None:
        """The first device's engine (None while loading or after a failed load)."""
        engines = self.engines
        return engines.engine if engines is not None else None

    @property
    def listening(self) -> bool:
        """True once the cameras are subscribed (after the first engine is ready)."""
        return self._listening

    @property
    def plan(self) -> ModelPlan | None:
        engines = self.engines
        return engines.plan if engines is not None else None

    # ------------------------------------------------------------------------------- parameters

    def _on_change(self, changes: dict[str, Any]) -> None:
        self._values.update(changes)
        keys = set(changes)
        if keys & BATCH_KEYS:
            self.batcher.configure(**{f: getattr(policy_from(self._values), f) for f in (
                'max_batch_size', 'max_queue_delay_ns', 'preferred_batch_sizes', 'queue_depth')})
        if keys & {'max_batch_size_per_gpu', 'max_batch_size'}:
            self._pending_limits = True  # applied by the worker, which owns the scheduler
        if 'num_streams' in keys:
            self._pending_streams = int(changes['num_streams'])  # applied by the worker, which owns streams
            built = len(self.engines.per_device[0]) if self.engines is not None else 0
            if self._values['cuda_graphs'] and int(changes['num_streams']) > built:
                self._reload = True  # one engine per stream: more streams than built need their own
        if 'max_batch_size' in keys and self.engine is not None and \
                int(changes['max_batch_size']) > self.engine.max_batch_size:
            self._reload = True  # a fixed engine profile (TensorRT) must grow
        buckets = self.engines.buckets if self.engines is not None else ()
        if 'max_batch_size' in keys and self._values['cuda_graphs'] and \
                int(changes['max_batch_size']) > max(buckets, default=0):
            self._reload = True  # graphs are captured up to the old maximum only
        if keys & IO_KEYS:
            self._create_io()
        if keys & RELOAD_KEYS:
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
        topics = names(v['camera_topics'])
        qos = qos_from_name(v['input_reliability'], depth=SUBSCRIPTION_DEPTH)
        with self._lock:
            for sub in self._frame_subs:
                sub.destroy()
            removed = [t for t in self._camera_index if t not in topics]
            self._camera_index = {t: i for i, t in enumerate(topics)}
            for topic in topics:
                out = result_topic(topic, v['output_suffix'])
                old = self._result_pubs.get(topic)
                if old is None or old.topic_name != out:
                    if old is not None:
                        self.destroy_publisher(old)
                    self._result_pubs[topic] = replaceable_publisher(self, Float32MultiArray, out, 10)
            self._frame_subs = [
                FrameSubscriber(self, topic, self._make_callback(topic), qos, losses=self.losses,
                                source=topic, zero_copy=v['zero_copy'], on_refused=self._make_refused(topic))
                for topic in topics] if self._listening else []
        for topic in topics:
            self.batcher.add_camera(topic)
        for topic in removed:
            self.batcher.stop_camera(topic)  # its queued frames still drain and are published

    def _start_listening(self) -> None:
        if not self._listening:
            self._listening = True
            self._create_io()

    def _make_callback(self, topic: str):
        def on_image(msg: Image | ReceivedFrame) -> None:
            self._on_image(topic, msg)
        return on_image

    def _make_refused(self, topic: str):
        def on_refused(reason: str, message: str) -> None:
            # The frame was published and is lost here: received, and dropped with its cause.
            with self._lock:
                self.frames_received += 1
                self.refused[reason] = self.refused.get(reason, 0) + 1
            severity = refusal_severity(reason)
            if severity is not None:
                self._report(f'zero_copy_{reason}', f'frame on {topic} dropped: {message}', severity)
        return on_refused

    # ------------------------------------------------------------------------------------ input

    def _on_image(self, topic: str, msg: Image | ReceivedFrame) -> None:
        ros_now = self.get_clock().now().nanoseconds
        now = time.perf_counter_ns()
        try:
            check_model_image(msg)
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
                if not self.context.ok():
                    return  # Ctrl-C: publishers are gone with the context; stop without a word
                self._report('worker', f'batch processing failed: {type(exc).__name__}: {exc}')
                time.sleep(0.01)

    def _idle(self) -> None:
        sched = self.pipeline.scheduler
        deadline = self.batcher.next_deadline_ns()
        due_s = None if deadline is None else max(0.0, (deadline - time.perf_counter_ns()) / 1e9)
        if sched is not None and sched.in_flight:
            if not sched.has_capacity():
                self._publish(self.pipeline.wait())  # every lane busy: wait for the oldest batch
                return
            # batches in flight: look again soon, at once if a batch is already due (a lane is free)
            timeout = 0.0005 if due_s is None else min(0.0005, due_s)
        else:
            timeout = 0.5 if due_s is None else due_s
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
        """(Re)load the engines from the current parameters; failures leave the node running without any
        (frames wait in the batcher, then drop) until a parameter change fixes them."""
        self._reload = False
        v = dict(self._values)
        self._publish(self.pipeline.set_scheduler(None))  # finish what the old engines have in flight
        old, self.engines = self.engines, None
        if old is not None:
            old.close()
        started = time.monotonic()

        def warn(message: str) -> None:
            if self.context.ok():  # not after Ctrl-C: rosout is gone
                self.get_logger().warning(message)

        try:
            placement = plan_placement(v['device'], v['gpu_ids'], visible())
        except ValueError as exc:
            self.engine_error = str(exc)
            self._report('engine_load', f'cannot place the engines: {exc}')
            return
        if placement.warning:
            warn(placement.warning)
        try:
            engines = load_engines(v, self._values, placement.targets, warn)  # live values: top_k etc.
        except (EngineError, OSError, ValueError, RuntimeError, ImportError) as exc:
            self.engine_error = str(exc)
            self._report('engine_load', f'cannot load the model (frames wait, then drop): {exc}')
            return
        if not self.context.ok():  # Ctrl-C came during the load: release it quietly (rosout is gone)
            engines.close()
            return
        sched = build_scheduler(engines, v, self._values)
        self.engines = engines
        self.pipeline.post = engines.plan.post
        self.pipeline.set_scheduler(sched)
        self.engine_error = ''
        self.engine_ready.set()
        if self.time_to_engine_ready_s is None:
            self.time_to_engine_ready_s = time.monotonic() - self._started
        self._log_ready(engines, sched, time.monotonic() - started)
        if not self._listening:
            self._listen_guard.trigger()  # subscribe the cameras now (on the executor thread)

    def _log_ready(self, engines: EngineSet, sched: MultiDeviceScheduler, seconds: float) -> None:
        engine, plan = engines.engine, engines.plan
        self.get_logger().info(
            f'engine ready in {seconds:.1f} s: backend={engine.backend} '
            f'device={engine.device} runtime={sched.runtime.describe()} task={plan.task} '
            f'input={plan.config.width}x{plan.config.height} streams={sched.num_streams} '
            f'gpus={sched.device_indices} limits={sched.limits} '
            f'cuda_graphs={"buckets " + str(engines.buckets) if engines.graphs else "off"}')

    # ---------------------------------------------------------------------------------- output

    def _publish(self, results: list[FrameResult]) -> None:
        if not results or not self.context.ok():
            return  # after Ctrl-C the publishers' context is gone: results in flight are let go
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
                with self._lock:
                    self.unpublished += 1
                continue
            pub.publish(results_message(r.result))
            dropped = stats[r.camera].dropped if r.camera in stats else 0
            self._stage_pub.publish(frame_stage_message(r, float(r.meta or 0.0), dropped, index))
            with self._lock:
                self.results_published += 1
                if self.time_to_first_result_s is None:
                    self.time_to_first_result_s = time.monotonic() - self._started

    def _report(self, kind: str, message: str, severity: str = 'error') -> None:
        self.last_error = message
        now = time.monotonic()
        if self.context.ok() and now - self._last_logged.get(kind, -1e9) >= LOG_REPEAT_S:
            self._last_logged[kind] = now
            (self.get_logger().warning if severity == 'warning' else self.get_logger().error)(message)

    # ------------------------------------------------------------------------------ diagnostics

    def _periodic(self) -> None:
        cameras = self.batcher.stats().cameras
        self._stopped_logged = {c for c in self._stopped_logged if c in cameras and cameras[c].stopped}
        now = time.perf_counter_ns()
        # Silence only counts while this node could listen: if this timer ran late, the executor was
        # busy (or the process starved) for that long and frames may be waiting unread in DDS.
        tick, period = time.monotonic(), float(self._values['diagnostics_period_s'])
        late = 0.0 if self._last_tick is None else max(0.0, tick - self._last_tick - period)
        self._last_tick = tick
        timeout = int((self._values['camera_timeout_s'] + late) * 1e9)
        for camera in self.batcher.idle_cameras(now, timeout) if late < period else []:
            self.batcher.stop_camera(camera)
            if camera not in self._stopped_logged:
                self._stopped_logged.add(camera)
                self.get_logger().warning(f'camera {camera} sent nothing for '
                                          f'{self._values["camera_timeout_s"]} s: marked stopped, its '
                                          'queued frames drain')
        self._diagnostics.force_update()

    def diagnostics_values(self) -> dict[str, Any]:
        with self._lock:
            received, published = self.frames_received, self.results_published
            bad_input, failed, unpublished = self.bad_input, self.failed_frames, self.unpublished
            refused = dict(self.refused)
        values: dict[str, Any] = {'frames_received': received, 'results_published': published,
                                  **batching_values(self.batcher, bad_input, failed, unpublished, refused)}
        values['frames_pending'] = received - published - values['total_dropped_frames']
        values.update(self.losses.values())
        with self._lock:
            subs = list(self._frame_subs)
        values.update(subscriber_values(subs))
        sched = self.pipeline.scheduler
        if sched is not None:
            values.update(scheduler_values(sched))
        engine = self.engine
        if engine is not None:
            values.update(backend=engine.backend, device=engine.device)
        engines = self.engines
        if engines is not None and engines.batch_latency_ms:
            values['batch_latency_ms'] = LatencyCurve(engines.batch_latency_ms).format()
        values['time_to_engine_ready_s'] = _seconds(self.time_to_engine_ready_s)
        values['time_to_first_result_s'] = _seconds(self.time_to_first_result_s)
        values['last_error'] = self.last_error
        return values

    def _diagnose(self, status: Status) -> None:
        values = self.diagnostics_values()
        engine = self.engine
        batcher_summary(status, engine_error=self.engine_error, loaded=engine is not None,
                        device=str(engine.device) if engine is not None else '',
                        dropped=values['total_dropped_frames'])
        status.update({k: str(v) for k, v in values.items()})

    def destroy_node(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        sched = self.pipeline.scheduler if self.pipeline is not None else None
        if sched is not None:
            leaks = sched.close()
            if any(leaks.values()):
                self.get_logger().warning(f'buffers still checked out at shutdown: {leaks}')
        engines, self.engines = self.engines, None
        if engines is not None:
            engines.close()
        super().destroy_node()


def _seconds(value: float | None) -> str:
    return 'nan' if value is None else f'{value:.2f}'


def main(args: list[str] | None = None) -> None:
    # One executor thread: the callbacks are O(1) (a view of the frame, a queue push) and the engine has
    # its own thread, so more executor threads only contend for the GIL (BENCHMARKS.md, issue 11).
    run_node(StreamBatcher, args, executor_factory=executors.factory('', 'single'))


if __name__ == '__main__':
    main()
