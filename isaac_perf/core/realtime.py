"""Real-time optimizer: from requirements and a measured state to the changes that close the gap.

Two layers, both pure (time and measurements are passed in):

- `advise(requirements, state, knobs, purpose)`: what to change and why. Each `Change` says which knobs move
  (batch size, queue delay, number of streams, queue depth, input reliability, and, where someone can set
  them, precision and input resolution), the reason, and the expected effect with numbers where the physics
  gives them (a queue of depth d over c cameras at X FPS holds d*c/X of latency; a queue delay of d ms adds
  at most d ms). The seed's RealTimeOptimizer only named these; here they are computed from the state.

- `RealtimeController`: the closed loop the `qos_tuner` node runs. It applies one change at a time, waits
  `settle_s` for measurements that reflect it, keeps it only when it measurably helped and reverts it
  otherwise. It never oscillates, by construction:
    * a change is tried at most once from a given setting (the tried set);
    * a setting measured over budget is never explored again (the bad set);
    * while over budget it only keeps changes that shrink the total overshoot by `min_gain`, and while
      within budget only changes that raise the objective by `min_gain`; so no setting repeats between two
      violations, and each violation adds a setting to the bad set: a finite number of changes in all.
  Hysteresis in both value and time: it explores for more throughput only while p99 is below
  (1 - headroom) x budget, keeps a probe only with p99 below (1 - margin) x budget, and reacts to a
  violation only after `confirm_windows` windows in a row. `cooldown_s` spaces changes out.
  When nothing it may change reduces the overshoot, the budget is declared impossible once, with the best
  reached and what would be needed (precision, resolution, hardware), and the loop stops chasing it.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from isaac_perf.core.tuning import Measurement, Value, ladder, powers_of_two

NAN = float('nan')
FREE_CUT_FPS_LOSS = 0.10  # a queue-depth or reliability change that loses more throughput is reverted


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


# -------------------------------------------------------------------------------------------- advice

@dataclass(frozen=True)
class Change:
    """Knobs to move together, why, and what should happen."""
    new: Mapping[str, Value]
    old: Mapping[str, Value]
    reason: str
    expected: str
    direction: str  # 'down' (cuts latency), 'up' (raises throughput), 'swap' (one up, one down)
    expected_p99_ms: float = NAN
    expected_fps: float = NAN
    actuated: bool = True

    def reversed(self, reason: str) -> Change:
        return Change(new=dict(self.old), old=dict(self.new), reason=reason, expected='back to the measured '
                      'setting', direction='revert', actuated=self.actuated)

    def describe(self) -> str:
        return ', '.join(f'{k} {self.old.get(k)!r} -> {v!r}' for k, v in self.new.items())

    def as_dict(self) -> dict[str, Any]:
        return {'set': dict(self.new), 'from': dict(self.old), 'reason': self.reason,
                'expected': self.expected, 'direction': self.direction, 'actuated': self.actuated,
                'expected_p99_ms': _num(self.expected_p99_ms), 'expected_fps': _num(self.expected_fps)}


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), 3)


@dataclass
class Advice:
    gaps: list[str]
    changes: list[Change]

    @property
    def met(self) -> bool:
        return not self.gaps


def gaps(req: Requirements, state: PipelineState) -> list[str]:
    """Each requirement the state misses, with the size of the gap."""
    out = []
    if not state.latency_p99_ms <= req.max_latency_ms:
        out.append(f'p99 {state.latency_p99_ms:.1f} ms is {state.latency_p99_ms - req.max_latency_ms:.1f} ms '
                   f'over the {req.max_latency_ms:g} ms budget')
    if req.min_fps > 0 and not state.fps >= req.min_fps:
        out.append(f'{state.fps:.1f} FPS is {req.min_fps - state.fps:.1f} FPS under the {req.min_fps:g} FPS '
                   'minimum')
    if req.jitter_tolerance_ms is not None and state.jitter_ms > req.jitter_tolerance_ms:
        out.append(f'jitter {state.jitter_ms:.1f} ms exceeds the {req.jitter_tolerance_ms:g} ms tolerance')
    return out


def overshoot(req: Requirements, state: PipelineState) -> float:
    """Sum of relative misses (0 when every requirement is met); what a fix must shrink."""
    total = 0.0
    p99 = state.latency_p99_ms
    total += math.inf if math.isnan(p99) else max(0.0, p99 - req.max_latency_ms) / req.max_latency_ms
    if req.min_fps > 0:
        total += max(0.0, req.min_fps - state.fps) / req.min_fps
    if req.jitter_tolerance_ms is not None and state.jitter_ms > req.jitter_tolerance_ms:
        total += (state.jitter_ms - req.jitter_tolerance_ms) / max(req.jitter_tolerance_ms, 1e-9)
    return total


def advise(req: Requirements, state: PipelineState, knobs: Sequence[Knob], purpose: str = 'auto'
           ) -> Advice:
    """The changes worth trying from `state`, most promising first.

    purpose: 'fix' (a requirement is missed: latency cuts first, then throughput raises that drain a
    saturated pipeline's queues, then quality knobs), 'explore' (all met: raise throughput within the
    budget), 'latency' (all met: lower p99 further), or 'auto' (fix when a gap exists, else explore).
    """
    found = gaps(req, state)
    if purpose == 'auto':
        purpose = 'fix' if found else 'explore'
    by_name = {k.name: k for k in knobs}
    cfg = dict(state.config)
    latency_over = not state.latency_p99_ms <= req.max_latency_ms or (
        req.jitter_tolerance_ms is not None and state.jitter_ms > req.jitter_tolerance_ms)
    fps_under = req.min_fps > 0 and not state.fps >= req.min_fps
    out: list[Change] = []
    if purpose == 'fix':
        if latency_over or not fps_under:
            out += _latency_cuts(state, cfg, by_name)
        if fps_under or _saturated(state):
            out += _throughput_raises(state, cfg, by_name, why='fix')
        elif latency_over:
            # Not visibly saturated: a larger batch or more streams can still drain a queue faster;
            # the controller keeps them only if the measured p99 falls.
            out += _throughput_raises(state, cfg, by_name, why='drain')
        out += _swaps(state, cfg, by_name)
        out += _quality_cuts(state, cfg, by_name)
    elif purpose == 'tidy':
        out += _free_cuts(state, cfg, by_name)
    elif purpose == 'explore':
        out += _free_cuts(state, cfg, by_name)
        out += _throughput_raises(state, cfg, by_name, why='explore')
        out += _swaps(state, cfg, by_name)
    elif purpose == 'latency':
        out += _latency_cuts(state, cfg, by_name)
        out += _swaps(state, cfg, by_name)
    else:
        raise ValueError(f"purpose {purpose!r} is not one of auto, fix, explore, latency, tidy")
    return Advice(gaps=found, changes=out)


def _saturated(state: PipelineState) -> bool:
    """The input outpaces the pipeline: frames are dropped, or batches leave full."""
    if state.dropped_per_s > 0 or state.messages_lost > 0:
        return True
    b = state.config.get('max_batch_size')
    return bool(b) and state.mean_batch >= 0.95 * float(b)


def _depth_for(batch: Value, cameras: int, knob: Knob | None) -> Value | None:
    """The smallest allowed per-camera queue depth that can still fill a batch of `batch` frames."""
    if knob is None or cameras <= 0:
        return None
    need = math.ceil(int(batch) / cameras)
    fits = [v for v in knob.values if v >= need]
    return fits[0] if fits else knob.values[-1]


def _latency_cuts(state: PipelineState, cfg: dict[str, Value], knobs: Mapping[str, Knob]) -> list[Change]:
    out = []
    fps = state.fps if state.fps > 0 else NAN
    p99 = state.latency_p99_ms
    cams = state.cameras
    k = knobs.get('queue_depth')
    if k and k.actuated and 'queue_depth' in cfg:
        old = cfg['queue_depth']
        target = _depth_for(cfg.get('max_batch_size', 1), cams, k)
        new = target if target is not None and target < old else k.below(old)
        if new is not None:
            held = (int(old) - int(new)) * max(cams, 1) / fps * 1000.0
            out.append(Change(
                new={'queue_depth': new}, old={'queue_depth': old}, direction='down',
                reason=f'a queue of {old} frames per camera holds frames that are already late',
                expected=(f'queue wait falls by up to {held:.1f} ms ({int(old) - int(new)} frames x '
                          f'{max(cams, 1)} camera(s) at {fps:.0f} FPS); bursts beyond {new} frames are '
                          'dropped, oldest first' if math.isfinite(held)
                          else 'queue wait falls; bursts are dropped'),
                expected_p99_ms=p99 - held if math.isfinite(held) else NAN))
    k = knobs.get('input_reliability')
    if k and k.actuated and cfg.get('input_reliability') == 'reliable' and 'best_effort' in k.values:
        out.append(Change(
            new={'input_reliability': 'best_effort'}, old={'input_reliability': 'reliable'}, direction='down',
            reason='a reliable input makes the publisher hold and resend frames the pipeline is late for',
            expected=('no acknowledgement stalls and no history backlog: a lost frame is dropped, not '
                      'delivered late (kept only if measured better: large frames on Fast DDS can be slower '
                      'best effort)')))
    k = knobs.get('max_queue_delay_ms')
    if k and k.actuated and 'max_queue_delay_ms' in cfg:
        old = float(cfg['max_queue_delay_ms'])
        new = k.below(old)
        if new is not None:
            out.append(Change(
                new={'max_queue_delay_ms': new}, old={'max_queue_delay_ms': old}, direction='down',
                reason=f'frames may wait up to {old:g} ms for a batch to fill',
                expected=f'p99 falls by up to {old - float(new):g} ms; batches leave less full',
                expected_p99_ms=p99 - (old - float(new))))
    k = knobs.get('max_batch_size')
    if k and k.actuated and 'max_batch_size' in cfg:
        old = cfg['max_batch_size']
        new = k.below(old)
        if new is not None:
            ratio = float(new) / float(old)
            if math.isfinite(state.infer_ms):
                cut = state.infer_ms * (1.0 - ratio)
                text = (f'compute per batch about {state.infer_ms:.1f} -> {state.infer_ms * ratio:.1f} ms '
                        f'(p99 about -{cut:.1f} ms); throughput falls if the GPU was busy')
                est = p99 - cut
            else:
                text = f'compute per batch shrinks towards x{ratio:g}; throughput falls if the GPU was busy'
                est = NAN
            out.append(Change(new={'max_batch_size': new}, old={'max_batch_size': old}, direction='down',
                              reason=f'a batch of {old} frames takes longer to fill and to run',
                              expected=text, expected_p99_ms=est))
    k = knobs.get('num_streams')
    if k and k.actuated and 'num_streams' in cfg:
        old = cfg['num_streams']
        new = k.below(old)
        busy = not (state.gpu_util_pct < 80.0)  # NaN (unknown) counts as busy: worth a measured try
        if new is not None and busy:
            out.append(Change(
                new={'num_streams': new}, old={'num_streams': old}, direction='down',
                reason=f'{old} batches share the GPU at once, so each one finishes later',
                expected=f'per-batch latency towards x{float(new) / float(old):.2f} while the GPU is '
                         'saturated'))
    k = knobs.get('num_gpus')
    if k and k.actuated and 'num_gpus' in cfg:
        old = cfg['num_gpus']
        new = k.above(old)
        busy = not (state.gpu_util_pct < 80.0)
        if new is not None and busy:
            out.append(Change(
                new={'num_gpus': new}, old={'num_gpus': old}, direction='up',
                reason=f'{old} GPU(s) are busy, so batches queue for them',
                expected=(f'each GPU gets about x{float(old) / float(new):.2f} of the batches, so the wait '
                          'for a free GPU shrinks; the engine loads on the new GPU first (a pause of '
                          'seconds while frames queue)')))
    return out


def _free_cuts(state: PipelineState, cfg: dict[str, Value], knobs: Mapping[str, Knob]) -> list[Change]:
    """Latency that costs nothing to remove: queues deeper than a batch needs."""
    k = knobs.get('queue_depth')
    if not (k and k.actuated and 'queue_depth' in cfg):
        return []
    need = _depth_for(cfg.get('max_batch_size', 1), state.cameras, k)
    if need is None or need >= cfg['queue_depth']:
        return []
    return [c for c in _latency_cuts(state, cfg, {'queue_depth': k}) if c.new['queue_depth'] == need]


def _throughput_raises(state: PipelineState, cfg: dict[str, Value], knobs: Mapping[str, Knob], why: str
                       ) -> list[Change]:
    out = []
    util = state.gpu_util_pct
    util_text = f'GPU {util:.0f}% busy' if math.isfinite(util) else 'GPU load unknown'
    purpose = {'fix': 'to reach the minimum FPS', 'explore': 'while the latency budget has room',
               'drain': 'so the queues drain faster than the cameras fill them'}[why]
    k = knobs.get('max_batch_size')
    if k and k.actuated and 'max_batch_size' in cfg:
        old = cfg['max_batch_size']
        new = k.above(old)
        if new is not None:
            values: dict[str, Value] = {'max_batch_size': new}
            olds: dict[str, Value] = {'max_batch_size': old}
            depth_knob = knobs.get('queue_depth')
            need = _depth_for(new, state.cameras, depth_knob)
            if need is not None and 'queue_depth' in cfg and need > cfg['queue_depth']:
                values['queue_depth'] = need  # a batch cannot hold more than the queues let wait
                olds['queue_depth'] = cfg['queue_depth']
            out.append(Change(new=values, old=olds, direction='up',
                              reason=f'larger batches amortise per-batch overhead ({util_text}) {purpose}',
                              expected=(f'throughput up to x{float(new) / float(old):g} where per-batch '
                                        'overhead dominates; p99 rises with the batch compute time'),
                              expected_fps=state.fps * float(new) / float(old) if state.fps > 0 else NAN))
    k = knobs.get('num_streams')
    if k and k.actuated and 'num_streams' in cfg:
        old = cfg['num_streams']
        new = k.above(old)
        if new is not None:
            out.append(Change(new={'num_streams': new}, old={'num_streams': old}, direction='up',
                              reason=f'another stream overlaps copies and launches with compute '
                                     f'({util_text}) {purpose}',
                              expected=f'throughput up to x{float(new) / float(old):.2f} while the GPU has '
                                       'idle gaps; each batch shares the GPU, so p99 rises'))
    k = knobs.get('num_gpus')
    if k and k.actuated and 'num_gpus' in cfg:
        old = cfg['num_gpus']
        new = k.above(old)
        if new is not None:
            ratio = float(new) / float(old)
            out.append(Change(new={'num_gpus': new}, old={'num_gpus': old}, direction='up',
                              reason=f'batches spread over {new} GPUs instead of {old} ({util_text}) '
                                     f'{purpose}',
                              expected=(f'throughput up to x{ratio:g} where the GPUs, not the host, limit '
                                        'it; p99 does not rise (each GPU runs fewer batches); the engine '
                                        'loads on the new GPU first, a pause of seconds while frames queue'),
                              expected_fps=state.fps * ratio if state.fps > 0 else NAN))
    k = knobs.get('max_queue_delay_ms')
    underfilled = not (state.mean_batch >= 0.95 * float(cfg.get('max_batch_size', 1) or 1))
    if k and k.actuated and 'max_queue_delay_ms' in cfg and underfilled and why != 'drain':
        old = float(cfg['max_queue_delay_ms'])
        new = k.above(old)
        if new is not None:
            out.append(Change(new={'max_queue_delay_ms': new}, old={'max_queue_delay_ms': old},
                              direction='up',
                              reason=f'batches leave part-full; waiting up to {new:g} ms fills them '
                                     f'{purpose}',
                              expected=f'fuller batches, p99 up by at most {float(new) - old:g} ms',
                              expected_p99_ms=state.latency_p99_ms + float(new) - old))
    return out


def _swaps(state: PipelineState, cfg: dict[str, Value], knobs: Mapping[str, Knob]) -> list[Change]:
    """Trade batch size for streams and back: the diagonal moves a coordinate search cannot make."""
    b, s = knobs.get('max_batch_size'), knobs.get('num_streams')
    if not (b and s and b.actuated and s.actuated and 'max_batch_size' in cfg and 'num_streams' in cfg):
        return []
    out = []
    pairs = ((s.above(cfg['num_streams']), b.below(cfg['max_batch_size']), 'more streams of smaller batches'),
             (s.below(cfg['num_streams']), b.above(cfg['max_batch_size']), 'fewer streams of larger batches'))
    for new_s, new_b, what in pairs:
        if new_s is None or new_b is None:
            continue
        values: dict[str, Value] = {'num_streams': new_s, 'max_batch_size': new_b}
        olds: dict[str, Value] = {'num_streams': cfg['num_streams'], 'max_batch_size': cfg['max_batch_size']}
        need = _depth_for(new_b, state.cameras, knobs.get('queue_depth'))
        if need is not None and 'queue_depth' in cfg and need > cfg['queue_depth']:
            values['queue_depth'] = need
            olds['queue_depth'] = cfg['queue_depth']
        out.append(Change(new=values, old=olds, direction='swap',
                          reason=f'{what}: about the same work in flight, a different overlap of overhead',
                          expected='throughput and p99 move in opposite directions on GPUs with idle gaps; '
                                   'kept only if measured better'))
    return out


def _quality_cuts(state: PipelineState, cfg: dict[str, Value], knobs: Mapping[str, Knob]) -> list[Change]:
    out = []
    k = knobs.get('precision')
    if k is not None:
        old = cfg.get('precision', k.values[-1])
        new = k.below(old)
        if new is not None:
            speedups = {('fp32', 'fp16'): 0.5, ('fp16', 'int8'): 0.6, ('fp32', 'int8'): 0.3}
            factor = speedups.get((old, new), 0.7)
            est = state.infer_ms * factor if math.isfinite(state.infer_ms) else NAN
            out.append(Change(new={'precision': new}, old={'precision': old}, direction='down',
                              actuated=k.actuated,
                              reason=f'{old} leaves tensor-core throughput unused',
                              expected=(f'compute about x{factor:g} (typical for {new} on tensor cores; '
                                        'measure it), at some accuracy cost'
                                        + (f': {state.infer_ms:.1f} -> {est:.1f} ms per batch'
                                           if math.isfinite(est) else '')),
                              expected_fps=state.fps / factor if state.fps > 0 else NAN))
    k = knobs.get('input_scale')
    if k is not None:
        old = float(cfg.get('input_scale', k.values[-1]))
        new = k.below(old)
        if new is not None:
            factor = (float(new) / old) ** 2
            out.append(Change(new={'input_scale': new}, old={'input_scale': old}, direction='down',
                              actuated=k.actuated,
                              reason='fewer input pixels mean less preprocessing and convolution work',
                              expected=f'pixel work about x{factor:.2f} ({old:g} -> {float(new):g} scale), '
                                       'small objects get harder to see',
                              expected_fps=state.fps / factor if state.fps > 0 else NAN))
    return out


# --------------------------------------------------------------------------------------- the closed loop

@dataclass(frozen=True)
class Decision:
    """What the controller decided at one step. Only 'change' and 'revert' carry a change to apply."""
    action: str  # settling | cooldown | hold | confirming | change | revert | accept | converged | impossible
    reason: str
    change: Change | None = None
    time_s: float = 0.0
    p99_ms: float = NAN
    fps: float = NAN
    config: Mapping[str, Value] = field(default_factory=dict)

    @property
    def notable(self) -> bool:
        """Worth a log line and a message on ~/decisions (the rest is routine waiting)."""
        return self.action in ('change', 'revert', 'accept', 'converged', 'impossible', 'external')

    def as_dict(self) -> dict[str, Any]:
        return {'action': self.action, 'reason': self.reason, 'time_s': round(self.time_s, 3),
                'p99_ms': _num(self.p99_ms), 'fps': _num(self.fps), 'config': dict(self.config),
                'change': self.change.as_dict() if self.change else None}


@dataclass
class _Probe:
    change: Change
    base: PipelineState
    purpose: str  # fix | explore | latency | revert


def _key(config: Mapping[str, Value], names: Iterable[str]) -> tuple[Value, ...]:
    return tuple(config.get(n) for n in names)


class RealtimeController:
    """Closed-loop tuner: call `step(now_s, state)` with each fresh measurement window.

    When the decision carries a change, apply it to the pipeline and call `applied(now_s, change)`; if the
    pipeline refused it call `rejected(change, reason)`. In advise-only use, call neither: the same advice
    comes back once per cooldown while it stays true.
    """

    def __init__(self, requirements: Requirements, knobs: Sequence[Knob], *, objective: str = 'throughput',
                 cooldown_s: float = 3.0, settle_s: float = 1.0, headroom: float = 0.15, margin: float = 0.05,
                 min_gain: float = 0.03, confirm_windows: int = 2, history: int = 512):
        if objective not in ('throughput', 'latency'):
            raise ValueError(f"objective {objective!r} is not one of throughput, latency")
        if not 0 <= margin <= headroom < 1:
            raise ValueError(f'need 0 <= margin ({margin}) <= headroom ({headroom}) < 1')
        if settle_s < 0 or cooldown_s < 0:
            raise ValueError('settle_s and cooldown_s must be >= 0')
        if confirm_windows < 1:
            raise ValueError(f'confirm_windows={confirm_windows} must be >= 1')
        self.requirements = requirements
        self.knobs = list(knobs)
        self.names = tuple(k.name for k in self.knobs if k.actuated)
        self.objective = objective
        self.cooldown_s = cooldown_s
        self.settle_s = settle_s
        self.headroom = headroom
        self.margin = margin
        self.min_gain = min_gain
        self.confirm_windows = confirm_windows
        self.config: dict[str, Value] | None = None
        self.status = 'searching'  # searching | converged | impossible
        self._changed_at = -math.inf
        self._proposed_at = -math.inf
        self._probe: _Probe | None = None
        self._pending: _Probe | None = None  # proposed, not yet applied
        self._over = 0
        self._tried: set[tuple[tuple[Value, ...], tuple[Value, ...]]] = set()
        self._bad: set[tuple[Value, ...]] = set()
        self._memo: dict[tuple[Value, ...], PipelineState] = {}
        self._refused: set[tuple[str, Value]] = set()  # knob values the pipeline would not take
        self.trajectory: deque[Decision] = deque(maxlen=history)
        self.changes_applied = 0

    # -- helpers ------------------------------------------------------------------------------------
    def set_requirements(self, requirements: Requirements) -> None:
        """New requirements restart the search (what was bad for the old budget may be fine now)."""
        self.requirements = requirements
        self._tried.clear()
        self._bad.clear()
        self._over = 0
        self.status = 'searching'

    def _decide(self, action: str, reason: str, now: float, state: PipelineState | None,
                change: Change | None = None) -> Decision:
        d = Decision(action=action, reason=reason, change=change, time_s=now,
                     p99_ms=state.latency_p99_ms if state else NAN, fps=state.fps if state else NAN,
                     config=dict(self.config or {}))
        self.trajectory.append(d)
        return d

    def _feasible(self, s: PipelineState, margin: float = 0.0) -> bool:
        r = self.requirements
        return (s.latency_p99_ms <= r.max_latency_ms * (1.0 - margin) and s.fps >= r.min_fps
                and (r.jitter_tolerance_ms is None or not s.jitter_ms > r.jitter_tolerance_ms))

    def _free(self, change: Change) -> bool:
        """Does `change` move only knobs that should not cost throughput (queue depth, reliability)?"""
        kinds = {k.name: k.kind for k in self.knobs}
        return all(kinds.get(name) is KnobKind.LATENCY for name in change.new)

    def _improves(self, new: PipelineState, base: PipelineState, change: Change) -> bool:
        """Is `new` (measured after `change`) worth keeping over `base`, within the budget?"""
        if not self._feasible(new, self.margin):
            return False
        if self.objective == 'latency' or change.direction == 'down':
            # a latency cut must pay in p99 and may not cost throughput
            return (new.latency_p99_ms < base.latency_p99_ms * (1.0 - self.min_gain)
                    and new.fps >= base.fps * (1.0 - self.min_gain))
        return new.fps > base.fps * (1.0 + self.min_gain)

    def _target(self, change: Change) -> dict[str, Value]:
        return {**(self.config or {}), **change.new}

    def _worth_trying(self, change: Change, state: PipelineState, purpose: str) -> bool:
        if not change.actuated or any(n not in self.names for n in change.new):
            return False
        if any((n, v) in self._refused for n, v in change.new.items()):
            return False
        here = _key(self.config or {}, self.names)
        there = _key(self._target(change), self.names)
        if there == here or (here, there) in self._tried:
            return False
        known = self._memo.get(there)
        if purpose == 'fix':
            if known is None:
                return True
            r = self.requirements
            return overshoot(r, known) < overshoot(r, state) * (1.0 - self.min_gain)
        if there in self._bad:
            return False
        return known is None or self._improves(known, state, change)

    # -- the loop -------------------------------------------------------------------------------------
    def step(self, now_s: float, state: PipelineState) -> Decision:
        names = self.names
        cfg = {n: state.config[n] for n in names if n in state.config}
        if self.config is None or _key(cfg, names) != _key(self.config, names):
            changed_outside = self.config is not None
            self.config = cfg
            self._probe = None
            self._pending = None
            self._over = 0
            self._changed_at = now_s
            if changed_outside:
                return self._decide('external', 'the settings changed outside the tuner; measuring them anew',
                                    now_s, state)
            return self._decide('settling', 'first measurement: waiting for a settled window', now_s, state)
        if now_s - self._changed_at < self.settle_s:
            return self._decide('settling', f'waiting {self.settle_s:g} s after the last change', now_s,
                                state)
        here = _key(self.config, names)
        self._memo[here] = state
        r = self.requirements
        if self._probe is not None:
            return self._judge(now_s, state)

        over = overshoot(r, state) > 0
        self._over = self._over + 1 if over else 0
        if over:
            self._bad.add(here)
            if self.status == 'impossible':
                return self._decide('hold', 'budget reported impossible; holding the best setting', now_s,
                                    state)
            if self._over < self.confirm_windows:
                return self._decide('confirming', f'{"; ".join(gaps(r, state))} '
                                    f'({self._over} of {self.confirm_windows} windows)', now_s, state)
            purpose = 'fix'
        else:
            if self.status == 'impossible':
                self.status = 'searching'  # the load changed: the requirements are met again
            roomy = state.latency_p99_ms < r.max_latency_ms * (1.0 - self.headroom)
            if self.objective == 'latency':
                purpose = 'latency'
            else:
                # hysteresis: look for more throughput only with headroom under the budget
                purpose = 'explore' if roomy else 'tidy'
        since = now_s - max(self._changed_at, self._proposed_at)
        if since < self.cooldown_s:
            return self._decide('cooldown', f'{self.cooldown_s - since:.1f} s of cooldown left', now_s, state)
        advice = advise(r, state, self.knobs, purpose)
        for change in advice.changes:
            if self._worth_trying(change, state, purpose):
                self._pending = _Probe(change=change, base=state, purpose=purpose)
                self._proposed_at = now_s
                gap = '; '.join(advice.gaps) if advice.gaps else f'within budget, {purpose}'
                return self._decide('change', f'{gap}: {change.reason}', now_s, state, change)
        if purpose == 'fix':
            if self.status != 'impossible':
                self.status = 'impossible'
                return self._decide('impossible', self._impossible_reason(state, advice), now_s, state)
            return self._decide('hold', 'budget reported impossible; holding the best setting', now_s, state)
        if self.status != 'converged':
            self.status = 'converged'
            if purpose == 'tidy':
                why = f'within budget with less than {self.headroom:.0%} headroom: not exploring further'
            else:
                why = f'no untried change can improve {self.objective} within the budget'
            return self._decide('converged', f'{why}: p99 {state.latency_p99_ms:.1f} ms, {state.fps:.1f} FPS',
                                now_s, state)
        return self._decide('hold', f'converged: p99 {state.latency_p99_ms:.1f} ms of '
                            f'{r.max_latency_ms:g} ms, {state.fps:.1f} FPS', now_s, state)

    def _judge(self, now_s: float, state: PipelineState) -> Decision:
        probe = self._probe
        assert probe is not None
        base = probe.base
        r = self.requirements
        if probe.purpose == 'revert':
            self._probe = None
            return self._decide('hold', 'reverted; back at the measured setting', now_s, state)
        if probe.purpose == 'fix':
            before, after = overshoot(r, base), overshoot(r, state)
            ok = after < before * (1.0 - self.min_gain) or after == 0
            verdict = f'overshoot {before:.3f} -> {after:.3f}'
            if ok and self._free(probe.change) and state.fps < base.fps * (1.0 - FREE_CUT_FPS_LOSS):
                # queue depth and reliability should cost no throughput; a large loss means frames are
                # being lost (e.g. best effort with frames over Fast DDS's 512 KiB shared-memory segment)
                ok = False
                verdict += f', but throughput fell more than {FREE_CUT_FPS_LOSS:.0%}'
        else:
            ok = self._improves(state, base, probe.change)
            verdict = ''
        summary = (f'{probe.change.describe()}: p99 {base.latency_p99_ms:.1f} -> '
                   f'{state.latency_p99_ms:.1f} ms, {base.fps:.1f} -> {state.fps:.1f} FPS'
                   + (f', {verdict}' if verdict else ''))
        if ok:
            self._probe = None
            self.status = 'searching'
            self._over = 0
            return self._decide('accept', f'kept {summary}', now_s, state)
        if not self._feasible(state):
            self._bad.add(_key(self.config or {}, self.names))
        revert = probe.change.reversed(f'reverting {summary}: not better')
        self._pending = _Probe(change=revert, base=base, purpose='revert')
        return self._decide('revert', revert.reason, now_s, state, revert)

    def applied(self, now_s: float, change: Change) -> None:
        """The pipeline now runs with `change` applied."""
        pending = self._pending
        here = _key(self.config or {}, self.names)
        self.config = {**(self.config or {}), **{k: v for k, v in change.new.items() if k in self.names}}
        there = _key(self.config, self.names)
        self._tried.add((here, there))
        self._changed_at = now_s
        self._over = 0
        self.changes_applied += 1
        if pending is not None and pending.change == change:
            self._probe = pending
        else:
            self._probe = _Probe(change=change, base=self._memo.get(here) or _unknown(here), purpose='fix')
        self._pending = None

    def rejected(self, change: Change, reason: str) -> None:
        """The pipeline refused `change` (out of range, wrong type...): never propose it again, nor (for a
        single-knob change) that knob value from any other setting."""
        here = _key(self.config or {}, self.names)
        there = _key(self._target(change), self.names)
        self._tried.add((here, there))
        self._bad.add(there)
        if len(change.new) == 1:
            # one knob, one value: the value itself is what was refused (a range or a rule of the node)
            self._refused.update(change.new.items())
        if self._pending is not None and self._pending.purpose == 'revert':
            self._probe = None  # cannot go back; carry on from where we are
        self._pending = None
        self._proposed_at = -math.inf

    def _impossible_reason(self, state: PipelineState, advice: Advice) -> str:
        r = self.requirements
        best = min(self._memo.items(), key=lambda kv: overshoot(r, kv[1]))
        best_cfg = dict(zip(self.names, best[0], strict=True))
        needs = [f'{c.describe()} ({c.expected})' for c in advice.changes if not c.actuated]
        text = (f'cannot meet the requirements ({"; ".join(gaps(r, state))}) with the knobs allowed: '
                f'best reached p99 {best[1].latency_p99_ms:.1f} ms at {best[1].fps:.1f} FPS with {best_cfg} '
                f'after {self.changes_applied} changes. ')
        text += ('Would need: ' + '; '.join(needs)) if needs else (
            'Would need a faster model (lower precision, smaller input), a faster GPU, or a looser budget.')
        return text


def _unknown(key: tuple[Value, ...]) -> PipelineState:
    return PipelineState(config={}, fps=NAN, latency_p99_ms=NAN)
