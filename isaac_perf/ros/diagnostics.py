"""Build diagnostic_msgs statuses for the monitor, with greenwave_monitor-compatible keys.

Topic statuses are named after the topic (a name starting with '/', as greenwave_monitor does) and carry
its keys: `frame_rate_node` (arrival rate), `frame_rate_msg` (rate from header stamps, or the arrival rate
for header-less types), `current_delay_from_realtime_ms` ('N/A' without a header), `total_dropped_frames`,
`expected_frequency`, `tolerance`, `mean_abs_jitter_node`, `max_abs_jitter_node` (microseconds, as
greenwave_monitor reports them), plus this package's own keys (percentiles, bandwidth, counts); the
mapping from snapshots to those keys is `isaac_perf.core.telemetry.fields`.
GPU, host and stage-time statuses are named `<node name>: gpu<index>`, `<node name>: host <hostname>` and
`<node name>: stages <topic>`.

`Updater` is the one diagnostics component every node uses, in the manner of diagnostic_updater's
`Updater(node, period)`: tasks (plain functions over `isaac_perf.core.telemetry.health.Status`, testable
without ROS) are added by name and run on the updater's timer; each run publishes one DiagnosticArray.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.fields import fmt
from isaac_perf.core.telemetry.health import Status, Task, run_task

LEVEL_BYTES = {Level.OK: DiagnosticStatus.OK, Level.WARN: DiagnosticStatus.WARN,
               Level.ERROR: DiagnosticStatus.ERROR, Level.STALE: DiagnosticStatus.STALE}


def key_values(values: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=v if isinstance(v, str) else fmt(v)) for k, v in values.items()]


def make_status(name: str, level: Level, message: str, values: Mapping[str, object],
                hardware_id: str = '') -> DiagnosticStatus:
    return DiagnosticStatus(level=LEVEL_BYTES[level], name=name, message=message, hardware_id=hardware_id,
                            values=key_values(values))


def diagnostic_array(statuses: Iterable[DiagnosticStatus], stamp) -> DiagnosticArray:
    msg = DiagnosticArray(status=list(statuses))
    msg.header.stamp = stamp
    return msg


def to_message(status: Status, hardware_id: str = '') -> DiagnosticStatus:
    return make_status(status.name, status.level, status.message, status.values,
                       status.hardware_id or hardware_id)


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
