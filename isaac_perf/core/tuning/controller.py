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
from dataclasses import dataclass, field, replace
from typing import Any

from isaac_perf.core.tuning.advisor import FREE_CUT_FPS_LOSS, Advice, Change, _num, advise, gaps, overshoot
from isaac_perf.core.tuning.knobs import NAN, Knob, KnobKind, PipelineState, Requirements
from isaac_perf.core.tuning.search import Value

# --------------------------------------------------------------------------------------- the closed loop

@dataclass(frozen=True)
class Decision:
    """What the controller decided at one step. Only 'change' and 'revert' carry a change to apply."""
    action: str  # settling | cooldown | hold | confirming | change | plan | revert | accept | converged |
    #              impossible | rate_limited | load_change
    reason: str
    change: Change | None = None
    time_s: float = 0.0
    p99_ms: float = NAN
    fps: float = NAN
    config: Mapping[str, Value] = field(default_factory=dict)

    @property
    def notable(self) -> bool:
        """Worth a log line and a message on ~/decisions (the rest is routine waiting)."""
        return self.action in ('change', 'plan', 'revert', 'accept', 'converged', 'impossible', 'external',
                               'load_change')

    def as_dict(self) -> dict[str, Any]:
        return {'action': self.action, 'reason': self.reason, 'time_s': round(self.time_s, 3),
                'p99_ms': _num(self.p99_ms), 'fps': _num(self.fps), 'config': dict(self.config),
                'change': self.change.as_dict() if self.change else None}


@dataclass
class _Probe:
    change: Change
    base: PipelineState
    purpose: str  # fix | explore | latency | revert | plan
    windows: list[PipelineState] = field(default_factory=list)  # measured since the change, for the verdict


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
                 min_gain: float = 0.03, confirm_windows: int = 2, history: int = 512,
                 max_changes_per_min: int = 0, give_up_after: int = 0,
                 sticky: Sequence[str] = ('input_reliability',)):
        if objective not in ('throughput', 'latency'):
            raise ValueError(f"objective {objective!r} is not one of throughput, latency")
        if not 0 <= margin <= headroom < 1:
            raise ValueError(f'need 0 <= margin ({margin}) <= headroom ({headroom}) < 1')
        if settle_s < 0 or cooldown_s < 0:
            raise ValueError('settle_s and cooldown_s must be >= 0')
        if confirm_windows < 1:
            raise ValueError(f'confirm_windows={confirm_windows} must be >= 1')
        if give_up_after < 0:
            raise ValueError(f'give_up_after={give_up_after} must be >= 0 (0 = only when nothing is left)')
        if max_changes_per_min < 0:
            raise ValueError(f'max_changes_per_min={max_changes_per_min} must be >= 0 (0 = no bound)')
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
        # bounded changes per minute: the times of the last changes applied (reverts count, and are exempt)
        self.max_changes_per_min = max_changes_per_min
        self._change_times: deque[float] = deque(maxlen=max(1, max_changes_per_min))
        self._plan: Change | None = None  # a predicted setting to go to before searching
        self.best: BestWindow | None = None  # the best window within budget since the last load change
        self.impossible_report = ''
        # declare the budget impossible after this many fix attempts without one window within it (0 = only
        # once no change is left to try): on a pipeline whose floor is above the budget the advice list is
        # long, and each attempt costs a window
        self.give_up_after = give_up_after
        self._fixes = 0  # fix attempts since the lowest p99 last fell by 10 % (or a window met the budget)
        self._lowest_p99 = math.inf
        # knobs whose tried moves survive a load change (a reliability flip recreates every subscription and
        # does not depend on the camera count)
        self.sticky = frozenset(sticky)

    # -- helpers ------------------------------------------------------------------------------------
    def set_requirements(self, requirements: Requirements) -> None:
        """New requirements restart the search (what was bad for the old budget may be fine now)."""
        self.requirements = requirements
        self._tried.clear()
        self._bad.clear()
        self._over = 0
        self.status = 'searching'

    def plan(self, target: Mapping[str, Value], reason: str, expected: str = '',
             expected_p99_ms: float = NAN, expected_fps: float = NAN) -> bool:
        """Go to `target` (a model-predicted setting) at the next step, before any search move.

        Only knobs this controller tunes are moved; returns False when that changes nothing. The plan is
        judged like a fix: kept when its window is within budget or cuts the overshoot, else reverted.
        """
        wanted = {n: v for n, v in target.items() if n in self.names}
        if self.config is not None and all(self.config.get(n) == v for n, v in wanted.items()):
            self._plan = None
            return False
        # `old` is filled in when the plan is proposed, from the setting then measured
        self._plan = Change(new=wanted, old={}, reason=reason, expected=expected or 'the predicted setting',
                            direction='plan', expected_p99_ms=expected_p99_ms, expected_fps=expected_fps)
        return bool(wanted)

    def _propose_plan(self, now_s: float, state: PipelineState) -> Decision | None:
        planned, self._plan = self._plan, None
        if planned is None or self.config is None:
            return None
        here = self.config
        new = {n: v for n, v in planned.new.items() if here.get(n) != v}
        if not new or any((n, v) in self._refused for n, v in new.items()):
            return None
        change = Change(new=new, old={n: here.get(n) for n in new}, reason=planned.reason,
                        expected=planned.expected, direction='plan', expected_p99_ms=planned.expected_p99_ms,
                        expected_fps=planned.expected_fps)
        if self._key_of(change) in self._bad:
            return None
        self._pending = _Probe(change=change, base=state, purpose='plan')
        self._proposed_at = now_s
        return self._decide('plan', f'model-predicted setting: {change.reason}', now_s, state, change)

    def load_changed(self, now_s: float, reason: str) -> Decision:
        """The load changed (cameras, offered rate): what was measured no longer holds. Forget it, keep the
        setting, and search again from here (call `plan` next to re-plan from the model)."""
        sticky = {edge for edge in self._tried if self._sticky_edge(edge)}
        self._tried.clear()
        self._tried.update(sticky)
        self._bad.clear()
        self._memo.clear()
        self._over = 0
        self._fixes = 0
        self._lowest_p99 = math.inf
        self._probe = None
        self._pending = None
        self.best = None
        self.impossible_report = ''
        self.status = 'searching'
        self._changed_at = now_s
        return self._decide('load_change', reason, now_s, None)

    def _sticky_edge(self, edge: tuple[tuple[Value, ...], tuple[Value, ...]]) -> bool:
        moved = {n for n, a, b in zip(self.names, *edge, strict=True) if a != b}
        return bool(moved) and moved <= self.sticky

    def _track_best(self, now_s: float, state: PipelineState) -> None:
        """Keep the best window within budget (highest FPS; within 1 % of it, the lower p99)."""
        if not self._feasible(state) or not math.isfinite(state.fps):
            return
        b = self.best
        better = (b is None or state.fps > b.fps * 1.01
                  or (state.fps >= b.fps * 0.99 and state.latency_p99_ms < b.p99_ms))
        if better:
            self.best = BestWindow(config=dict(self.config or {}), fps=state.fps,
                                   p99_ms=state.latency_p99_ms, time_s=now_s)

    def _rate_limited(self, now_s: float) -> bool:
        if not self.max_changes_per_min:
            return False
        recent = [t for t in self._change_times if now_s - t < 60.0]
        return len(recent) >= self.max_changes_per_min

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
            return self._restart(now_s, state, cfg)
        if now_s - self._changed_at < self.settle_s:
            return self._decide('settling', f'waiting {self.settle_s:g} s after the last change', now_s,
                                state)
        here = _key(self.config, names)
        self._memo[here] = state
        if self._probe is None:
            # a setting under trial counts only once kept, on its pooled windows (in _judge): one lucky
            # window of a change that is then reverted was written back as "tuned" on the dev box
            self._track_best(now_s, state)
        if state.latency_p99_ms < self._lowest_p99 * 0.9:
            self._fixes = 0  # still making progress
        self._lowest_p99 = min(self._lowest_p99, state.latency_p99_ms)
        r = self.requirements
        if self._probe is not None:
            return self._judge(now_s, state)
        planned = self._propose_plan(now_s, state)
        if planned is not None:
            return planned

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
            self._fixes = 0
            if self.status == 'impossible':
                self.status = 'searching'  # the load changed: the requirements are met again
            roomy = state.latency_p99_ms < r.max_latency_ms * (1.0 - self.headroom)
            if self.objective == 'latency':
                purpose = 'latency'
            else:
                # hysteresis: look for more throughput only with headroom under the budget, and only while
                # some offered frames are not delivered (each such probe risks the budget for nothing)
                purpose = 'explore' if roomy and not state.keeping_up else 'tidy'
        since = now_s - max(self._changed_at, self._proposed_at)
        if since < self.cooldown_s:
            return self._decide('cooldown', f'{self.cooldown_s - since:.1f} s of cooldown left', now_s, state)
        return self._advance(now_s, state, purpose)

    def _restart(self, now_s: float, state: PipelineState, cfg: dict[str, Any]) -> Decision:
        """A new setting (the first, or one made outside the tuner): forget the probe, measure it anew."""
        changed_outside = self.config is not None
        self.config = cfg
        self._probe = None
        self._pending = None
        self._over = 0
        self._changed_at = now_s
        if changed_outside:
            return self._decide('external', 'the settings changed outside the tuner; measuring them anew',
                                now_s, state)
        planned = self._propose_plan(now_s, state)  # a plan needs no settled window of the start first
        if planned is not None:
            return planned
        return self._decide('settling', 'first measurement: waiting for a settled window', now_s, state)

    def _key_of(self, change: Change) -> tuple[Value, ...]:
        return _key(self._target(change), self.names)

    def _advance(self, now_s: float, state: PipelineState, purpose: str) -> Decision:
        """Propose the first change worth trying for `purpose`; otherwise report impossible or converged."""
        r = self.requirements
        if self._rate_limited(now_s):
            return self._decide('rate_limited', f'{self.max_changes_per_min} changes in the last minute: '
                                'waiting before the next', now_s, state)
        advice = advise(r, state, self.knobs, purpose)
        if purpose == 'fix' and self.give_up_after and self._fixes >= self.give_up_after:
            if self.status != 'impossible':
                return self._give_up(now_s, state, advice)
            return self._decide('hold', 'budget reported impossible; holding the best setting', now_s, state)
        for change in advice.changes:
            if self._worth_trying(change, state, purpose):
                self._fixes += purpose == 'fix'
                self._pending = _Probe(change=change, base=state, purpose=purpose)
                self._proposed_at = now_s
                gap = '; '.join(advice.gaps) if advice.gaps else f'within budget, {purpose}'
                return self._decide('change', f'{gap}: {change.reason}', now_s, state, change)
        if purpose == 'fix':
            if self.status != 'impossible':
                return self._give_up(now_s, state, advice)
            return self._decide('hold', 'budget reported impossible; holding the best setting', now_s, state)
        if self.status != 'converged':
            self.status = 'converged'
            if purpose == 'tidy' and state.keeping_up:
                why = (f'within budget and delivering the offered {state.offered_fps:.1f} FPS: no throughput '
                       'to gain')
            elif purpose == 'tidy':
                why = f'within budget with less than {self.headroom:.0%} headroom: not exploring further'
            else:
                why = f'no untried change can improve {self.objective} within the budget'
            return self._decide('converged', f'{why}: p99 {state.latency_p99_ms:.1f} ms, {state.fps:.1f} FPS',
                                now_s, state)
        return self._decide('hold', f'converged: p99 {state.latency_p99_ms:.1f} ms of '
                            f'{r.max_latency_ms:g} ms, {state.fps:.1f} FPS', now_s, state)

    def _lowest(self) -> tuple[tuple[Value, ...], PipelineState]:
        """The measured setting with the lowest p99 (there is one: a fix follows a measured window)."""
        return min(self._memo.items(), key=lambda kv: kv[1].latency_p99_ms
                   if math.isfinite(kv[1].latency_p99_ms) else math.inf)

    def _give_up(self, now_s: float, state: PipelineState, advice: Advice) -> Decision:
        """Report the budget impossible once, and go to (then hold) the lowest-p99 setting measured."""
        self.status = 'impossible'
        reason = self._impossible_reason(state, advice)
        self.plan(dict(zip(self.names, self._lowest()[0], strict=True)),
                  'the lowest p99 measured (budget impossible)')
        return self._decide('impossible', reason, now_s, state)

    def _judge(self, now_s: float, state: PipelineState) -> Decision:
        probe = self._probe
        assert probe is not None
        base = probe.base
        if probe.purpose == 'revert':
            self._probe = None
            return self._decide('hold', 'reverted; back at the measured setting', now_s, state)
        probe.windows.append(state)
        pooled = _pooled(probe.windows)
        ok, verdict = self._verdict(probe, pooled)
        # delivery collapsed (under half the frames, or none: a setting that cannot keep up) needs no second
        # opinion; a worse p99 alone might be one window's spike
        collapsed = state.fps < 0.5 * base.fps if base.fps > 0 else False
        if not ok and not collapsed and len(probe.windows) < self.confirm_windows:
            # one window's p99 is a handful of frames: a change is reverted only when `confirm_windows`
            # windows together say so (a spike right after a good change reverted the plan on the dev box)
            return self._decide('confirming', f'{probe.change.describe()}: p99 {state.latency_p99_ms:.1f} ms '
                                f'after the change looks no better ({len(probe.windows)} of '
                                f'{self.confirm_windows} windows)', now_s, state)
        state = pooled
        self._memo[_key(self.config or {}, self.names)] = pooled  # what later moves compare against
        summary = (f'{probe.change.describe()}: p99 {base.latency_p99_ms:.1f} -> '
                   f'{state.latency_p99_ms:.1f} ms, {base.fps:.1f} -> {state.fps:.1f} FPS'
                   + (f', {verdict}' if verdict else '')
                   + (f' ({len(probe.windows)} windows)' if len(probe.windows) > 1 else ''))
        if ok:
            self._probe = None
            self._track_best(now_s, state)
            if not (probe.purpose == 'plan' and self.status == 'impossible'):
                self.status = 'searching'  # going to the lowest p99 after giving up keeps the verdict
            self._over = 0
            return self._decide('accept', f'kept {summary}', now_s, state)
        if not self._feasible(state):
            self._bad.add(_key(self.config or {}, self.names))
        revert = probe.change.reversed(f'reverting {summary}: not better')
        self._pending = _Probe(change=revert, base=base, purpose='revert')
        return self._decide('revert', revert.reason, now_s, state, revert)

    def _verdict(self, probe: _Probe, state: PipelineState) -> tuple[bool, str]:
        """Is the setting after `probe` worth keeping, judged on `state` (its windows pooled)?"""
        base = probe.base
        r = self.requirements
        if probe.purpose in ('fix', 'plan'):
            before, after = overshoot(r, base), overshoot(r, state)
            ok = after < before * (1.0 - self.min_gain) or after == 0
            if probe.purpose == 'plan':
                # the model predicted it: kept unless it measures worse than where it came from (which may be
                # arbitrary, e.g. a 100-frame queue), by p99 (the overshoot magnifies noise near the budget),
                # and in any case it must not cost throughput
                kept_fps = not state.fps < base.fps * (1.0 - self.min_gain)
                ok = kept_fps and (after == 0 or
                                   state.latency_p99_ms <= base.latency_p99_ms * (1.0 + self.min_gain))
            verdict = f'overshoot {before:.3f} -> {after:.3f}'
            if ok and self._free(probe.change) and state.fps < base.fps * (1.0 - FREE_CUT_FPS_LOSS):
                # queue depth and reliability should cost no throughput; a large loss means frames are
                # being lost (e.g. best effort with frames over Fast DDS's 512 KiB shared-memory segment)
                ok = False
                verdict += f', but throughput fell more than {FREE_CUT_FPS_LOSS:.0%}'
            return ok, verdict
        return self._improves(state, base, probe.change), ''

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
        self._change_times.append(now_s)
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
        lowest = self._lowest()
        lowest_cfg = dict(zip(self.names, lowest[0], strict=True))
        text = (f'budget cannot be met: best achievable p99 {lowest[1].latency_p99_ms:.1f} ms '
                f'(budget {r.max_latency_ms:g} ms) at {lowest_cfg}, {lowest[1].fps:.1f} FPS. ')
        text += (f'cannot meet the requirements ({"; ".join(gaps(r, state))}) with the knobs allowed: '
                f'best reached p99 {best[1].latency_p99_ms:.1f} ms at {best[1].fps:.1f} FPS with {best_cfg} '
                f'after {self.changes_applied} changes. ')
        text += ('Would need: ' + '; '.join(needs)) if needs else (
            'Would need a faster model (lower precision, smaller input), a faster GPU, or a looser budget.')
        self.impossible_report = text
        return text


@dataclass(frozen=True)
class BestWindow:
    """The best measured window within the budget: what to write back as the tuned setting."""
    config: Mapping[str, Value]
    fps: float
    p99_ms: float
    time_s: float

    def as_dict(self) -> dict[str, Any]:
        return {'config': dict(self.config), 'fps': _num(self.fps), 'p99_ms': _num(self.p99_ms),
                'time_s': round(self.time_s, 3)}


def _pooled(windows: Sequence[PipelineState]) -> PipelineState:
    """Windows of one setting as one: their mean FPS and mean p99 (the last window's other fields)."""
    if len(windows) == 1:
        return windows[0]
    last = windows[-1]
    fps = [w.fps for w in windows if math.isfinite(w.fps)]
    p99 = [w.latency_p99_ms for w in windows if math.isfinite(w.latency_p99_ms)]
    return replace(last, fps=sum(fps) / len(fps) if fps else NAN,
                   latency_p99_ms=sum(p99) / len(p99) if p99 else NAN)


def _unknown(key: tuple[Value, ...]) -> PipelineState:
    return PipelineState(config={}, fps=NAN, latency_p99_ms=NAN)
