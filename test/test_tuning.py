"""Offline tuning: measurements, objectives, constraints, sweeps and searches on synthetic curves."""
import math

import pytest
import yaml

from isaac_perf.core.tuning.params_file import params_file_text, write_params_file
from isaac_perf.core.tuning.plant import BatchedPipelineModel
from isaac_perf.core.tuning.search import (
    Axis,
    Constraints,
    Measurement,
    Objective,
    SearchSpace,
    TrialRunner,
    exhaustive_search,
    hill_climb,
    ladder,
    powers_of_two,
    score,
    sweep,
)

# A batch-size curve with known shape: throughput climbs, flattens at 32, collapses at 128 (memory
# thrash); p99 grows with the batch.
FPS = {1: 100.0, 2: 190.0, 4: 350.0, 8: 600.0, 16: 800.0, 32: 820.0, 64: 810.0, 128: 400.0}
P99 = {1: 5.0, 2: 6.0, 4: 8.0, 8: 12.0, 16: 20.0, 32: 38.0, 64: 75.0, 128: 300.0}
BATCHES = Axis('max_batch_size', tuple(FPS))


class Table:
    """measure() over the table above, counting calls per setting."""

    def __init__(self):
        self.calls = []

    def __call__(self, config):
        self.calls.append(dict(config))
        b = config['max_batch_size']
        return Measurement(throughput_fps=FPS[b], latency_p99_ms=P99[b], gpu_util_pct=min(100.0, b * 10.0),
                           gpu_power_w=100.0 + b, gpu_memory_mb=500.0 + 100.0 * b)


def grid():
    return SearchSpace([Axis('max_batch_size', powers_of_two(1, 64)),
                        Axis('max_queue_delay_ms', (0.0, 1.0, 2.0, 5.0)),
                        Axis('num_streams', (1, 2, 3, 4))])


def model_measure(model):
    # the per-camera queue holds exactly one batch's share, as benchmarks/tuning.py sets it
    return lambda c: model.evaluate({**c, 'queue_depth': math.ceil(c['max_batch_size'] / model.cameras)})


def test_measurement_from_latencies_exact():
    m = Measurement.from_latencies([float(i) for i in range(1, 101)], duration_s=2.0, dropped=3)
    assert m.throughput_fps == 50.0
    assert m.latency_p50_ms == pytest.approx(50.5)
    assert m.latency_p90_ms == pytest.approx(90.1)
    assert m.latency_p99_ms == pytest.approx(99.01)
    assert m.latency_mean_ms == 50.5 and m.latency_max_ms == 100.0
    assert m.frames == 100 and m.dropped == 3 and m.error == ''
    empty = Measurement.from_latencies([], duration_s=1.0)
    assert empty.throughput_fps == 0.0 and empty.error == 'no frame delivered'
    with pytest.raises(ValueError, match='duration_s=0'):
        Measurement.from_latencies([1.0], duration_s=0)


def test_objectives_and_constraints():
    m = Measurement(throughput_fps=600.0, latency_p99_ms=40.0, gpu_util_pct=60.0, gpu_power_w=300.0,
                    gpu_memory_mb=9000.0)
    assert score('throughput', m) == 600.0
    assert score(Objective.LATENCY, m) == -40.0
    assert score('efficiency_util', m) == 10.0
    assert score('efficiency_power', m) == 2.0
    assert score('efficiency_power', Measurement(throughput_fps=1.0, latency_p99_ms=1.0)) == -math.inf
    with pytest.raises(ValueError, match='not one of throughput'):
        score('speed', m)
    c = Constraints(max_p99_ms=33.0, min_fps=800.0, max_gpu_memory_mb=8000.0)
    assert c.violations(m) == ['p99 40.0 ms > 33 ms budget', '600.0 FPS < 800 FPS minimum',
                               'GPU memory 9000 MB > 8000 MB limit']
    assert c.excess(m) == pytest.approx(7 / 33 + 200 / 800 + 1000 / 8000)
    ok = Measurement(throughput_fps=900.0, latency_p99_ms=30.0, gpu_memory_mb=100.0)
    assert c.violations(ok) == [] and c.excess(ok) == 0.0
    assert c.violations(Measurement(0.0, math.nan, error='OOM')) == ['failed: OOM']


def test_ladders():
    assert powers_of_two(1, 64) == (1, 2, 4, 8, 16, 32, 64)
    assert powers_of_two(3, 48) == (3, 4, 8, 16, 32, 48)
    assert powers_of_two(5, 5) == (5,)
    assert ladder(0.0, 20.0) == (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    assert ladder(1.0, 7.0) == (1.0, 2.0, 5.0, 7.0)
    with pytest.raises(ValueError):
        powers_of_two(0, 4)


def test_runner_warms_up_caches_and_records_failures():
    calls = []

    def measure(config):
        calls.append(config['max_batch_size'])
        if config['max_batch_size'] == 4:
            raise MemoryError('CUDA out of memory')
        return Measurement(throughput_fps=10.0 * config['max_batch_size'], latency_p99_ms=1.0)

    ticks = iter(range(100))
    runner = TrialRunner(measure, warmup_runs=2, constraints=Constraints(max_p99_ms=10.0),
                         clock=lambda: float(next(ticks)))
    t1 = runner.run({'max_batch_size': 2})
    assert calls == [2, 2, 2]  # two warm-up runs, thrown away, then the measured one
    assert runner.run({'max_batch_size': 2}) is t1 and calls == [2, 2, 2]  # cached
    failed = runner.run({'max_batch_size': 4})
    assert not failed.feasible and failed.measurement.error == 'MemoryError: CUDA out of memory'
    assert failed.violations == ('failed: MemoryError: CUDA out of memory',)
    assert [t.number for t in runner.trials] == [0, 1]
    assert t1.started_s == 1.0 and t1.took_s == 1.0  # clock passed in: exact times
    assert runner.best() is t1


def test_sweep_stops_at_the_budget_and_keeps_the_best_feasible():
    table = Table()
    result = sweep(TrialRunner(table, constraints=Constraints(max_p99_ms=33.0)), BATCHES)
    assert result.best.config == {'max_batch_size': 16}
    assert [c['max_batch_size'] for c in table.calls] == [1, 2, 4, 8, 16, 32]
    assert result.stop_reason == 'max_batch_size=32 broke the constraints (p99 38.0 ms > 33 ms budget)'


def test_sweep_stops_on_a_plateau_and_on_degradation():
    table = Table()
    plateau = sweep(TrialRunner(table), BATCHES, min_gain=0.05, patience=2)
    assert plateau.best.config == {'max_batch_size': 32}  # the most throughput seen
    assert [c['max_batch_size'] for c in table.calls] == [1, 2, 4, 8, 16, 32, 64]
    assert plateau.stop_reason == 'max_batch_size=64: no throughput gain of 5% for 2 values in a row'

    table = Table()
    degraded = sweep(TrialRunner(table), BATCHES, min_gain=0.05, patience=5)
    assert [c['max_batch_size'] for c in table.calls] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert degraded.stop_reason == ('max_batch_size=128: throughput 400.0 FPS fell below 80% of the best '
                                    '820.0 FPS')


def test_sweep_objectives_pick_different_batches():
    assert sweep(TrialRunner(Table(), objective='latency'), BATCHES, patience=8).best.config == {
        'max_batch_size': 1}
    # fps per watt: 100/101, 190/102, 350/104, 600/108, 800/116 = 6.90 (the best), 820/132, ...
    best = sweep(TrialRunner(Table(), objective='efficiency_power'), BATCHES, patience=8).best
    assert best.config == {'max_batch_size': 16} and best.score == pytest.approx(800 / 116)
    memory_capped = sweep(TrialRunner(Table(), constraints=Constraints(max_gpu_memory_mb=1400.0)), BATCHES)
    assert memory_capped.best.config == {'max_batch_size': 8}


def test_exhaustive_finds_the_model_optimum_exactly():
    model = BatchedPipelineModel()  # 8 free-running cameras, 4 ms per-batch overhead, 0.25 ms per frame
    space = grid()
    result = exhaustive_search(TrialRunner(model_measure(model), constraints=Constraints(max_p99_ms=33.0)),
                               space)
    assert len(result.trials) == space.size == 112
    assert result.best.config == {'max_batch_size': 8, 'max_queue_delay_ms': 0.0, 'num_streams': 3}
    # 3 streams of 8: one batch every max(2, 6/3) = 2 ms -> 4000 FPS (the 0.25 ms/frame ceiling);
    # p99 = 1 ms transport + 3 x 2 ms x 1.2 = 8.2 ms, the lowest p99 among the 4000 FPS settings
    assert result.best.measurement.throughput_fps == pytest.approx(4000.0)
    assert result.best.measurement.latency_p99_ms == pytest.approx(8.2)


def test_hill_climb_matches_exhaustive_with_far_fewer_trials():
    model = BatchedPipelineModel()
    runner = TrialRunner(model_measure(model), constraints=Constraints(max_p99_ms=33.0))
    result = hill_climb(runner, grid())
    assert result.best.config == {'max_batch_size': 8, 'max_queue_delay_ms': 0.0, 'num_streams': 3}
    assert len(result.trials) == 17  # vs 112 for the grid
    assert result.stop_reason == 'local optimum: no neighbour is better'
    assert [t.config['num_streams'] for t in result.path] == [1, 2, 3, 4, 4, 4, 4, 3]
    assert [t.config['max_batch_size'] for t in result.path] == [1, 1, 1, 1, 2, 4, 8, 8]
    without_momentum = hill_climb(TrialRunner(model_measure(model), constraints=Constraints(max_p99_ms=33.0)),
                                  grid(), momentum=False)
    assert len(without_momentum.trials) == 21  # momentum saves whole neighbourhoods on long straight runs


@pytest.mark.parametrize('model', [
    BatchedPipelineModel(overhead_ms=2.0, per_frame_ms=0.5),
    BatchedPipelineModel(overhead_ms=8.0, per_frame_ms=0.1),
    BatchedPipelineModel(cameras=4, overhead_ms=6.0),
    BatchedPipelineModel(camera_fps=30.0),
])
def test_hill_climb_within_10_percent_of_exhaustive(model):
    constraints = Constraints(max_p99_ms=33.0)
    full = exhaustive_search(TrialRunner(model_measure(model), constraints=constraints), grid())
    quick = hill_climb(TrialRunner(model_measure(model), constraints=constraints), grid())
    assert quick.best.feasible
    assert quick.best.measurement.throughput_fps >= 0.9 * full.best.measurement.throughput_fps
    assert len(quick.trials) <= len(full.trials) // 4


def test_hill_climb_walks_out_of_infeasibility_and_respects_its_budget():
    model = BatchedPipelineModel()
    # start at the worst corner: 64 x 4 streams is 77.8 ms p99; the climb heads for feasibility first
    start = {'max_batch_size': 64, 'max_queue_delay_ms': 5.0, 'num_streams': 4}
    result = hill_climb(TrialRunner(model_measure(model), constraints=Constraints(max_p99_ms=33.0)), grid(),
                        start)
    assert not result.path[0].feasible and result.best.feasible
    capped = hill_climb(TrialRunner(model_measure(model), max_trials=3), grid())
    assert len(capped.trials) == 3 and capped.stop_reason.startswith('3 trials used')
    with pytest.raises(ValueError, match='is not on the grid'):
        hill_climb(TrialRunner(model_measure(model)), grid(), {'max_batch_size': 3, 'max_queue_delay_ms': 0.0,
                                                                'num_streams': 1})


def test_model_reliable_deep_queue_is_the_bad_start():
    model = BatchedPipelineModel()
    bad = model.evaluate({'max_batch_size': 1, 'num_streams': 1, 'queue_depth': 100,
                          'input_reliability': 'reliable'})
    # 1-frame batches: 4.25 ms each -> 235.3 FPS; 2 x 100 x 8 - 1 frames ahead -> 6.8 s of queueing
    assert bad.throughput_fps == pytest.approx(1000 / 4.25)
    assert bad.latency_p99_ms == pytest.approx(1.5 + 1599 * 4.25 + 4.25 * 1.2)
    light = BatchedPipelineModel(camera_fps=30.0).evaluate({'max_batch_size': 8, 'max_queue_delay_ms': 10.0,
                                                             'num_streams': 1})
    assert light.throughput_fps == 240.0  # not saturated: every frame is served


def test_params_file_round_trip(tmp_path):
    text = params_file_text('/stream_batcher', {'max_batch_size': 8, 'max_queue_delay_ms': 2.0,
                                                'input_reliability': 'best_effort'}, 'tuned\nfor p99 33 ms')
    assert text == ('# tuned\n# for p99 33 ms\n/stream_batcher:\n  ros__parameters:\n'
                    '    input_reliability: best_effort\n    max_batch_size: 8\n'
                    '    max_queue_delay_ms: 2.0\n')
    path = tmp_path / 'sub' / 'tuned.yaml'
    write_params_file(str(path), 'stream_batcher', {'num_streams': 2})
    assert yaml.safe_load(path.read_text()) == {'/stream_batcher': {'ros__parameters': {'num_streams': 2}}}
    assert [p.name for p in path.parent.iterdir()] == ['tuned.yaml']  # no temporary left behind
