"""perf_monitor: GPU, host, topic and stage-time monitoring with threshold alerts.

Publishes /performance_metrics (std_msgs/Float32MultiArray, every field labelled, order in
isaac_perf/core/telemetry/metrics.py) and /diagnostics (diagnostic_msgs/DiagnosticArray: host, each GPU, each
watched
topic, each stage-time source; OK/WARN/ERROR/STALE). Watched topics are received raw and never
deserialized; stage-time reports are read from every topic whose name ends in `stage_times`.

Threads of work: message intake is O(1) per message (polled drains or raw callbacks); GPU/host sampling,
NVML GPM and per-process GPU sampling (about 3.4 ms a GPU), aggregation and publishing run on timers, each
in its own callback group so a slow NVML call never delays the drains when spun by a MultiThreadedExecutor.
"""
from __future__ import annotations

import functools
import math
import os
import socket
import threading
import time
from typing import Any

import psutil
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension

from isaac_perf.core.params import ParamSpec
from isaac_perf.core.telemetry import fields, metrics, stage_times
from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.gpm import GpmSample, GpmSampler
from isaac_perf.core.telemetry.gpu import PCIE_MODES, GpuSample, GpuSampler
from isaac_perf.core.telemetry.gpu_processes import (
    GpuProcessSampler,
    NodeGpuUse,
    match_node_pids,
    node_gpu_use,
)
from isaac_perf.core.telemetry.greenwave import GreenwaveStream
from isaac_perf.core.telemetry.health import Status
from isaac_perf.core.telemetry.monitor_policy import MonitorPolicy
from isaac_perf.core.telemetry.stats import StageStats, StreamStats
from isaac_perf.core.telemetry.system import SystemSample, SystemSampler, pattern_error
from isaac_perf.ros.diagnostics import Updater
from isaac_perf.ros.node_main import StartupError, run_node
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.stage_reports import stage_report_from_msg
from isaac_perf.ros.topic_watch import WATCH_MODES, TopicWatch, polled_subscription, take_queued, watch_qos

NAN = float('nan')
STAGE_TYPE = 'std_msgs/msg/Float64MultiArray'
DEFAULT_PROCESSES = ['perf_monitor', 'inference_node', 'stream_batcher', 'image_source', 'qos_tuner']


def _check_topics(topics: list[str]) -> str:
    bad = [t for t in topics if not t.startswith('/') or ' ' in t or t.endswith('/')]
    if bad:
        return f'watched_topics {bad}: give absolute topic names such as /camera/image_raw'
    if len(set(topics)) != len(topics):
        return 'watched_topics lists a topic twice: list each topic once'
    return ''


def _check_rates(rates: list[float]) -> str:
    if not rates:
        return 'expected_rates_hz is empty: give [0.0] (unknown for every topic) or one rate per topic'
    if any(not math.isfinite(r) or r < 0 for r in rates):
        return f'expected_rates_hz {list(rates)}: rates must be finite and >= 0 (0 = unknown)'
    return ''


def _check_gpus(indices: list[int]) -> str:
    if list(indices) == [-1]:
        return ''
    if not indices or any(i < 0 for i in indices):
        return f'gpu_indices {list(indices)}: give [-1] for every GPU or a list of indices >= 0'
    return ''


def _thresholds(name: str, unit: str, warn: float, error: float, high: float, what: str) -> list[ParamSpec]:
    return [
        ParamSpec(f'{name}_warn', warn, f'WARN when {what} (in {unit}); 0 = off.', min=0.0, max=high),
        ParamSpec(f'{name}_error', error, f'ERROR when {what} (in {unit}); 0 = off.', min=0.0, max=high),
    ]


PARAMS: list[ParamSpec] = [
    ParamSpec('sample_period_s', 0.5, 'Seconds between GPU and host samples.', min=0.05, max=60.0),
    ParamSpec('publish_period_s', 1.0, 'Seconds between /performance_metrics and /diagnostics messages.',
              min=0.05, max=60.0),
    ParamSpec('window_s', 5.0, 'Statistics window in seconds: rates, latency percentiles and jitter cover '
                               'the messages of the last window_s seconds.', min=0.2, max=600.0),
    ParamSpec('discovery_period_s', 1.0, 'Seconds between graph scans that find the types of watched topics '
                                         'and new */stage_times topics.', min=0.1, max=60.0),
    ParamSpec('watched_topics', [],
              'Topics to watch (any message type): rate, bandwidth, jitter, drops, and latency when the type '
              'starts with a std_msgs/Header.', check=_check_topics),
    ParamSpec('expected_rates_hz', [0.0],
              'Expected rate of each watched topic in Hz (0 = unknown): one value for every topic, or one '
              'per topic in watched_topics order.', check=_check_rates),
    ParamSpec('rate_tolerance_percent', 10.0,
              'A topic with an expected rate is WARN when it runs more than this percent below it, ERROR '
              'below half of it.', min=0.0, max=90.0),
    ParamSpec('stale_timeout_s', 3.0, 'A watched topic or stage-time source with no message for this many '
                                      'seconds is STALE.', min=0.1, max=3600.0),
    ParamSpec('watch_mode', 'poll', "How watched topics are received: 'poll' drains raw subscriptions on a "
                                    "timer (cheapest), 'callback' takes one raw callback per message.",
              choices=WATCH_MODES),
    ParamSpec('poll_period_s', 0.05, "Seconds between drains of the watched topics in 'poll' mode; "
                                     'watch_depth must hold one period of messages.', min=0.001, max=1.0),
    ParamSpec('watch_depth', 200, 'Queue depth (KEEP_LAST) of each watched-topic subscription.', min=1,
              max=100000),
    ParamSpec('ring_capacity', 8192,
              'Messages kept per watched topic for window statistics (bounds memory); raise it above '
              'rate x window_s for fast topics.', min=16, max=1_000_000),
    *_thresholds('min_fps', 'Hz', 0.0, 0.0, 1e6, 'a stage-time source, or a watched topic without an '
                 'expected rate, runs below this rate'),
    *_thresholds('max_latency_ms', 'ms', 0.0, 0.0, 1e7, 'the p50 latency of a watched topic or a stage-time '
                 'source is above this'),
    *_thresholds('max_gpu_util', 'percent', 0.0, 0.0, 100.0, 'GPU utilization is above this'),
    *_thresholds('max_gpu_memory_fraction', 'fraction of total', 0.9, 0.97, 1.0,
                 'the used fraction of a GPU memory is above this'),
    *_thresholds('max_gpu_temperature_c', 'degrees C', 83.0, 90.0, 150.0, 'a GPU is hotter than this'),
    *_thresholds('max_cpu_percent', 'percent of all cores', 0.0, 0.0, 100.0, 'host CPU use is above this'),
    ParamSpec('alert_hysteresis_fraction', 0.05, 'Hysteresis as a fraction of each threshold: a level is '
                                                 'left only once the value is this far back past it.',
              min=0.0, max=0.5),
    ParamSpec('alert_min_duration_s', 2.0, 'A new alert level must hold this many seconds before it is taken '
                                           '(and before it clears).', min=0.0, max=3600.0),
    ParamSpec('gpu_indices', [-1], 'GPU indices to sample; [-1] samples every GPU.', check=_check_gpus),
    ParamSpec('pcie_mode', 'auto', "PCIe throughput source: 'counters' (NVML byte counters), 'throughput' "
                                   "(nvmlDeviceGetPcieThroughput, blocks ~20 ms per direction), 'auto' "
                                   "(counters, else throughput) or 'off'.", choices=PCIE_MODES),
    ParamSpec('gpm_period_s', 1.0, 'Seconds between NVML GPM samples (SM occupancy/activity, tensor and DRAM '
                                   'activity) and per-process GPU samples, on their own timer; 0 = off.',
              min=0.0, max=60.0),
    ParamSpec('process_patterns', DEFAULT_PROCESSES,
              'Processes whose CPU and RSS are reported: substrings of a process name or command line, or '
              'pid:<number>.', check=pattern_error),
]

WATCH_PARAMS = {'watched_topics', 'expected_rates_hz', 'watch_mode', 'watch_depth', 'ring_capacity'}
# Stage reports queued per topic between two drains: 1000 = 20k reports/s at the default 50 ms poll period.
POLLED_STAGE_DEPTH = 1000
TIMER_PARAMS = {'sample_period_s', 'publish_period_s', 'discovery_period_s', 'poll_period_s', 'gpm_period_s'}


def cross_check(values: dict[str, Any]) -> list[str]:
    """Rules between parameters (each parameter alone is checked by its ParamSpec)."""
    errors = []
    topics, rates = values['watched_topics'], values['expected_rates_hz']
    if len(rates) not in (1, len(topics)):
        errors.append(f'expected_rates_hz has {len(rates)} values for {len(topics)} watched_topics: give one '
                      'value for all or one per topic')
    for name, below in (('min_fps', True), ('max_latency_ms', False), ('max_gpu_util', False),
                        ('max_gpu_memory_fraction', False), ('max_gpu_temperature_c', False),
                        ('max_cpu_percent', False)):
        warn, error = values[f'{name}_warn'], values[f'{name}_error']
        if warn > 0 and error > 0 and (error > warn if below else error < warn):
            side = 'at or below' if below else 'at or above'
            errors.append(f'{name}_error={error} must be {side} {name}_warn={warn}')
    return errors


class PerfMonitor(Node):
    """The monitor node; `**kwargs` go to rclpy's Node (context, parameter_overrides, namespace, ...)."""

    def __init__(self, node_name: str = 'perf_monitor', **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.RLock()
        self._intake_group = MutuallyExclusiveCallbackGroup()
        self._sample_group = MutuallyExclusiveCallbackGroup()
        self._publish_group = MutuallyExclusiveCallbackGroup()
        self._gpm_group = MutuallyExclusiveCallbackGroup()   # GPM's ~3 ms calls never wait on the drains
        # declare_params raises StartupError for a refused start-up value (rclpy's range/type checks too).
        self.p = declare_params(self, PARAMS, on_change=self._on_params, extra_check=self._check_changes)
        errors = cross_check(self.p)
        if errors:
            raise StartupError('invalid start-up parameters: ' + '; '.join(errors))
        self.hostname = socket.gethostname()
        self._metrics_pub = self.create_publisher(Float32MultiArray, '/performance_metrics', 10)
        # No timer of its own: statuses are published with each metrics message, from the same snapshot.
        self._diagnostics = Updater(self, period_s=0.0)
        self._statuses: list[Status] = []
        self._diagnostics.add_source(lambda: self._statuses)
        self.policy = MonitorPolicy(self.p, notify=self._log_level_change)
        self.alerts = self.policy.alerts
        self._gpu = self._make_gpu_sampler()
        self._system = SystemSampler(self.p['process_patterns'])
        self._own = psutil.Process()
        self._own.cpu_percent(None)
        self._own_cpu = NAN
        self._gpu_samples: list[GpuSample] = []
        self._sys_sample: SystemSample | None = None
        self._gpm_samples: dict[int, GpmSample] = {}
        self._node_use: list[NodeGpuUse] = []
        # Pids the nodes state in their diagnostics (ros.diagnostics.Updater adds `node` and `pid`).
        self._stated_pids: dict[str, int] = {self.get_name(): os.getpid()}
        self._pid_sub = self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50,
                                                 callback_group=self._gpm_group)
        # Polled watches live on a helper node that no executor spins (see topic_watch).
        # use_global_arguments=False: under launch `-r __node:=perf_monitor` renames every node of the
        # process, so the helper showed up as a second /perf_monitor in `ros2 node list`.
        self._watch_node = Node(f'{self.get_name()}_watch', namespace=self.get_namespace(),
                                context=self.context, start_parameter_services=False, enable_rosout=False,
                                use_global_arguments=False)
        self.watches: dict[str, TopicWatch] = {}
        self.stages: dict[str, StageStats] = {}
        self._stage_subs: dict[str, Any] = {}
        self._polled_stages: set[str] = set()  # stage topics subscribed on the watch node, read by _drain
        self._logged_malformed: set[str] = set()
        self.last_metrics: tuple[list[str], list[float]] | None = None
        self._build_watches()
        self._timers: list = []
        self._make_timers()
        self._discover()
        self.get_logger().info(
            f'perf_monitor watching {len(self.watches)} topic(s) {list(self.watches)}, '
            f'GPU indices {self.p["gpu_indices"]}, publishing /performance_metrics every '
            f'{self.p["publish_period_s"]} s')

    # ---- parameters -------------------------------------------------------------------------------
    def _check_changes(self, changes: dict[str, Any]) -> list[str]:
        merged = {**self.p, **changes}
        return cross_check(merged)

    def _on_params(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self.p.update(changes)
            if changes.keys() & WATCH_PARAMS:
                self._build_watches()
            if 'window_s' in changes:
                for stats in [w.stats for w in self.watches.values()] + list(self.stages.values()):
                    stats.window_s = self.p['window_s']
                for watch in self.watches.values():
                    watch.greenwave.window_s = self.p['window_s']
            if 'rate_tolerance_percent' in changes:
                for topic, watch in self.watches.items():
                    watch.greenwave.set_expected_rate(self.expected_rate(topic),
                                                      self.p['rate_tolerance_percent'])
            if changes.keys() & {'gpu_indices', 'pcie_mode'}:
                self._gpm.close()
                self._gpu.close()
                self._gpu = self._make_gpu_sampler()
            if 'process_patterns' in changes:
                self._system.set_patterns(self.p['process_patterns'])
            if changes.keys() & TIMER_PARAMS:
                self._make_timers()
        self.get_logger().info(f'parameters changed: {changes}')

    def _make_gpu_sampler(self) -> GpuSampler:
        indices = self.p['gpu_indices']
        indices = None if list(indices) == [-1] else indices
        sampler = GpuSampler(indices, log=self.get_logger().warning, pcie=self.p['pcie_mode'])
        # GPM and per-process queries go through the same NVML gateway (one NVML owner per process).
        self._gpm = GpmSampler(sampler.gateway, indices)
        self._gpu_procs = GpuProcessSampler(sampler.gateway, indices)
        return sampler

    def expected_rate(self, topic: str) -> float:
        topics, rates = self.p['watched_topics'], self.p['expected_rates_hz']
        if len(rates) == 1:
            return float(rates[0])
        return float(rates[topics.index(topic)])

    def _build_watches(self) -> None:
        """(Re)create the watches for `watched_topics`; kept topics keep their statistics."""
        wanted = list(self.p['watched_topics'])
        mode, depth = self.p['watch_mode'], self.p['watch_depth']
        for topic in list(self.watches):
            watch = self.watches[topic]
            if topic not in wanted or watch.mode != mode or watch.depth != depth \
                    or watch.stats._arrival.capacity != self.p['ring_capacity']:
                watch.destroy()
                del self.watches[topic]
                self.policy.forget(topic)
        for topic in wanted:
            if topic not in self.watches:
                stats = StreamStats(self.p['ring_capacity'], self.p['window_s'])
                greenwave = GreenwaveStream(self.expected_rate(topic), self.p['rate_tolerance_percent'],
                                            window_s=self.p['window_s'], capacity=self.p['ring_capacity'])
                self.watches[topic] = TopicWatch(self, topic, stats, self._intake_group, depth=depth,
                                                 log=self.get_logger().warning, mode=mode,
                                                 sub_node=self._watch_node, greenwave=greenwave)
            self.watches[topic].stats.set_expected_rate(self.expected_rate(topic))
            self.watches[topic].greenwave.set_expected_rate(self.expected_rate(topic))
        # Keep the parameter order for the metrics layout.
        self.watches = {t: self.watches[t] for t in wanted}

    def _make_timers(self) -> None:
        for timer in self._timers:
            self.destroy_timer(timer)
        p = self.p
        self._timers = [
            self.create_timer(p['sample_period_s'], self._sample, callback_group=self._sample_group),
            self.create_timer(p['publish_period_s'], self._publish, callback_group=self._publish_group),
            self.create_timer(p['discovery_period_s'], self._discover, callback_group=self._publish_group),
            self.create_timer(p['poll_period_s'], self._drain, callback_group=self._intake_group),
        ]
        if p['gpm_period_s'] > 0:
            self._timers.append(self.create_timer(p['gpm_period_s'], self._sample_gpm,
                                                  callback_group=self._gpm_group))

    # ---- intake ----------------------------------------------------------------------------------
    def _drain(self) -> None:
        for watch in list(self.watches.values()):
            watch.drain()
        self._drain_stages()

    def _discover(self) -> None:
        """Subscribe to watched topics whose type is now known, and to new */stage_times topics."""
        names_and_types = dict(self.get_topic_names_and_types())
        with self._lock:
            for watch in self.watches.values():
                if watch.subscribed:
                    watch.refresh_qos()   # publishers came or changed QoS: the watch follows them
                elif watch.try_subscribe(names_and_types):
                    self.get_logger().info(f'watching {watch.topic} ({watch.type_name}, '
                                           f'{"header stamps" if watch.has_header else "no header"})')
            for topic, types in names_and_types.items():
                if topic.endswith(stage_times.SUFFIX) and topic not in self._stage_subs \
                        and STAGE_TYPE in types:
                    self._subscribe_stages(topic)

    def _subscribe_stages(self, topic: str) -> None:
        self.stages.setdefault(topic, StageStats(window_s=self.p['window_s']))
        if self.p['watch_mode'] == 'poll':
            # Taken by _drain with the watched topics, timed by the middleware's reception stamp: one
            # MultiThreadedExecutor dispatch per report was most of this node's CPU (stream_batcher's
            # 240 reports/s: 38 % of a core on the 2-core box, BENCHMARKS.md issue 16)
            self._stage_subs[topic] = polled_subscription(self._watch_node, Float64MultiArray, topic,
                                                          watch_qos(self, topic, POLLED_STAGE_DEPTH))
            self._polled_stages.add(topic)
        else:
            self._stage_subs[topic] = self.create_subscription(
                Float64MultiArray, topic, functools.partial(self._on_stage, topic),
                watch_qos(self, topic, 50), callback_group=self._intake_group)
        self.get_logger().info(f'aggregating stage times from {topic}')

    def _drain_stages(self) -> None:
        for topic in list(self._polled_stages):
            for msg, info in take_queued(self._stage_subs[topic], raw=False):
                self._on_stage(topic, msg, info.get('received_timestamp') or time.time_ns())

    def _on_stage(self, topic: str, msg: Float64MultiArray, now: int | None = None) -> None:
        now = time.time_ns() if now is None else now
        stats = self.stages[topic]
        try:
            report = stage_report_from_msg(msg)
        except ValueError as exc:
            stats.note_malformed()
            if topic not in self._logged_malformed:
                self._logged_malformed.add(topic)
                self.get_logger().warning(
                    f'malformed stage report on {topic} ({exc}); see '
                    'isaac_perf/core/telemetry/stage_times.py for the format. '
                    'Counting, not logging further ones.')
            return
        stats.record(now, report.stamp_ns, report.batch_size, report.stages_ms,
                     report.extras.get('engine_batch_size', NAN))

    # ---- sampling and alerts ------------------------------------------------------------------------
    def _log_level_change(self, level: Level, text: str) -> None:
        log = self.get_logger()
        # One call site per severity: rclpy refuses a call site whose severity changes between calls.
        if level == Level.ERROR:
            log.error(text)
        elif level in (Level.WARN, Level.STALE):
            log.warning(text)
        else:
            log.info(text)

    def _sample(self) -> None:
        now = time.time_ns()
        gpus = self._gpu.sample()
        system = self._system.sample(now)
        own = self._own.cpu_percent(None)
        with self._lock:
            self._gpu_samples, self._sys_sample, self._own_cpu = gpus, system, own
            self.policy.check_samples(gpus, system, now)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values if kv.key in ('node', 'pid')}
            if 'pid' in values and 'node' in values and values['pid'].isdigit():
                if len(self._stated_pids) < 1024 or values['node'] in self._stated_pids:
                    self._stated_pids[values['node']] = int(values['pid'])

    def _sample_gpm(self) -> None:
        """GPM and per-process GPU use, on their own timer and callback group (NVML's GPM metrics call
        takes ~3 ms a GPU: it must never sit in front of the topic drains)."""
        if not self._gpu.gateway.available():
            return
        now = time.monotonic_ns()
        gpm = {s.index: s for s in self._gpm.sample(now)}
        procs = self._gpu_procs.sample()
        use: list[NodeGpuUse] = []
        if procs:
            names = [n for n, _ in self.get_node_names_and_namespaces()]
            local = ((p.info['pid'], p.info['name'] or '', p.info['cmdline'] or [])
                     for p in psutil.process_iter(['pid', 'name', 'cmdline']))
            use = node_gpu_use(match_node_pids(names, self._stated_pids, local), procs)
        with self._lock:
            self._gpm_samples, self._node_use = gpm, use

    # ---- publishing -------------------------------------------------------------------------------
    def _publish(self) -> None:
        now = time.time_ns()
        with self._lock:
            labels, values, statuses = self._build(now)
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=name, size=1, stride=1) for name in labels]
        msg.data = [float(v) for v in values]
        self.last_metrics = (labels, values)
        self._metrics_pub.publish(msg)
        self._statuses = statuses
        self._diagnostics.force_update()

    def _build(self, now: int) -> tuple[list[str], list[float], list[Status]]:
        blocks: list[metrics.Block] = []
        statuses: list[Status] = []
        self._build_hardware(blocks, statuses)
        stale_count = self._build_topics(now, blocks, statuses)
        live_stages = self._build_stages(now, blocks, statuses)
        counts = self.alerts.counts()
        for use in self._node_use:
            blocks.append(metrics.Block('node', use.node, fields.node_metrics(use)))
        global_values = fields.global_metrics(self._sys_sample, self._gpu_samples, live_stages, {
            'topics_watched': len(self.watches), 'topics_stale': stale_count,
            'alerts_warn': counts[Level.WARN], 'alerts_error': counts[Level.ERROR],
            'monitor_cpu_percent': self._own_cpu}, self._gpm_samples.values(), self._node_use)
        labels, values = metrics.flatten(global_values, blocks)
        return labels, values, statuses

    def _build_hardware(self, blocks: list[metrics.Block], statuses: list[Status]) -> None:
        name = self.get_name()
        for g in self._gpu_samples:
            level, message = self.policy.gpu_status(g)
            gpm = self._gpm_samples.get(g.index)
            blocks.append(metrics.Block('gpu', str(g.index),
                                        fields.gpu_metrics(g, level, gpm, self._node_use)))
            statuses.append(Status(f'{name}: gpu{g.index}', level, message, fields.gpu_diagnostics(g, gpm),
                                   hardware_id=g.uuid or self.hostname))
        system = self._sys_sample
        if system is not None:
            level, message = self.policy.subject_status('host')
            statuses.append(Status(f'{name}: host {self.hostname}', level, message,
                                   fields.host_diagnostics(system), hardware_id=self.hostname))
            for pattern, values in fields.process_metrics(system).items():
                blocks.append(metrics.Block('proc', pattern, values))

    def _build_topics(self, now: int, blocks: list[metrics.Block], statuses: list[Status]) -> int:
        """Blocks and statuses of the watched topics; returns how many are STALE."""
        stale_count = 0
        for topic, watch in self.watches.items():
            snap = watch.stats.snapshot(now)
            gw = watch.greenwave.snapshot(now)
            publishers = watch.publisher_count()
            level, message = fields.stamp_level(*self.policy.topic_status(topic, snap, now, publishers), snap)
            stale_count += level == Level.STALE
            reliable = None if watch.qos is None else watch.qos_reliability == 'reliable'
            blocks.append(metrics.Block('topic', topic, fields.topic_metrics(snap, level, gw, reliable)))
            qos = f'{watch.qos_reliability}: {watch.qos.reason}' if watch.qos is not None else ''
            statuses.append(Status(topic, level, message, fields.topic_diagnostics(
                snap, self.p['rate_tolerance_percent'], watch.type_name, publishers, gw, qos)))
        return stale_count

    def _build_stages(self, now: int, blocks: list[metrics.Block], statuses: list[Status]) -> list:
        """Blocks and statuses of the stage-time sources; returns the snapshots of the live ones."""
        live = []
        for topic in sorted(self.stages):
            snap = self.stages[topic].snapshot(now)
            level, message = fields.stamp_level(*self.policy.stage_status(topic, snap, now), snap)
            if level != Level.STALE:
                live.append(snap)
            blocks.append(metrics.Block('stages', topic, fields.stage_metrics(snap, level),
                                        metrics.stage_extra_fields(list(snap.stages_ms))))
            statuses.append(Status(f'{self.get_name()}: stages {topic}', level, message,
                                   fields.stage_diagnostics(snap)))
        return live

    def destroy_node(self) -> None:
        # Also reached when __init__ failed part-way (the context destroys its nodes on shutdown).
        for watch in getattr(self, 'watches', {}).values():
            watch.destroy()
        self.watches = {}
        if getattr(self, '_watch_node', None) is not None:
            self._watch_node.destroy_node()
            self._watch_node = None
        if getattr(self, '_gpu', None) is not None:
            self._gpm.close()
            self._gpu.close()
            self._gpu = None
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # Two threads: sampling (NVML can block for tens of ms) runs beside intake and publishing.
    run_node(PerfMonitor, args, executor_factory=lambda: MultiThreadedExecutor(num_threads=2))


if __name__ == '__main__':
    main()
