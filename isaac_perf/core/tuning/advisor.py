"""From requirements and a measured state to the changes that close the gap (one decision, no loop).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isaac_perf.core.tuning.knobs import NAN, Knob, PipelineState, Requirements
from isaac_perf.core.tuning.search import Value

FREE_CUT_FPS_LOSS = 0.10  # a queue-depth or reliability change that loses more throughput is reverted


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
