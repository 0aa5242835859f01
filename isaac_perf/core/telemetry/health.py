"""A node's health as plain data: the status a diagnostics task fills, with no ROS.

In the manner of diagnostic_updater's DiagnosticStatusWrapper: a task receives a `Status`, states a
summary (`summary`, or `merge_summary` to escalate), and adds key/values. The ROS side
(`isaac_perf.ros.diagnostics.Updater`) turns each into a diagnostic_msgs/DiagnosticStatus on a timer, so
every node publishes /diagnostics the same way and every task is testable by calling it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from isaac_perf.core.telemetry.alerts import Level


@dataclass
class Status:
    """One DiagnosticStatus in the making: level, message and ordered key/values."""
    name: str = ''
    level: Level = Level.OK
    message: str = ''
    values: dict[str, object] = field(default_factory=dict)
    hardware_id: str = ''  # '' = the updater's own

    def summary(self, level: Level, message: str) -> None:
        """Set the level and message (replacing what was there)."""
        self.level, self.message = level, message

    def merge_summary(self, level: Level, message: str) -> None:
        """Raise the level to `level` if it is worse; messages of equal or worse levels are joined."""
        if level > self.level:
            self.level, self.message = level, message
        elif level == self.level and message and message not in self.message.split('; '):
            self.message = f'{self.message}; {message}' if self.message else message

    def add(self, key: str, value: object) -> None:
        self.values[key] = value

    def update(self, values: dict[str, object]) -> None:
        self.values.update(values)


# A diagnostics task fills the status it is given.
Task = Callable[[Status], None]


def run_task(name: str, task: Task) -> Status:
    """Run one task on a fresh status; a task that raises gives an ERROR status naming the exception,
    never an exception in the caller (a broken task must not silence the others)."""
    status = Status(name=name)
    try:
        task(status)
    except Exception as exc:  # noqa: BLE001 - reported as the status instead
        status.summary(Level.ERROR, f'diagnostics task failed: {type(exc).__name__}: {exc}')
    return status
