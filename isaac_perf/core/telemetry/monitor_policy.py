"""The monitor's alert policy: which rules apply to which subject, and the level and message each gets.

Pure logic over the perf_monitor parameters (a mapping with the names of its ParamSpec table) and an
`AlertBook`; time is passed in, and every level change is handed to `notify(level, text)` (the node logs
it), so a test drives it with exact numbers and no ROS.

Rules: a GPU is checked against the max_gpu_* thresholds, the host against max_cpu_percent. A watched
topic with an expected rate is WARN below (1 - rate_tolerance_percent) of it and ERROR below half of it;
one without is checked against min_fps_*. Topics and stage-time sources are checked against
max_latency_ms_* on their p50, and are STALE after stale_timeout_s without a message. A threshold of 0 is
off; hysteresis and minimum duration come from alert_hysteresis_fraction and alert_min_duration_s.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from isaac_perf.core.telemetry.alerts import AlertBook, AlertRule, Direction, Level, Transition
from isaac_perf.core.telemetry.gpu import GpuSample
from isaac_perf.core.telemetry.stats import StageSnapshot, StreamSnapshot
from isaac_perf.core.telemetry.system import SystemSample

Notify = Callable[[Level, str], None]


class MonitorPolicy:
    """Alert levels of the monitor's subjects ('gpu<i>', 'host', topic names, stage-time topics)."""

    def __init__(self, params: Mapping[str, Any], notify: Notify | None = None) -> None:
        self.p = params  # read on every call, so parameter changes apply at once
        self.alerts = AlertBook()
        self._notify = notify or (lambda level, text: None)
        self._stale: dict[str, bool] = {}

    def forget(self, subject: str) -> None:
        self.alerts.forget(subject)
        self._stale.pop(subject, None)

    # ---- rules ---------------------------------------------------------------------------------------
    def rule(self, name: str, direction: Direction, unit: str = '') -> AlertRule | None:
        """The rule of threshold pair `<name>_warn` / `<name>_error` (0 = off); None when both are off."""
        warn, error = self.p[f'{name}_warn'], self.p[f'{name}_error']
        warn_v = warn if warn > 0 else None
        error_v = error if error > 0 else None
        if warn_v is None and error_v is None:
            return None
        reference = warn_v if warn_v is not None else error_v
        return AlertRule(name, direction, warn_v, error_v,
                         hysteresis=self.p['alert_hysteresis_fraction'] * reference,
                         min_duration_s=self.p['alert_min_duration_s'], unit=unit)

    def rate_rule(self, expected_hz: float) -> AlertRule:
        """WARN below (1 - tolerance) x expected, ERROR below half of it."""
        warn = expected_hz * (1.0 - self.p['rate_tolerance_percent'] / 100.0)
        return AlertRule('rate_hz', Direction.BELOW, warn, min(warn, expected_hz * 0.5),
                         hysteresis=self.p['alert_hysteresis_fraction'] * expected_hz,
                         min_duration_s=self.p['alert_min_duration_s'], unit=' Hz')

    def _apply(self, rule: AlertRule | None, subject: str, value: float, now_ns: int) -> None:
        if rule is not None:
            self._report(self.alerts.update(rule, subject, value, now_ns))

    def _check(self, subject: str, name: str, direction: Direction, value: float, unit: str,
               now_ns: int) -> None:
        self._apply(self.rule(name, direction, unit), subject, value, now_ns)

    def _report(self, t: Transition | None) -> None:
        if t is not None:
            self._notify(t.new, f'{t.old.name} -> {t.new.name}: {t.message}')

    # ---- samples ---------------------------------------------------------------------------------------
    def check_samples(self, gpus: list[GpuSample], system: SystemSample, now_ns: int) -> None:
        for g in gpus:
            subject = f'gpu{g.index}'
            self._check(subject, 'max_gpu_util', Direction.ABOVE, g.util_percent, '%', now_ns)
            self._check(subject, 'max_gpu_memory_fraction', Direction.ABOVE, g.memory_used_fraction, '',
                        now_ns)
            self._check(subject, 'max_gpu_temperature_c', Direction.ABOVE, g.temperature_c, ' C', now_ns)
        self._check('host', 'max_cpu_percent', Direction.ABOVE, system.cpu_percent, '%', now_ns)

    # ---- levels ----------------------------------------------------------------------------------------
    def subject_status(self, subject: str) -> tuple[Level, str]:
        """The worst active alert of `subject` and every active alert described, or OK."""
        active = self.alerts.active(subject)
        if active:
            return active[0].level, '; '.join(s.describe() for s in active)
        return Level.OK, 'OK'

    def gpu_status(self, g: GpuSample) -> tuple[Level, str]:
        return self.subject_status(f'gpu{g.index}') if g.ok else (Level.STALE, 'no NVML data')

    def topic_status(self, topic: str, snap: StreamSnapshot, now_ns: int,
                     publishers: int) -> tuple[Level, str]:
        expected = snap.expected_rate_hz
        if expected > 0:
            self._apply(self.rate_rule(expected), topic, snap.rate_hz, now_ns)
        else:
            self._check(topic, 'min_fps', Direction.BELOW, snap.rate_hz, ' Hz', now_ns)
        self._check(topic, 'max_latency_ms', Direction.ABOVE, snap.latency_ms.p50, ' ms', now_ns)
        never = math.isinf(snap.age_s)
        stale = snap.age_s > self.p['stale_timeout_s']
        self._stale_transition(topic, stale, never, snap.age_s, publishers)
        if stale:
            seen = 'no message yet' if never else f'no message for {snap.age_s:.1f} s'
            return Level.STALE, f'STALE: {seen} ({publishers} publisher(s))'
        return self.subject_status(topic)

    def _stale_transition(self, topic: str, stale: bool, never: bool, age_s: float, publishers: int) -> None:
        if stale == self._stale.get(topic, False):
            return
        self._stale[topic] = stale
        if stale:
            seen = 'never received a message' if never else f'no message for {age_s:.1f} s'
            self._notify(Level.STALE, f'{topic} is STALE: {seen} ({publishers} publisher(s))')
        else:
            self._notify(Level.OK, f'{topic} recovered from STALE')

    def stage_status(self, topic: str, snap: StageSnapshot, now_ns: int) -> tuple[Level, str]:
        self._check(topic, 'min_fps', Direction.BELOW, snap.fps, ' Hz', now_ns)
        self._check(topic, 'max_latency_ms', Direction.ABOVE, snap.latency_ms.p50, ' ms', now_ns)
        if snap.age_s > self.p['stale_timeout_s']:
            return Level.STALE, f'STALE: no stage report for {snap.age_s:.1f} s'
        return self.subject_status(topic)
