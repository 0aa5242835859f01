"""The qos_tuner's /diagnostics status as a plain task: what it tunes, how it goes, and its level.

Levels: WARN while the target's parameters are unknown (not reachable yet, or it declares none of the
knobs), while QoS-incompatible pairs were found on the watched topics, or when the last change timed out;
otherwise OK. No ROS here: the node hands a `TunerFacts` to `tuner_status` on its diagnostics timer.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import Status


@dataclass(frozen=True)
class TunerFacts:
    target: str
    knobs: tuple[str, ...]
    config: Mapping[str, Any] | None  # the target's knob values; None = not read yet
    advise_only: bool = False
    missing: tuple[str, ...] = ()  # knobs the target does not declare
    counts: Mapping[str, int] = field(default_factory=dict)
    incompatible_pairs: int = 0
    last_timed_out: bool = False
    status: str = 'searching'  # the controller's: searching | converged | impossible
    best: Mapping[str, Any] | None = None  # the best window within budget (BestWindow.as_dict())
    impossible: str = ''  # 'budget cannot be met: best achievable p99 ...' once declared
    curve: str = ''  # the target's latency per batch, as read from its /diagnostics


def tuner_status(status: Status, facts: TunerFacts) -> None:
    """Fill `status` (a diagnostics task body) from `facts`."""
    mode = 'advising on' if facts.advise_only else 'tuning'
    status.summary(Level.OK, f'{mode} {facts.target}: {", ".join(facts.knobs) or "no knobs"}')
    if facts.config is None:
        status.merge_summary(Level.WARN, f'waiting for {facts.target}: its parameters are not read yet')
    if facts.incompatible_pairs:
        status.merge_summary(Level.WARN, f'{facts.incompatible_pairs} QoS-incompatible pair(s) on the '
                                         'watched topics (see ~/decisions)')
    if facts.impossible:
        status.merge_summary(Level.WARN, facts.impossible.split('. ')[0])
    if facts.last_timed_out:
        status.merge_summary(Level.WARN, f'{facts.target} did not answer the last change in time')
    status.add('target_node', facts.target)
    status.add('advise_only', str(facts.advise_only).lower())
    status.add('knobs', ' '.join(facts.knobs) or 'none')
    status.add('missing_knobs', ' '.join(facts.missing) or 'none')
    status.add('config', ' '.join(f'{k}={v}' for k, v in (facts.config or {}).items()) or 'unknown')
    for name, count in facts.counts.items():
        status.add(name, int(count))
    status.add('qos_incompatible_pairs', facts.incompatible_pairs)
    status.add('tuner_status', facts.status)
    best = facts.best or {}
    status.add('best_fps', str(best.get('fps', 'none')))
    status.add('best_p99_ms', str(best.get('p99_ms', 'none')))
    status.add('best_config', ' '.join(f'{k}={v}' for k, v in best.get('config', {}).items()) or 'none')
    status.add('impossible', facts.impossible or 'no')
    status.add('batch_latency_ms', facts.curve or 'unknown')
