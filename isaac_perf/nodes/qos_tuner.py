"""qos_tuner: closed-loop tuning of another node's batching and QoS parameters to meet a latency budget.

It reads /performance_metrics (the perf_monitor's labelled Float32MultiArray; which labels hold FPS, p99
latency, GPU load... are parameters), runs `isaac_perf.core.tuning.controller.RealtimeController` on each
fresh
window, and applies the changes it decides through the target node's own parameter services
(rcl_interfaces/srv/GetParameters to read, SetParametersAtomically to write, so a batch size and the queue
depth it needs change together or not at all). The target validates every value itself: a refusal comes
back with its reason, is logged and never proposed again.

Every decision is logged with its reason and published as JSON (std_msgs/String) on `~/decisions`:
{"action": "change" | "revert" | "accept" | "converged" | "impossible" | "applied" | "rejected" |
"qos_incompatible" | "qos_event" | "external", "reason": ..., "change": {"set": {...}, "from": {...},
"expected": ...}, "p99_ms", "fps", "config", "advise_only"}. With `advise_only` nothing is set: the
changes are only published (once per cooldown while they stay true).

It also watches QoS: for each topic in `watch_topics` it holds a raw (never deserialized) best-effort
subscription with deadline-missed and message-lost event callbacks, and on every graph scan checks each
publisher/subscriber pair of those topics with the ROS 2 compatibility rules, logging the reason for any
pair that cannot talk (once per pair).

The tuned configuration (what the controller last kept) is written as a ROS 2 params file to
`output_config_path`, ready for `ros2 launch isaac_perf tuned_pipeline.launch.py tuned_params:=<file>`.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterEvent, ParameterType
from rcl_interfaces.srv import GetParameters, SetParametersAtomically
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String

from isaac_perf.core.output_paths import OutputPathError, write_text
from isaac_perf.core.tuning.advisor import Change
from isaac_perf.core.tuning.controller import Decision
from isaac_perf.core.tuning.knobs import (
    KNOBS,
    TARGET_PARAM,
    PipelineState,
    knob_from_target,
    knob_to_target,
    knobs_from,
)
from isaac_perf.core.tuning.params_file import params_file_text
from isaac_perf.core.tuning.planner import LatencyCurve, StageWindow, host_overhead_ms, plan_start
from isaac_perf.core.tuning.qos import QosEvent, QosEventCounter, check_compatible
from isaac_perf.core.tuning.tuner_health import TunerFacts, tuner_status
from isaac_perf.core.tuning.tuner_params import (
    CONTROLLER_PARAMS,
    PARAMS,
    controller_from,
    cross_check,
    output_dir,
    window_policy_from,
)
from isaac_perf.ros.diagnostics import Updater
from isaac_perf.ros.log import LogLimiter
from isaac_perf.ros.node_main import StartupError, run_node
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.qos import from_qos_profile, subscription_event_callbacks

NAN = float('nan')


class QosTuner(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('qos_tuner', **kwargs)
        # declare_params raises StartupError for a refused start-up value (rclpy's range/type checks too).
        self.p = declare_params(self, PARAMS, on_change=self._on_params, extra_check=self._extra_check)
        errors = cross_check(self.p)
        if errors:
            raise StartupError('invalid start-up parameters: ' + '; '.join(errors))
        self._knobs = knobs_from(self.p)
        self._controller = controller_from(self.p, self._knobs)
        self._config: dict[str, Any] | None = None  # the target's knob values, as last read or set
        self._missing: set[str] = set()  # knobs the target does not declare
        self._cameras = int(self.p['cameras'])
        self._metrics: dict[str, float] | None = None
        self._metrics_at = -math.inf
        self._metrics_seq = 0
        self._used_seq = 0
        self._in_flight: tuple[Change, float] | None = None
        self._sync_pending = False
        self._log = LogLimiter(self.get_logger())  # once/throttled lines at any severity (rclpy forbids
        # one call site logging at two severities, which killed this node a second after start)
        self.counts = {'decisions': 0, 'applied': 0, 'rejected': 0, 'malformed_metrics': 0, 'timeouts': 0,
                       'yaml_writes': 0, 'yaml_errors': 0}
        self.qos_events = QosEventCounter()
        self._incompatible_said: set[tuple[str, str, str]] = set()
        self._watchers: dict[str, Any] = {}
        self._last_timed_out = False
        # stage_times windows, the plan from the target's latency-per-batch curve, load changes
        self._windows = StageWindow()
        self._window_policy = window_policy_from(self.p)
        self._since_ns = 0  # wall clock of the last change: windows count frames captured after it
        self._window_end_ns = 0
        self._window_fps = NAN
        self._batch_index: int | None = None
        self._stage_sub: Any = None
        self._curve: LatencyCurve | None = None
        self._planned = False
        self._planned_rate = NAN  # the offered rate the last plan assumed
        self._offered_hint = NAN  # after a camera change: the old rate scaled, until measured
        self._received: tuple[float, float] | None = None  # (time s, frames_received) of the target
        self._received_rate = NAN
        self._rate_off = 0
        self._written_best: Any = None
        self._overhead_seen: float | None = None  # host ms per batch the curve misses, once calibrated

        self._group = MutuallyExclusiveCallbackGroup()
        self.decisions_pub = self.create_publisher(String, '~/decisions', 50)
        self.create_subscription(Float32MultiArray, self.p['metrics_topic'], self._on_metrics, 10,
                                 callback_group=self._group)
        self.create_subscription(ParameterEvent, '/parameter_events', self._on_parameter_event, 100,
                                 callback_group=self._group)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 20,
                                 callback_group=self._group)
        self._make_stage_subscription()
        self._make_clients()
        self._control_timer = self.create_timer(self.p['control_period_s'], self._control,
                                                callback_group=self._group)
        self._sync_timer = self.create_timer(1.0, self._sync, callback_group=self._group)
        self._graph_timer = self.create_timer(self.p['graph_check_period_s'], self._graph_check,
                                              callback_group=self._group)
        self._diagnostics = Updater(self, self.p['diagnostics_period_s'], callback_group=self._group)
        self._diagnostics.add('tuning', lambda status: tuner_status(status, self.facts()))
        self._sync()
        self.get_logger().info(
            f'tuning {self.p["target_node"]} ({", ".join(k.name for k in self._knobs)}) for p99 <= '
            f'{self.p["latency_budget_ms"]:g} ms, min {self.p["min_fps"]:g} FPS, objective '
            f'{self.p["objective"]}' + (' [advise only]' if self.p['advise_only'] else ''))

    def facts(self) -> TunerFacts:
        """What the diagnostics status reports, as plain data."""
        best = self._controller.best
        return TunerFacts(target=self.p['target_node'], knobs=tuple(k.name for k in self._knobs),
                          config=dict(self._config) if self._config is not None else None,
                          advise_only=bool(self.p['advise_only']), missing=tuple(sorted(self._missing)),
                          counts=dict(self.counts), incompatible_pairs=len(self._incompatible_said),
                          last_timed_out=self._last_timed_out, status=self._controller.status,
                          best=best.as_dict() if best is not None else None,
                          impossible=self._controller.impossible_report,
                          curve=self._curve.format() if self._curve is not None else '')

    # -- parameters --------------------------------------------------------------------------------------
    def _extra_check(self, changes: dict[str, Any]) -> list[str]:
        return cross_check({**self.p, **changes})

    def _on_params(self, changes: dict[str, Any]) -> None:
        self.p.update(changes)
        if 'target_node' in changes:
            self._make_clients()
            self._config = None
            self._missing.clear()
        if CONTROLLER_PARAMS & changes.keys() or 'target_node' in changes:
            self._knobs = knobs_from(self.p)
            self._controller = controller_from(self.p, self._knobs)
            self._planned = False
            self._window_policy = window_policy_from(self.p)
            self._make_stage_subscription()
            self._publish({'action': 'restart',
                           'reason': f'parameters changed: {", ".join(sorted(changes))}'})
        if 'cameras' in changes and changes['cameras'] > 0:
            self._cameras = int(changes['cameras'])
        if 'control_period_s' in changes:
            self._control_timer.cancel()
            self.destroy_timer(self._control_timer)
            self._control_timer = self.create_timer(self.p['control_period_s'], self._control,
                                                    callback_group=self._group)
        if 'watch_topics' in changes or 'expected_rate_hz' in changes:
            for topic in list(self._watchers):
                self.destroy_subscription(self._watchers.pop(topic))

    def _make_stage_subscription(self) -> None:
        if self._stage_sub is not None:
            self.destroy_subscription(self._stage_sub)
            self._stage_sub = None
        if self.p['window_source'] != 'stage_times':
            return
        topic = self._stage_topic()
        self._batch_index = None
        self._stage_sub = self.create_subscription(
            Float64MultiArray, topic, self._on_stage,
            QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE), callback_group=self._group)

    def _stage_topic(self) -> str:
        return self.p['stage_topic'] or f'{self.p["target_node"]}/stage_times'

    def _tuner_time(self) -> float:
        """The controller's time: wall clock with stage_times windows (frame stamps are wall clock)."""
        return time.time() if self.p['window_source'] == 'stage_times' else time.monotonic()

    def _mark_change(self) -> None:
        self._since_ns = time.time_ns()
        self._window_end_ns = 0

    def _make_clients(self) -> None:
        target = self.p['target_node']
        for name in ('_get_client', '_set_client'):
            old = getattr(self, name, None)
            if old is not None:
                self.destroy_client(old)
        self._get_client = self.create_client(GetParameters, f'{target}/get_parameters',
                                              callback_group=self._group)
        self._set_client = self.create_client(SetParametersAtomically, f'{target}/set_parameters_atomically',
                                              callback_group=self._group)

    def _say_once(self, key: str, text: str, level: str = 'warning') -> None:
        self._log.once(key, text, level)

    # -- reading the target -----------------------------------------------------------------------------
    def _sync(self) -> None:
        """Read the target's knob values (and camera count) until known."""
        if self._config is not None or self._sync_pending:
            return
        if not self._get_client.service_is_ready():
            self._say_once('wait-target', f'waiting for {self.p["target_node"]}/get_parameters', 'info')
            return
        knobs = [k.name for k in self._knobs]
        names = [TARGET_PARAM.get(k, k) for k in knobs] + ['camera_topics']
        future = self._get_client.call_async(GetParameters.Request(names=names))
        self._sync_pending = True
        future.add_done_callback(lambda f: self._on_get(knobs + ['camera_topics'], f))

    def _on_get(self, names: list[str], future: Any) -> None:
        self._sync_pending = False
        try:
            response = future.result()
        except Exception as exc:  # noqa: BLE001 - a failed call is retried on the next sync tick
            self.get_logger().warning(f'reading {self.p["target_node"]} parameters failed: {exc}')
            return
        if response is None or len(response.values) != len(names):
            self.get_logger().warning(f'{self.p["target_node"]} answered get_parameters with the wrong '
                                      'number of values; retrying')
            return
        config = {}
        for name, value in zip(names, response.values, strict=True):
            if value.type == ParameterType.PARAMETER_NOT_SET:
                if name != 'camera_topics':
                    self._missing.add(name)
                continue
            python = knob_from_target(name, parameter_value_to_python(value), self.p['max_gpus'])
            if name == 'camera_topics':
                if self.p['cameras'] == 0 and isinstance(python, (list, tuple)):
                    self._cameras = len([t for t in python if t])
            else:
                config[name] = python
        if self._missing:
            self._say_once(f'missing-{sorted(self._missing)}',
                           f'{self.p["target_node"]} does not declare {", ".join(sorted(self._missing))}: '
                           'not tuning those')
            self._knobs = [k for k in knobs_from(self.p) if k.name not in self._missing]
            self._controller = controller_from(self.p, self._knobs)
        if not config:
            self._say_once('no-knobs', f'{self.p["target_node"]} declares none of {", ".join(KNOBS)}: '
                           'nothing to tune', 'error')
            return
        self._config = config
        self.get_logger().info(f'{self.p["target_node"]} runs with {config} ({self._cameras or "?"} cameras)')

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        """Keep the known configuration in step with changes made by anyone (ros2 param set, launch...)."""
        if event.node != self.p['target_node'] or self._config is None:
            return
        knob_of = {target: knob for knob, target in TARGET_PARAM.items()}
        for p in list(event.changed_parameters) + list(event.new_parameters):
            name = knob_of.get(p.name, p.name)
            if name in self._config:
                value = knob_from_target(name, parameter_value_to_python(p.value), self.p['max_gpus'])
                if value != self._config[name]:
                    self._mark_change()
                self._config[name] = value
            elif p.name == 'camera_topics' and self.p['cameras'] == 0:
                topics = parameter_value_to_python(p.value)
                count = len([t for t in topics if t]) if isinstance(topics, (list, tuple)) else 0
                if count and count != self._cameras:
                    old, self._cameras = self._cameras, count
                    rate = self._received_rate * count / old if old else NAN
                    self._load_change(f'cameras {old} -> {count}', rate)

    # -- load changes, the plan ---------------------------------------------------------------------------
    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        # the publisher's stamp, not arrival: reliable diagnostics can arrive in bursts
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        for status in msg.status:
            if status.hardware_id != self.p['target_node']:
                continue
            values = {kv.key: kv.value for kv in status.values}
            text = values.get('batch_latency_ms')
            if text:
                curve = LatencyCurve.parse(text)
                if curve is not None and (self._curve is None or curve.points != self._curve.points):
                    self._curve = curve
                    self.get_logger().info(f'{self.p["target_node"]} latency per batch (ms): '
                                           f'{curve.format()}')
            if 'frames_received' in values:
                try:
                    self._on_received(stamp or time.time(), float(values['frames_received']))
                except ValueError:
                    pass

    def _on_received(self, now: float, count: float) -> None:
        last, self._received = self._received, (now, count)
        if last is None or now - last[0] < 0.5 or count < last[1]:
            return
        self._received_rate = rate = (count - last[1]) / (now - last[0])
        planned = self._planned_rate
        if not (self._planned and math.isfinite(planned) and planned > 0):
            return
        off = abs(rate - planned) / planned > self.p['load_change_ratio']
        self._rate_off = self._rate_off + 1 if off else 0
        if self._rate_off >= 3:
            self._load_change(f'received rate {planned:.0f} -> {rate:.0f} FPS', rate)

    def _load_change(self, reason: str, offered: float) -> None:
        self._rate_off = 0
        self._planned = False
        self._planned_rate = offered
        self._offered_hint = offered
        self._mark_change()
        self._written_best = None
        self._report(self._controller.load_changed(self._tuner_time(), f'load change: {reason}'))

    def _maybe_plan(self, state: PipelineState) -> None:
        if self._planned or not self.p['plan_start'] or self._curve is None or self._config is None:
            return
        offered = self._received_rate
        if not math.isfinite(offered):
            offered = self._offered_hint
        # what the pipeline delivers is offered too (a received rate read over a gap can be low)
        offered = max(offered, state.fps) if math.isfinite(offered) else state.fps
        knobs = {k.name: k for k in self._knobs}
        sizes = knobs['max_batch_size'].values if 'max_batch_size' in knobs else (self._config.get(
            'max_batch_size', 1),)
        streams = (knobs['num_streams'].values if 'num_streams' in knobs
                   else (self._config.get('num_streams', 1),))
        if self._overhead_seen is None:
            # calibrated once, from the tuner's first window, when it shows full batches falling behind
            full = state.mean_batch >= 0.9 * float(self._config.get('max_batch_size', math.inf))
            seen = host_overhead_ms(self._curve, fps=state.fps, mean_batch=state.mean_batch,
                                    offered_fps=self._received_rate) if full else NAN
            self._overhead_seen = seen if math.isfinite(seen) else 0.0
        overhead = max(self.p['plan_overhead_ms'], self._overhead_seen)
        plan = plan_start(self._curve, cameras=self._cameras or 1, offered_fps=offered,
                          budget_ms=self.p['latency_budget_ms'], batch_sizes=sizes, streams=streams,
                          headroom=self.p['headroom'], load_margin=self.p['load_margin'],
                          overhead_ms=overhead, per_frame_ms=self.p['plan_per_frame_ms'],
                          depth_bounds=(self.p['queue_depth_min'], self.p['queue_depth_max']))
        self._planned = True
        self._planned_rate = offered
        self._controller.plan(plan.config, plan.reason, expected=f'p99 ~{plan.expected_p99_ms:.1f} ms, '
                              f'capacity {plan.expected_capacity_fps:.0f} FPS',
                              expected_p99_ms=plan.expected_p99_ms, expected_fps=plan.expected_capacity_fps)
        self._publish({'action': 'planned', 'reason': plan.reason, 'plan': plan.config,
                       'offered_fps': offered, 'feasible': plan.feasible, 'curve': self._curve.format(),
                       'host_overhead_ms': overhead})
        if not plan.feasible:
            self._log.log('warning', f'the curve predicts the budget out of reach: {plan.reason}')

    # -- metrics --------------------------------------------------------------------------------------------
    def _on_metrics(self, msg: Float32MultiArray) -> None:
        labels = [d.label for d in msg.layout.dim]
        if len(labels) != len(msg.data):
            self.counts['malformed_metrics'] += 1
            self._say_once('malformed', f'{self.p["metrics_topic"]}: {len(labels)} labels for '
                           f'{len(msg.data)} values; ignoring such messages (is the publisher a '
                           'perf_monitor?)')
            return
        self._metrics = dict(zip(labels, (float(v) for v in msg.data), strict=True))
        self._metrics_at = time.monotonic()
        self._metrics_seq += 1

    def _on_stage(self, msg: Float64MultiArray) -> None:
        arrival = time.time_ns()
        data = msg.data
        if len(data) < 3:
            return
        stamp = int(data[0]) * 1_000_000_000 + int(data[1])
        if stamp <= 0:
            return
        if self._batch_index is None:
            labels = [d.label for d in msg.layout.dim]
            self._batch_index = labels.index('engine_batch_size') if 'engine_batch_size' in labels else -1
        i = self._batch_index
        self._windows.record(stamp, arrival, float(data[i]) if 0 <= i < len(data) else NAN)

    def stage_state(self, now_ns: int | None = None) -> tuple[float, PipelineState] | None:
        """The next complete stage_times window (settle_frames after the last change, then window_frames
        frames, both in seconds at the last window's rate), or None while it is not complete."""
        if self._config is None:
            return None
        if not len(self._windows):
            # nothing delivered yet (the target is still loading its engine: 13 s on the H200, 45 s for
            # ResNet-50 on a CPU): silence now says nothing about a setting, so no window, no change
            self._say_once('wait-results', f'waiting for the first results on {self._stage_topic()} '
                           f'({self.p["target_node"]} still loading its engine?); not tuning before then',
                           'info')
            return None
        now_ns = time.time_ns() if now_ns is None else now_ns
        policy, fps = self._window_policy, self._window_fps
        if not math.isfinite(fps):  # estimate from the last second of reports
            fps = self._windows.window(now_ns - 1_000_000_000, now_ns, self._since_ns).fps or NAN
        if not self._since_ns:
            # the tuner's first window: nothing changed yet, so the frames already here count
            self._since_ns = now_ns - int((policy.settle_s(fps) + policy.window_s(fps)) * 1e9)
        start = max(self._since_ns + int(policy.settle_s(fps) * 1e9), self._window_end_ns)
        end = start + int(policy.window_s(fps) * 1e9)
        if now_ns < end:
            return None
        stats = self._windows.window(start, end, self._since_ns)
        self._window_end_ns = end
        if stats.frames < 5:
            self._window_fps = NAN  # the longest windows until frames come again
            if now_ns - self._since_ns < 3e9 * policy.max_s:
                return None
            # nothing delivered for long after a change: a window that says so (the change is reverted)
            p99 = 1e6 if stats.frames == 0 else stats.p99_ms
        else:
            self._window_fps = stats.fps
            p99 = stats.p99_ms
        return end / 1e9, PipelineState(config=dict(self._config), fps=stats.fps, latency_p99_ms=p99,
                                        latency_p50_ms=stats.p50_ms, cameras=self._cameras,
                                        mean_batch=stats.mean_batch, offered_fps=self._received_rate,
                                        messages_lost=self.qos_events.take_new('message_lost'))

    def _field(self, name: str) -> float:
        if not name or self._metrics is None:
            return NAN
        return self._metrics.get(name, NAN)

    def state(self) -> PipelineState | None:
        """The latest metrics window as a controller state, or None (saying why once) when unusable."""
        if self._metrics is None or self._config is None:
            return None
        fps, p99 = self._field(self.p['fps_field']), self._field(self.p['latency_p99_field'])
        if not (math.isfinite(fps) and math.isfinite(p99)):
            self._say_once('no-fields', f'{self.p["metrics_topic"]} has no finite {self.p["fps_field"]} / '
                           f'{self.p["latency_p99_field"]} yet: check fps_field and latency_p99_field')
            return None
        drops = self._field(self.p['drops_field'])
        return PipelineState(
            config=dict(self._config), fps=fps, latency_p99_ms=p99,
            latency_p50_ms=self._field(self.p['latency_p50_field']),
            jitter_ms=self._field(self.p['jitter_field']),
            gpu_util_pct=self._field(self.p['gpu_util_field']), cameras=self._cameras,
            mean_batch=self._field(self.p['batch_size_field']),
            dropped_per_s=drops if math.isfinite(drops) else 0.0,
            messages_lost=self.qos_events.take_new('message_lost'))

    # -- the loop -----------------------------------------------------------------------------------------
    def _control(self) -> None:
        now = time.monotonic()
        if self._in_flight is not None:
            change, sent = self._in_flight
            if now - sent > self.p['service_timeout_s']:
                self.counts['timeouts'] += 1
                self._last_timed_out = True
                self._in_flight = None
                self._config = None  # unknown whether it applied: read it again
                self._publish({'action': 'rejected', 'change': change.as_dict(),
                               'reason': f'{self.p["target_node"]} did not answer within '
                                         f'{self.p["service_timeout_s"]:g} s'})
            return
        if self.p['window_source'] == 'stage_times':
            window = self.stage_state()
            if window is None:
                return
            at, state = window
        else:
            if self._metrics_seq == self._used_seq:
                return
            if now - self._metrics_at > self.p['metrics_timeout_s']:
                return
            metrics_state = self.state()
            if metrics_state is None:
                return
            self._used_seq = self._metrics_seq
            at, state = self._metrics_at, metrics_state
        self._maybe_plan(state)
        decision = self._controller.step(at, state)
        if decision.notable:
            self._report(decision)
        best = self._controller.best
        if decision.action == 'converged' or (best is not None and best is not self._written_best):
            self._written_best = best
            self._write_config(decision)
        if decision.change is not None and decision.change.actuated and not self.p['advise_only']:
            self._apply(decision.change)

    def _report(self, decision: Decision) -> None:
        self.counts['decisions'] += 1
        text = f'[{decision.action}] {decision.reason}'
        if decision.change is not None:
            text += f' | expected: {decision.change.expected}'
            if self.p['advise_only']:
                text = '(advise only) ' + text
        self._log.log('warning' if decision.action == 'impossible' else 'info', text)
        self._publish(decision.as_dict())

    def _publish(self, payload: dict[str, Any]) -> None:
        payload = {'node': self.get_fully_qualified_name(), 'target': self.p['target_node'],
                   'advise_only': bool(self.p['advise_only']), **payload}
        self.decisions_pub.publish(String(data=json.dumps(payload, default=str)))

    def _apply(self, change: Change) -> None:
        if not self._set_client.service_is_ready():
            self._say_once('wait-set', f'{self.p["target_node"]}/set_parameters_atomically is not available')
            return
        params = []
        for name, value in change.new.items():
            if value is None:  # never set a knob to "unknown" (a revert to a value never read)
                continue
            target, target_value = knob_to_target(name, value)
            params.append(Parameter(target, value=target_value).to_parameter_msg())
        future = self._set_client.call_async(SetParametersAtomically.Request(parameters=params))
        self._in_flight = (change, time.monotonic())
        future.add_done_callback(lambda f: self._on_set(change, f))

    def _on_set(self, change: Change, future: Any) -> None:
        if self._in_flight is None or self._in_flight[0] is not change:
            return  # timed out already
        self._in_flight = None
        try:
            result = future.result().result
        except Exception as exc:  # noqa: BLE001 - report, and let the controller try something else
            result = None
            reason = f'{type(exc).__name__}: {exc}'
        else:
            reason = result.reason
        if result is not None and result.successful:
            self.counts['applied'] += 1
            self._last_timed_out = False
            if self._config is not None:
                self._config.update(change.new)
            self._controller.applied(self._tuner_time(), change)
            self._mark_change()
            self.get_logger().info(f'applied on {self.p["target_node"]}: {change.describe()}')
            self._publish({'action': 'applied', 'reason': change.reason, 'change': change.as_dict(),
                           'config': dict(self._config or {})})
        else:
            self.counts['rejected'] += 1
            self._controller.rejected(change, reason)
            self.get_logger().warning(f'{self.p["target_node"]} refused {change.describe()}: {reason}')
            self._publish({'action': 'rejected', 'reason': reason, 'change': change.as_dict()})

    def _write_config(self, decision: Decision) -> None:
        path = self.p['output_config_path']
        if not path or self._config is None:
            return
        best = self._controller.best
        config = {**self._config, **(best.config if best is not None else {})}
        budget = self.p['latency_budget_ms']
        what = (f'best window within budget: p99 {best.p99_ms:.1f} ms (budget {budget:g} ms), '
                f'{best.fps:.1f} FPS' if best is not None else
                f'no window within budget yet; last p99 {decision.p99_ms:.1f} ms, {decision.fps:.1f} FPS')
        header = (f'Tuned by {self.get_fully_qualified_name()} on {time.strftime("%Y-%m-%d %H:%M:%S")}: '
                  f'{what}. {decision.action}: {decision.reason}')
        try:
            params = dict(knob_to_target(k, v) for k, v in config.items())
            write_text(output_dir(self.p), path, params_file_text(self.p['target_node'], params, header),
                       'output_config_path')
        except (OSError, OutputPathError) as exc:
            self.counts['yaml_errors'] += 1
            self._say_once(f'yaml-{path}', f'cannot write output_config_path={path!r}: {exc}; fix the path '
                           'or its permissions', 'error')
            return
        self.counts['yaml_writes'] += 1

    # -- QoS watching -------------------------------------------------------------------------------------
    def _on_qos_event(self, event: QosEvent) -> None:
        self.qos_events.record(event)
        self._say_once(f'event-{event.kind}-{event.topic}', f'QoS event: {event.describe()}')
        self._publish({'action': 'qos_event', 'reason': event.describe(), 'event': event.as_dict()})

    def _graph_check(self) -> None:
        topics = [t for t in self.p['watch_topics'] if t]
        for topic in topics:
            pubs = self.get_publishers_info_by_topic(topic)
            subs = [s for s in self.get_subscriptions_info_by_topic(topic)
                    if s.node_name != self.get_name() or s.node_namespace != self.get_namespace()]
            if topic not in self._watchers and pubs:
                self._watch(topic, pubs)
            for pub in pubs:
                for sub in subs:
                    try:
                        verdict = check_compatible(from_qos_profile(pub.qos_profile),
                                                   from_qos_profile(sub.qos_profile))
                    except ValueError:
                        continue
                    if verdict.compatible:
                        continue
                    who = (topic, f'{pub.node_namespace.rstrip("/")}/{pub.node_name}',
                           f'{sub.node_namespace.rstrip("/")}/{sub.node_name}')
                    if who in self._incompatible_said:
                        continue
                    self._incompatible_said.add(who)
                    reason = f'{topic}: {who[1]} -> {who[2]} cannot talk: {"; ".join(verdict.reasons)}'
                    self.get_logger().error(reason)
                    self._publish({'action': 'qos_incompatible', 'reason': reason, 'topic': topic,
                                   'publisher': who[1], 'subscriber': who[2]})

    def _watch(self, topic: str, pubs: list[Any]) -> None:
        """A raw best-effort subscription (compatible with any reliability) for the topic's QoS events."""
        from isaac_perf.ros.topic_watch import import_message_type
        try:
            msg_type = import_message_type(pubs[0].topic_type)
        except (ImportError, AttributeError, ValueError) as exc:
            self._say_once(f'type-{topic}', f'cannot watch {topic}: {exc}')
            return
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        try:
            offered = [from_qos_profile(p.qos_profile).deadline_ms for p in pubs]
        except ValueError:
            offered = []
        rate = self.p['expected_rate_hz']
        if offered and all(d is not None for d in offered):
            # request no tighter than every publisher offers, or the pair would be incompatible
            wanted = max(max(offered), 1500.0 / rate if rate > 0 else 0.0)
            qos.deadline = Duration(nanoseconds=int(wanted * 1e6))
        self._watchers[topic] = self.create_subscription(
            msg_type, topic, lambda _msg: None, qos, raw=True, callback_group=self._group,
            event_callbacks=subscription_event_callbacks(topic, self._on_qos_event, time.monotonic))


def main(args: list[str] | None = None) -> None:
    run_node(QosTuner, args)


if __name__ == '__main__':
    main()
