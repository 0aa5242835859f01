"""Build diagnostic_msgs statuses for the monitor, with greenwave_monitor-compatible keys.

Topic statuses are named after the topic (a name starting with '/', as greenwave_monitor does) and carry
its keys: `frame_rate_node` (arrival rate), `frame_rate_msg` (rate from header stamps, or the arrival rate
for header-less types), `current_delay_from_realtime_ms` ('N/A' without a header), `total_dropped_frames`,
`expected_frequency`, `tolerance`, `mean_abs_jitter_node`, `max_abs_jitter_node` (microseconds, as
greenwave_monitor reports them), plus this package's own keys (percentiles, bandwidth, counts).
GPU, host and stage-time statuses are named `<node name>: gpu<index>`, `<node name>: host <hostname>` and
`<node name>: stages <topic>`.

`Updater` is the one diagnostics component every node uses, in the manner of diagnostic_updater's
`Updater(node, period)`: tasks (plain functions over `isaac_perf.core.telemetry.health.Status`, testable
without ROS) are added by name and run on the updater's timer; each run publishes one DiagnosticArray.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.gpu import GpuSample
from isaac_perf.core.telemetry.health import Status, Task, run_task
from isaac_perf.core.telemetry.stats import StageSnapshot, StreamSnapshot
from isaac_perf.core.telemetry.system import SystemSample

LEVEL_BYTES = {Level.OK: DiagnosticStatus.OK, Level.WARN: DiagnosticStatus.WARN,
               Level.ERROR: DiagnosticStatus.ERROR, Level.STALE: DiagnosticStatus.STALE}


def fmt(value: float, digits: int = 3) -> str:
    """A number as diagnostics text: fixed decimals, 'N/A' for NaN/inf."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return 'N/A'
    if isinstance(value, int):
        return str(value)
    return f'{value:.{digits}f}'


def key_values(values: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=v if isinstance(v, str) else fmt(v)) for k, v in values.items()]


def make_status(name: str, level: Level, message: str, values: Mapping[str, object],
                hardware_id: str = '') -> DiagnosticStatus:
    return DiagnosticStatus(level=LEVEL_BYTES[level], name=name, message=message, hardware_id=hardware_id,
                            values=key_values(values))


def topic_values(snap: StreamSnapshot, tolerance_percent: float, type_name: str | None) -> dict[str, object]:
    """greenwave_monitor's keys first, then ours."""
    has_stamps = not math.isnan(snap.stamp_rate_hz)
    expected = snap.expected_rate_hz
    return {
        'frame_rate_node': snap.rate_hz,
        'frame_rate_msg': snap.stamp_rate_hz if has_stamps else snap.rate_hz,
        'current_delay_from_realtime_ms': snap.last_latency_ms,
        'total_dropped_frames': int(snap.drops),
        'expected_frequency': expected if expected > 0 else 'N/A',
        'tolerance': tolerance_percent if expected > 0 else 'N/A',
        'mean_abs_jitter_node': snap.interval_ms.std * 1000.0,
        'max_abs_jitter_node': snap.max_abs_jitter_ms * 1000.0,
        'message_type': type_name or 'unknown (not in the graph yet)',
        'message_count': int(snap.count),
        'bandwidth_mbps': snap.bandwidth_bps / 1e6,
        'mean_size_bytes': snap.mean_size_bytes,
        'latency_ms_p50': snap.latency_ms.p50,
        'latency_ms_p90': snap.latency_ms.p90,
        'latency_ms_p99': snap.latency_ms.p99,
        'latency_ms_max': snap.latency_ms.max,
        'jitter_ms': snap.jitter_ms,
        'seconds_since_last_message': snap.age_s,
    }


def gpu_values(sample: GpuSample) -> dict[str, object]:
    return {
        'name': sample.name or 'N/A',
        'uuid': sample.uuid or 'N/A',
        'utilization_percent': sample.util_percent,
        'memory_used_mib': sample.memory_used_mib,
        'memory_total_mib': sample.memory_total_mib,
        'memory_bandwidth_utilization_percent': sample.memory_bw_util_percent,
        'temperature_c': sample.temperature_c,
        'power_w': sample.power_w,
        'power_limit_w': sample.power_limit_w,
        'sm_clock_mhz': sample.sm_clock_mhz,
        'memory_clock_mhz': sample.mem_clock_mhz,
        'throttle_reasons': ', '.join(sample.throttle_reason_names) or
                            ('N/A' if math.isnan(sample.throttle_reasons) else 'none'),
        'pcie_rx_mbps': sample.pcie_rx_mbps,
        'pcie_tx_mbps': sample.pcie_tx_mbps,
        'nvlink_links': sample.nvlink_links,
        'nvlink_rx_mbps': sample.nvlink_rx_mbps,
        'nvlink_tx_mbps': sample.nvlink_tx_mbps,
        'processes': ' '.join(f'{pid}:{fmt(mib, 0)}MiB' for pid, mib in sorted(sample.processes_mib.items()))
                     or 'none',
    }


def host_values(sample: SystemSample) -> dict[str, object]:
    values: dict[str, object] = {
        'cpu_percent': sample.cpu_percent,
        'cpu_max_core_percent': sample.cpu_max_core_percent,
        'cpu_per_core_percent': ' '.join(fmt(v, 0) for v in sample.per_core_percent),
        'memory_percent': sample.memory_percent,
        'memory_used_mib': sample.memory_used_mib,
        'memory_total_mib': sample.memory_total_mib,
        'load_1m': sample.load_1m,
    }
    for pattern, group in sample.processes.items():
        values[f'process[{pattern}].count'] = group.count
        values[f'process[{pattern}].cpu_percent'] = group.cpu_percent
        values[f'process[{pattern}].rss_mib'] = group.rss_mib
    return values


def stage_values(snap: StageSnapshot) -> dict[str, object]:
    values: dict[str, object] = {
        'frame_rate_msg': snap.fps,
        'current_delay_from_realtime_ms': snap.latency_ms.p50,
        'reports': int(snap.reports),
        'frames': int(snap.frames),
        'malformed_reports': int(snap.malformed),
        'batch_size_mean': snap.batch_size.mean,
        'latency_ms_mean': snap.latency_ms.mean,
        'latency_ms_p50': snap.latency_ms.p50,
        'latency_ms_p99': snap.latency_ms.p99,
        'seconds_since_last_report': snap.age_s,
    }
    for name, summary in snap.stages_ms.items():
        values[f'{name}_ms_mean'] = summary.mean
        values[f'{name}_ms_p50'] = summary.p50
        values[f'{name}_ms_p99'] = summary.p99
    return values


def diagnostic_array(statuses: Iterable[DiagnosticStatus], stamp) -> DiagnosticArray:
    msg = DiagnosticArray(status=list(statuses))
    msg.header.stamp = stamp
    return msg


def to_message(status: Status, hardware_id: str = '') -> DiagnosticStatus:
    return make_status(status.name, status.level, status.message, status.values, hardware_id)


class Updater:
    """Publishes /diagnostics for the node it is given: each named task fills one status per period.

    `add(name, task)` names the status `<node name>: <name>` (a name starting with '/' is kept as it is,
    as greenwave_monitor names topic statuses). `add_source(fn)` adds a callable returning several
    ready statuses (the monitor's per-topic ones). `force_update()` publishes now. Publishing stops
    quietly once the context is shutting down, so a node's last timer tick never logs an error.
    """

    def __init__(self, node, period_s: float = 1.0, hardware_id: str = '', topic: str = '/diagnostics',
                 callback_group=None) -> None:
        self._node = node
        self.hardware_id = hardware_id
        self._tasks: list[tuple[str, Task]] = []
        self._sources: list[Callable[[], Iterable[Status]]] = []
        self._pub = node.create_publisher(DiagnosticArray, topic, 10)
        self._timer = node.create_timer(period_s, self.update, callback_group=callback_group) \
            if period_s > 0 else None

    def full_name(self, name: str) -> str:
        return name if name.startswith('/') else f'{self._node.get_name()}: {name}'

    def add(self, name: str, task: Task) -> None:
        self._tasks.append((self.full_name(name), task))

    def add_source(self, source: Callable[[], Iterable[Status]]) -> None:
        self._sources.append(source)

    def statuses(self) -> list[Status]:
        out = [run_task(name, task) for name, task in self._tasks]
        for source in self._sources:
            out.extend(source())
        return out

    def update(self) -> None:
        if not self._node.context.ok():
            return
        array = diagnostic_array((to_message(s, self.hardware_id) for s in self.statuses()),
                                 self._node.get_clock().now().to_msg())
        try:
            self._pub.publish(array)
        except Exception:  # noqa: BLE001 - the context went away between the check and the call
            if self._node.context.ok():
                raise

    force_update = update

    def destroy(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        self._node.destroy_publisher(self._pub)
