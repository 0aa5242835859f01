"""Real-time optimizer: advice with expected effects, and the closed loop on a simulated plant."""
import math
import random

import pytest

from isaac_perf.core.tuning.advisor import advise, gaps, overshoot
from isaac_perf.core.tuning.controller import RealtimeController
from isaac_perf.core.tuning.knobs import Knob, KnobKind, PipelineState, Requirements, batcher_knobs
from isaac_perf.core.tuning.plant import BatchedPipelineModel

BAD_START = {'max_batch_size': 1, 'max_queue_delay_ms': 0.0, 'num_streams': 1, 'queue_depth': 100,
             'input_reliability': 'reliable'}


def run_loop(controller, model, config, *, seconds=60.0, dt=0.25, noise=0.0, seed=1, apply=True):
    """Drive the controller against the model like the node does: one window every dt seconds."""
    rng = random.Random(seed)
    decisions = []
    config = dict(config)
    t = 0.0
    while t < seconds:
        m = model.evaluate(config)
        jiggle = 1.0 + noise * (2.0 * rng.random() - 1.0)
        state = PipelineState(config=dict(config), fps=m.throughput_fps / jiggle, cameras=8,
                              latency_p99_ms=m.latency_p99_ms * jiggle, gpu_util_pct=m.gpu_util_pct)
        d = controller.step(t, state)
        decisions.append(d)
        if d.change is not None and apply:
            config.update(d.change.new)
            controller.applied(t, d.change)
        t += dt
    return config, decisions


def applied_edges(decisions):
    edges = []
    config = None
    for d in decisions:
        if d.change is not None:
            before = tuple(sorted(d.config.items()))
            after = tuple(sorted({**d.config, **d.change.new}.items()))
            edges.append((before, after))
            config = after
    return edges, config


def test_requirements_are_checked():
    with pytest.raises(ValueError, match='max_latency_ms=0'):
        Requirements(max_latency_ms=0)
    with pytest.raises(ValueError, match='min_fps=-1'):
        Requirements(max_latency_ms=33, min_fps=-1)


def test_gaps_and_overshoot_exact():
    req = Requirements(max_latency_ms=33.0, min_fps=240.0, jitter_tolerance_ms=5.0)
    s = PipelineState(config={}, fps=200.0, latency_p99_ms=49.5, jitter_ms=7.5)
    assert gaps(req, s) == ['p99 49.5 ms is 16.5 ms over the 33 ms budget',
                            '200.0 FPS is 40.0 FPS under the 240 FPS minimum',
                            'jitter 7.5 ms exceeds the 5 ms tolerance']
    assert overshoot(req, s) == pytest.approx(0.5 + 40 / 240 + 0.5)
    assert overshoot(req, PipelineState(config={}, fps=300.0, latency_p99_ms=20.0, jitter_ms=1.0)) == 0.0


def test_advice_for_the_bad_start_names_every_change_with_its_effect():
    req = Requirements(max_latency_ms=33.0)
    m = BatchedPipelineModel().evaluate(BAD_START)
    state = PipelineState.from_measurement(BAD_START, m, cameras=8)
    advice = advise(req, state, batcher_knobs(precision=('fp16', 'fp32'), resolution_scale=(0.5, 1.0)))
    over = m.latency_p99_ms - 33
    assert advice.gaps == [f'p99 {m.latency_p99_ms:.1f} ms is {over:.1f} ms over the 33 ms budget']
    first = advice.changes[0]
    assert dict(first.new) == {'queue_depth': 1}  # straight to what one batch needs, not 100 -> 64
    # 99 frames x 8 cameras at 235.3 FPS = 3366 ms of queueing removed
    assert first.expected_p99_ms == pytest.approx(m.latency_p99_ms - 99 * 8 / (1000 / 4.25) * 1000)
    assert '3366.0 ms' in first.expected
    kinds = [(c.direction, tuple(c.new)) for c in advice.changes]
    assert kinds == [
        ('down', ('queue_depth',)), ('down', ('input_reliability',)),
        ('up', ('max_batch_size',)), ('up', ('num_streams',)),  # drain a saturated queue faster
        ('down', ('precision',)), ('down', ('input_scale',)),  # quality costs: last, advice only
    ]
    assert [c.actuated for c in advice.changes[-2:]] == [False, False]
    assert advice.changes[-1].expected.startswith('pixel work about x0.25')


def test_advice_explores_and_couples_queue_depth_to_batch():
    req = Requirements(max_latency_ms=33.0)
    cfg = {'max_batch_size': 8, 'max_queue_delay_ms': 0.0, 'num_streams': 1, 'queue_depth': 1,
           'input_reliability': 'best_effort'}
    state = PipelineState(config=cfg, fps=1333.0, latency_p99_ms=8.2, gpu_util_pct=33.0, cameras=8)
    advice = advise(req, state, batcher_knobs())
    assert advice.met
    up = advice.changes[0]
    assert dict(up.new) == {'max_batch_size': 16, 'queue_depth': 2}  # 16 frames need 2 per camera
    assert up.expected_fps == pytest.approx(2666.0)
    assert [c.direction for c in advice.changes] == ['up', 'up', 'up', 'swap']


def test_loop_converges_from_the_bad_start_without_oscillating():
    model = BatchedPipelineModel()
    ctl = RealtimeController(Requirements(max_latency_ms=33.0), batcher_knobs(), cooldown_s=0.5, settle_s=0.5)
    config, decisions = run_loop(ctl, model, BAD_START, seconds=120.0)
    assert config == {'max_batch_size': 32, 'max_queue_delay_ms': 0.0, 'num_streams': 2, 'queue_depth': 4,
                      'input_reliability': 'best_effort'}
    final = model.evaluate(config)
    assert final.throughput_fps == pytest.approx(4000.0) and final.latency_p99_ms == pytest.approx(20.2)
    assert ctl.status == 'converged' and ctl.changes_applied == 20
    first_ok = next(d for d in decisions if d.action == 'accept' and d.p99_ms <= 33.0)
    assert first_ok.time_s == 3.25  # depth, reliability, then batch 2 meets the budget
    converged_at = next(d.time_s for d in decisions if d.action == 'converged')
    assert converged_at == 16.25  # 15.0 + one confirming window (0.25 s) before each of the 5 reverts
    # never oscillates: every applied move is distinct, and nothing moves after convergence
    edges, _ = applied_edges(decisions)
    assert len(edges) == len(set(edges)) == 20
    assert all(d.change is None for d in decisions if d.time_s > converged_at)
    assert {d.action for d in decisions if d.time_s > converged_at} == {'hold'}


def test_loop_on_a_noisy_plant_settles_and_stays_settled():
    model = BatchedPipelineModel()
    ctl = RealtimeController(Requirements(max_latency_ms=33.0), batcher_knobs(), cooldown_s=1.0, settle_s=0.5)
    config, decisions = run_loop(ctl, model, BAD_START, seconds=300.0, noise=0.10, seed=7)
    changes = [d for d in decisions if d.change is not None]
    assert len(changes) <= 40
    assert changes[-1].time_s < 100.0  # then 200 s of windows with +-10 % noise and not one change
    edges, _ = applied_edges(decisions)
    assert len(edges) == len(set(edges))  # no move is ever repeated
    assert model.evaluate(config).latency_p99_ms <= 33.0 * 0.95
    assert model.evaluate(config).throughput_fps >= 0.9 * 4000.0


def test_hysteresis_holds_inside_the_band_and_confirms_spikes():
    req = Requirements(max_latency_ms=33.0)
    cfg = {'max_batch_size': 8, 'num_streams': 1}
    knobs = [Knob('max_batch_size', (1, 2, 4, 8, 16), KnobKind.TRADE),
             Knob('num_streams', (1, 2), KnobKind.TRADE)]
    ctl = RealtimeController(req, knobs, cooldown_s=0.0, settle_s=0.0, headroom=0.15, confirm_windows=2)
    actions = []
    for t, p99 in enumerate([30.0, 29.0, 31.5, 32.9, 30.0, 34.0, 30.0, 29.5, 31.0]):
        actions.append(ctl.step(float(t), PipelineState(config=cfg, fps=1000.0, latency_p99_ms=p99)).action)
    # 29-32.9 ms is within budget but above (1 - 0.15) x 33 = 28.05 ms: no exploring; one 34 ms spike is only
    # "confirming" and the next window clears it
    assert actions == ['settling', 'converged', 'hold', 'hold', 'hold', 'confirming', 'hold', 'hold', 'hold']
    assert ctl.changes_applied == 0


def test_impossible_budget_is_reported_once_and_not_chased():
    model = BatchedPipelineModel()
    ctl = RealtimeController(Requirements(max_latency_ms=5.0), batcher_knobs(precision=('fp16', 'fp32')),
                             cooldown_s=0.5, settle_s=0.5)
    config, decisions = run_loop(ctl, model, BAD_START, seconds=120.0)
    impossible = [d for d in decisions if d.action == 'impossible']
    assert len(impossible) == 1
    reason = impossible[0].reason
    assert reason.startswith('budget cannot be met: best achievable p99 8.2 ms (budget 5 ms) at ')
    assert ('cannot meet the requirements (p99 8.2 ms is 3.2 ms over the 5 ms budget) with '
            'the knobs allowed: best reached p99 8.2 ms at 1333.3 FPS') in reason
    assert ctl.impossible_report == reason
    assert "Would need: precision 'fp32' -> 'fp16'" in reason
    after = [d for d in decisions if d.time_s > impossible[0].time_s]
    assert after and all(d.change is None for d in after)
    assert ctl.status == 'impossible'
    assert model.evaluate(config).latency_p99_ms == pytest.approx(8.2)  # holds the lowest p99 it found


def test_impossible_clears_when_the_load_drops():
    knobs = [Knob('max_batch_size', (1,), KnobKind.TRADE)]
    ctl = RealtimeController(Requirements(max_latency_ms=10.0), knobs, cooldown_s=0.0, settle_s=0.0,
                             confirm_windows=1)
    cfg = {'max_batch_size': 1}
    assert ctl.step(0.0, PipelineState(config=cfg, fps=10.0, latency_p99_ms=20.0)).action == 'settling'
    assert ctl.step(1.0, PipelineState(config=cfg, fps=10.0, latency_p99_ms=20.0)).action == 'impossible'
    assert ctl.step(2.0, PipelineState(config=cfg, fps=10.0, latency_p99_ms=20.0)).action == 'hold'
    assert ctl.step(3.0, PipelineState(config=cfg, fps=10.0, latency_p99_ms=5.0)).action == 'converged'
    assert ctl.status == 'converged'


def test_min_fps_gap_raises_throughput_and_conflict_is_impossible():
    req = Requirements(max_latency_ms=1000.0, min_fps=3000.0)
    ctl = RealtimeController(req, batcher_knobs(batch=(1, 8)), cooldown_s=0.5, settle_s=0.5)
    start = {**BAD_START, 'queue_depth': 1, 'input_reliability': 'best_effort'}
    config, decisions = run_loop(ctl, BatchedPipelineModel(), start, seconds=60.0)
    assert BatchedPipelineModel().evaluate(config).throughput_fps >= 3000.0
    both = RealtimeController(Requirements(max_latency_ms=5.0, min_fps=3000.0), batcher_knobs(),
                              cooldown_s=0.5, settle_s=0.5)
    _, decisions = run_loop(both, BatchedPipelineModel(), BAD_START, seconds=120.0)
    assert [d.action for d in decisions].count('impossible') == 1


def test_rejected_and_advise_only_and_external_changes():
    req = Requirements(max_latency_ms=33.0)
    knobs = [Knob('max_batch_size', (1, 2, 4), KnobKind.TRADE)]
    ctl = RealtimeController(req, knobs, cooldown_s=2.0, settle_s=0.0)
    cfg = {'max_batch_size': 1}
    state = PipelineState(config=cfg, fps=100.0, latency_p99_ms=5.0)
    assert ctl.step(0.0, state).action == 'settling'
    first = ctl.step(1.0, state)
    assert first.action == 'cooldown'  # 2 s since the first window
    d = ctl.step(2.0, state)
    assert d.action == 'change' and dict(d.change.new) == {'max_batch_size': 2}
    # advise-only: not applied; the same advice again only after the cooldown
    assert ctl.step(3.0, state).action == 'cooldown'
    again = ctl.step(4.0, state)
    assert again.action == 'change' and again.change == d.change
    ctl.rejected(again.change, 'max_batch_size=2 is not allowed')
    assert ctl.step(5.0, state).action == 'converged'  # 2 refused, 4 is not a neighbour of 1
    external = ctl.step(6.0, PipelineState(config={'max_batch_size': 4}, fps=100.0, latency_p99_ms=5.0))
    assert external.action == 'external' and ctl.config == {'max_batch_size': 4}


def test_controller_rejects_bad_settings():
    req = Requirements(max_latency_ms=33.0)
    with pytest.raises(ValueError, match='margin'):
        RealtimeController(req, batcher_knobs(), headroom=0.05, margin=0.1)
    with pytest.raises(ValueError, match='objective'):
        RealtimeController(req, batcher_knobs(), objective='speed')
    assert math.isnan(PipelineState(config={}, fps=1.0, latency_p99_ms=1.0).infer_ms)


def test_a_free_cut_that_loses_frames_is_reverted():
    """Best effort with frames over Fast DDS's shared-memory segment: p99 falls as most frames are lost."""
    req = Requirements(max_latency_ms=33.0)
    knobs = batcher_knobs(batch=(1, 1), delay_ms=(0.0, 0.0), streams=(1, 1), depth=(1, 1))
    ctl = RealtimeController(req, knobs, cooldown_s=0.0, settle_s=0.0, confirm_windows=1)
    cfg = {'max_batch_size': 1, 'max_queue_delay_ms': 0.0, 'num_streams': 1, 'queue_depth': 1,
           'input_reliability': 'reliable'}

    def plant(c):
        lossy = c['input_reliability'] == 'best_effort'
        return PipelineState(config=dict(c), fps=12.0 if lossy else 240.0,
                             latency_p99_ms=2.0 if lossy else 40.0)

    actions = []
    for t in range(8):
        d = ctl.step(float(t), plant(cfg))
        actions.append(d.action)
        if d.change is not None:
            cfg.update(d.change.new)
            ctl.applied(float(t), d.change)
    assert actions[:4] == ['settling', 'change', 'revert', 'hold']
    revert = ctl.trajectory[2]
    assert revert.reason.endswith('but throughput fell more than 10%: not better')
    assert cfg['input_reliability'] == 'reliable' and 'impossible' in actions


def test_a_spike_right_after_a_change_does_not_revert_it_but_two_worse_windows_do():
    req = Requirements(max_latency_ms=33.0)
    knobs = [Knob('max_batch_size', (1, 2, 4, 8), KnobKind.TRADE)]

    def judged(p99_after):
        """Over budget at batch 1, the controller moves to batch 2; the windows after it read `p99_after`."""
        ctl = RealtimeController(req, knobs, cooldown_s=0.0, settle_s=0.0, confirm_windows=2)
        start = {'max_batch_size': 1}
        ctl.step(0.0, PipelineState(config=start, fps=200.0, latency_p99_ms=40.0))
        ctl.step(1.0, PipelineState(config=start, fps=200.0, latency_p99_ms=40.0))
        change = ctl.step(2.0, PipelineState(config=start, fps=200.0, latency_p99_ms=40.0)).change
        assert change is not None and change.new == {'max_batch_size': 2}
        ctl.applied(2.0, change)
        there = {'max_batch_size': 2}
        return [ctl.step(3.0 + i, PipelineState(config=there, fps=200.0, latency_p99_ms=p))
                for i, p in enumerate(p99_after)]

    # one 45 ms window (a spike), then 30 ms: pooled 37.5 ms cuts the 40 ms overshoot -> kept
    spike = judged([45.0, 30.0])
    assert [d.action for d in spike] == ['confirming', 'accept']
    assert '(2 windows)' in spike[1].reason
    # two windows worse than the start: reverted, on their pooled p99
    worse = judged([45.0, 44.0])
    assert [d.action for d in worse] == ['confirming', 'revert']
    assert 'p99 40.0 -> 44.5 ms' in worse[1].reason
    # a clear improvement is kept on its first window
    assert judged([20.0])[0].action == 'accept'


def test_a_plan_is_kept_unless_it_measures_worse_than_the_start():
    req = Requirements(max_latency_ms=33.0)
    start = dict(BAD_START)
    planned = {**start, 'max_batch_size': 8, 'queue_depth': 2}

    def after_plan(p99_start, p99_after):
        ctl = RealtimeController(req, batcher_knobs(), cooldown_s=0.0, settle_s=0.0, confirm_windows=2)
        ctl.step(0.0, PipelineState(config=start, fps=240.0, latency_p99_ms=p99_start))
        assert ctl.plan(planned, 'predicted')
        d = ctl.step(1.0, PipelineState(config=start, fps=240.0, latency_p99_ms=p99_start))
        assert d.action == 'plan'
        ctl.applied(1.0, d.change)
        return [ctl.step(2.0 + i, PipelineState(config=planned, fps=240.0, latency_p99_ms=p))
                for i, p in enumerate(p99_after)]

    # over budget before and after, by about as much (36.9 -> 36.5 ms): no better, but no worse -> kept
    assert [d.action for d in after_plan(36.9, [36.5])] == ['accept']
    # 36.9 -> 39.1 then 35.0 ms (pooled 37.05 ms): one bad window does not send it back to the 100-deep queue
    assert [d.action for d in after_plan(36.9, [39.1, 35.0])] == ['confirming', 'accept']
    # clearly worse twice: back to the start
    assert [d.action for d in after_plan(36.9, [60.0, 58.0])] == ['confirming', 'revert']


def test_a_change_that_stops_delivery_is_reverted_on_its_first_window():
    """Nothing (or under half the frames) delivered after a change is no spike: reverted without waiting
    for a second window (the tuner reports such a window only after 3 x max_window_s of silence)."""
    knobs = [Knob('max_batch_size', (1, 2, 4, 8), KnobKind.TRADE)]
    ctl = RealtimeController(Requirements(max_latency_ms=33.0), knobs, cooldown_s=0.0, settle_s=0.0,
                             confirm_windows=3)
    start = {'max_batch_size': 1}
    t = 0.0
    d = ctl.step(t, PipelineState(config=start, fps=240.0, latency_p99_ms=40.0))
    while d.action != 'change' and t < 10.0:  # settling, then 3 windows over budget confirm the gap
        t += 1.0
        d = ctl.step(t, PipelineState(config=start, fps=240.0, latency_p99_ms=40.0))
    assert d.action == 'change' and d.change.new == {'max_batch_size': 2}
    ctl.applied(t, d.change)
    silent = PipelineState(config={**start, **d.change.new}, fps=0.0, latency_p99_ms=1e6)
    assert ctl.step(t + 1.0, silent).action == 'revert'


def test_no_throughput_probes_while_every_offered_frame_is_delivered():
    """Within budget with room, the loop explores for throughput only while some offered frames are not
    delivered: at the offered rate each probe can only risk the budget (on the dev box batch, stream and
    delay probes at 240 of 240 FPS were all reverted, and their windows spiked p99)."""
    knobs = [Knob('max_batch_size', (4, 8, 16), KnobKind.TRADE), Knob('num_streams', (1, 2), KnobKind.TRADE)]
    cfg = {'max_batch_size': 8, 'num_streams': 1}

    def first_move(offered):
        ctl = RealtimeController(Requirements(max_latency_ms=33.0), knobs, cooldown_s=0.0, settle_s=0.0)
        actions = [ctl.step(float(t), PipelineState(config=cfg, fps=240.0, latency_p99_ms=20.0,
                                                     offered_fps=offered)) for t in range(3)]
        return actions[1]

    kept_up = first_move(offered=241.0)
    assert kept_up.action == 'converged' and 'delivering the offered 241.0 FPS' in kept_up.reason
    behind = first_move(offered=300.0)  # 60 FPS offered and not delivered: worth a probe
    assert behind.action == 'change' and behind.change is not None
    unknown = first_move(offered=math.nan)  # no offered rate (metrics windows): explores as before
    assert unknown.action == 'change'
