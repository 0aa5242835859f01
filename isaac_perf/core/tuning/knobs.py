"""What the tuner can turn and what it must meet: requirements, the measured state and the knob tables.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from isaac_perf.core.tuning.search import Measurement, Value, gpu_ids_for, ladder, powers_of_two

NAN = float('nan')


# --------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Requirements:
    """What the application needs: p99 latency budget, minimum throughput, jitter tolerance."""
    max_latency_ms: float
    min_fps: float = 0.0
    jitter_tolerance_ms: float | None = None  # on the measured latency standard deviation; None = ignore

    def __post_init__(self) -> None:
        if not self.max_latency_ms > 0:
            raise ValueError(f'max_latency_ms={self.max_latency_ms} must be > 0 (the p99 budget in ms)')
        if self.min_fps < 0:
            raise ValueError(f'min_fps={self.min_fps} must be >= 0')


@dataclass(frozen=True)
class PipelineState:
    """One settled measurement window of the running pipeline and the settings it ran with."""
    config: Mapping[str, Value]
    fps: float
    latency_p99_ms: float
    latency_p50_ms: float = NAN
    jitter_ms: float = NAN
    gpu_util_pct: float = NAN
    cameras: int = 0  # 0 = unknown
    infer_ms: float = NAN  # GPU time of one batch, when the pipeline reports it
    mean_batch: float = NAN  # frames per batch actually sent
    dropped_per_s: float = 0.0
    messages_lost: int = 0
    offered_fps: float = NAN  # frames/s reaching the target (its receive rate), where known

    @property
    def keeping_up(self) -> bool:
        """Every offered frame delivered (within 3 %, none dropped): no throughput left to gain."""
        return (math.isfinite(self.offered_fps) and self.offered_fps > 0 and self.dropped_per_s == 0
                and self.fps >= 0.97 * self.offered_fps)

    @classmethod
    def from_measurement(cls, config: Mapping[str, Value], m: Measurement, **extra: Any) -> PipelineState:
        return cls(config=dict(config), fps=m.throughput_fps, latency_p99_ms=m.latency_p99_ms,
                   latency_p50_ms=m.latency_p50_ms, jitter_ms=m.jitter_ms, gpu_util_pct=m.gpu_util_pct,
                   dropped_per_s=m.dropped / m.duration_s if m.duration_s > 0 else 0.0, **extra)


class KnobKind(str, Enum):
    TRADE = 'trade'  # higher raises throughput and latency: batch size, queue delay, streams
    LATENCY = 'latency'  # lower cuts latency at no throughput cost: queue depth, reliability
    QUALITY = 'quality'  # lower cuts latency and raises throughput at a cost in accuracy


@dataclass(frozen=True)
class Knob:
    """A setting the optimizer may move, with its allowed values ordered from lowest latency up.

    `actuated=False` knobs appear in advice (and in an impossible-budget report) but the controller never
    sets them: nobody listens for them on the target node.
    """
    name: str
    values: tuple[Value, ...]
    kind: KnobKind
    actuated: bool = True

    def below(self, value: Value) -> Value | None:
        """The next allowed value under `value` (works for a current value that is off the list)."""
        if isinstance(value, str):
            i = self.values.index(value) if value in self.values else 0
            return self.values[i - 1] if i > 0 else None
        lower = [v for v in self.values if v < value]
        return lower[-1] if lower else None

    def above(self, value: Value) -> Value | None:
        if isinstance(value, str):
            i = self.values.index(value) if value in self.values else len(self.values) - 1
            return self.values[i + 1] if i + 1 < len(self.values) else None
        higher = [v for v in self.values if v > value]
        return higher[0] if higher else None


def batcher_knobs(*, batch: tuple[int, int] = (1, 64), delay_ms: tuple[float, float] = (0.0, 20.0),
                  streams: tuple[int, int] = (1, 4), depth: tuple[int, int] | None = (1, 1000),
                  reliability: bool = True, precision: Sequence[str] = (),
                  resolution_scale: Sequence[float] = (), gpus: tuple[int, int] | None = None) -> list[Knob]:
    """The stream_batcher's knobs within bounds (its parameter names), plus advice-only quality knobs.

    gpus: (fewest, most) GPUs to use, the most bounded by what the target machine has (see
    `tuning.gpu_axis`); the knob `num_gpus` is applied as the batcher's `gpu_ids` = [0 .. num_gpus - 1].

    precision: allowed precisions ordered fastest first, e.g. ('fp16', 'fp32'); resolution_scale: allowed
    input scales, smallest first, e.g. (0.5, 0.75, 1.0). They are advice only (not actuated) here.
    """
    knobs = [Knob('max_batch_size', powers_of_two(*batch), KnobKind.TRADE),
             Knob('max_queue_delay_ms', ladder(*delay_ms), KnobKind.TRADE),
             Knob('num_streams', tuple(range(streams[0], streams[1] + 1)), KnobKind.TRADE)]
    if gpus is not None:
        knobs.append(Knob('num_gpus', tuple(range(max(1, gpus[0]), gpus[1] + 1)), KnobKind.TRADE))
    if depth is not None:
        knobs.append(Knob('queue_depth', powers_of_two(*depth), KnobKind.LATENCY))
    if reliability:
        knobs.append(Knob('input_reliability', ('best_effort', 'reliable'), KnobKind.LATENCY))
    if precision:
        knobs.append(Knob('precision', tuple(precision), KnobKind.QUALITY, actuated=False))
    if resolution_scale:
        knobs.append(Knob('input_scale', tuple(float(s) for s in resolution_scale), KnobKind.QUALITY,
                          actuated=False))
    return knobs


# ---------------------------------------------------------------------------------- the qos_tuner's knobs

# Knobs the qos_tuner may move on its target (the stream_batcher's parameter names), in table order.
KNOBS = ('max_batch_size', 'max_queue_delay_ms', 'num_streams', 'queue_depth', 'input_reliability',
         'num_gpus')
# num_gpus is opt-in (list it in tune_params): a change reloads the engine on the new GPU set.
DEFAULT_KNOBS = KNOBS[:-1]
KNOB_TYPES = {'max_batch_size': int, 'max_queue_delay_ms': float, 'num_streams': int, 'queue_depth': int,
              'input_reliability': str, 'num_gpus': int}
# Knobs that are not a parameter of the target themselves: knob -> target parameter.
# num_gpus n is set as gpu_ids [0 .. n-1]; gpu_ids [-1] (all visible GPUs) reads as max_gpus.
TARGET_PARAM = {'num_gpus': 'gpu_ids'}


def knob_to_target(name: str, value: Any) -> tuple[str, Any]:
    """The target parameter (name, value) that carries knob `name` = `value`."""
    if name == 'num_gpus':
        return 'gpu_ids', gpu_ids_for(int(value))
    return name, KNOB_TYPES.get(name, type(value))(value)


def knob_from_target(name: str, value: Any, max_gpus: int) -> Any:
    """The knob value a target parameter value means (inverse of `knob_to_target`)."""
    if name == 'num_gpus':
        ids = [int(i) for i in value]
        return max_gpus if not ids or ids == [-1] else len(ids)
    return value


def knobs_from(values: Mapping[str, Any]) -> list[Knob]:
    """The knobs listed in `tune_params`, within the bounds of the qos_tuner parameters `values`."""
    v = values
    table = {
        'max_batch_size': Knob('max_batch_size', powers_of_two(v['batch_size_min'], v['batch_size_max']),
                               KnobKind.TRADE),
        'max_queue_delay_ms': Knob('max_queue_delay_ms',
                                   ladder(v['queue_delay_ms_min'], v['queue_delay_ms_max']), KnobKind.TRADE),
        'num_streams': Knob('num_streams', tuple(range(v['num_streams_min'], v['num_streams_max'] + 1)),
                            KnobKind.TRADE),
        'queue_depth': Knob('queue_depth', powers_of_two(v['queue_depth_min'], v['queue_depth_max']),
                            KnobKind.LATENCY),
        'input_reliability': Knob('input_reliability', ('best_effort', 'reliable'), KnobKind.LATENCY),
        'num_gpus': Knob('num_gpus', tuple(range(1, v['max_gpus'] + 1)), KnobKind.TRADE),
    }
    return [table[name] for name in KNOBS if name in values['tune_params']]
