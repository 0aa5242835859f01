"""Benchmark logic: ros2_benchmark metrics on exact timestamps, the peak search on a simulated graph of
known capacity, iteration conclusion and stability, statistics, and comparing two result files."""
import json
import math

import pytest

from isaac_perf.core.bench.compare import betainc, compare, format_comparison, t_two_sided_p, welch_t_test
from isaac_perf.core.bench.metrics import BASIC_METRICS, RunResult, performance_metrics, resource_metrics
from isaac_perf.core.bench.peak import conclude, find_peak_rate, simulate_fixed_rate, stability, sustainable
from isaac_perf.core.bench.provenance import input_hash, results_document, run_key, summary_table
from isaac_perf.core.plotting import plot_comparison, plot_results

MS = 1_000_000


def test_metric_names_are_ros2_benchmarks():
    assert list(BASIC_METRICS)[:5] == ['RECEIVED_DURATION', 'MEAN_PLAYBACK_FRAME_RATE', 'MEAN_FRAME_RATE',
                                       'NUM_MISSED_FRAMES', 'NUM_FRAMES_SENT']
    assert {'MAX_LATENCY', 'MIN_LATENCY', 'MEAN_LATENCY', 'MAX_JITTER', 'MIN_JITTER', 'MEAN_JITTER',
            'STD_DEV_JITTER'} <= set(BASIC_METRICS)


def test_performance_metrics_exact():
    sent = {'a': 0, 'b': 100 * MS, 'c': 200 * MS, 'd': 300 * MS}
    received = {'a': 10 * MS, 'b': 115 * MS, 'd': 320 * MS, 'stale': 5 * MS}  # 'c' lost; 'stale' not sent
    m = performance_metrics(sent, received)
    assert m['NUM_FRAMES_SENT'] == 4 and m['NUM_FRAMES_RECEIVED'] == 3 and m['NUM_MISSED_FRAMES'] == 1
    assert m['MEAN_PLAYBACK_FRAME_RATE'] == pytest.approx(4 / 0.3)  # ros2_benchmark: N / span
    assert m['RECEIVED_DURATION'] == 310.0
    assert m['MEAN_FRAME_RATE'] == pytest.approx(3 / 0.31)
    assert (m['FIRST_SENT_RECEIVED_LATENCY'], m['LAST_SENT_RECEIVED_LATENCY']) == (10.0, 20.0)
    assert (m['FIRST_INPUT_LATENCY'], m['LAST_INPUT_LATENCY']) == (10.0, 20.0)
    assert (m['MIN_LATENCY'], m['MEAN_LATENCY'], m['MAX_LATENCY']) == (10.0, 15.0, 20.0)
    assert (m['P50_LATENCY'], m['P90_LATENCY'], m['P99_LATENCY']) == pytest.approx((15.0, 19.0, 19.9))
    # receive gaps 105 and 205 ms: one second difference of 100 ms
    jitter = (m['MIN_JITTER'], m['MEAN_JITTER'], m['MAX_JITTER'], m['STD_DEV_JITTER'])
    assert jitter == (100.0, 100.0, 100.0, 0.0)
    assert all(isinstance(v, float) for v in m.values())


def test_performance_metrics_when_nothing_arrives():
    m = performance_metrics({1: 0, 2: 10 * MS}, {})
    assert m['NUM_MISSED_FRAMES'] == 2 and m['MEAN_FRAME_RATE'] == 0.0
    assert math.isnan(m['MEAN_LATENCY'])
    assert not sustainable(m)


def test_simulated_graph_below_and_above_capacity():
    # capacity 50 Hz (20 ms per frame), keep-last depth 1
    sent, received = simulate_fixed_rate(40, 2.0, service_ms=20.0)
    m = performance_metrics(sent, received)
    assert m['NUM_MISSED_FRAMES'] == 0 and m['MIN_LATENCY'] == m['MAX_LATENCY'] == 20.0
    sent, received = simulate_fixed_rate(80, 2.0, service_ms=20.0)
    m = performance_metrics(sent, received)
    # Never idle from t=0: frames start every 20 ms up to the last arrival (1987.5 ms) -> 100 frames,
    # plus the one left in the queue: 101 received of 160.
    assert m['NUM_FRAMES_RECEIVED'] == 101 and m['NUM_MISSED_FRAMES'] == 59
    assert m['MEAN_FRAME_RATE'] == pytest.approx(101 / 2.0, rel=0.02)


def test_peak_search_finds_the_known_capacity():
    def run_at(rate):
        return performance_metrics(*simulate_fixed_rate(rate, 2.0, service_ms=20.0))

    result = find_peak_rate(run_at, 10, 100)
    # ros2_benchmark's search: trial 55 (ignored); bisect 55 x, 32.5 ok, 43.75 ok, 49.375 ok (window
    # 5.6 Hz < 10); linear scan 54.375 x (9 of 109 missed > ceil(5%)).
    assert [(p.rate_hz, p.phase, p.sustainable) for p in result.probes] == [
        (55.0, 'trial', False), (55.0, 'binary', False), (32.5, 'binary', True), (43.75, 'binary', True),
        (49.375, 'binary', True), (54.375, 'linear', False)]
    assert result.peak_hz == 49.375
    assert 50 - 5 <= result.peak_hz <= 50  # within one linear step below the true capacity
    assert result.warnings == []


@pytest.mark.parametrize('service_ms', [8.0, 12.5, 33.3])
def test_peak_search_brackets_the_capacity(service_ms):
    capacity, seconds = 1000.0 / service_ms, 2.0
    result = find_peak_rate(lambda r: performance_metrics(*simulate_fixed_rate(r, seconds, service_ms)),
                            10, 150, trial_probe=False)
    # Below capacity nothing is lost, so the linear scan stops at most one 5 Hz step below it. Above, the
    # 5% loss allowance accepts rates while sent - received <= ceil(5% sent), received <= capacity * T + 2
    # (the frame in service and the one queued): rate <= (capacity + 3 / T) / 0.95.
    assert capacity - 5.0 <= result.peak_hz <= (capacity + 3 / seconds) / 0.95


def test_peak_search_warns_at_the_window_edges():
    fast = find_peak_rate(lambda r: performance_metrics(*simulate_fixed_rate(r, 1.0, 1.0)), 10, 100)
    assert fast.peak_hz == 99.375 and 'top of the search window' in fast.warnings[0]  # 104.4 > 100: no scan
    slow = find_peak_rate(lambda r: performance_metrics(*simulate_fixed_rate(r, 1.0, 250.0)), 10, 100)
    assert slow.peak_hz == 10.0 and 'bottom of the search window' in slow.warnings[0]
    with pytest.raises(ValueError, match='need 0 < lower < upper'):
        find_peak_rate(lambda r: {}, 50, 10)


def test_peak_search_accepts_run_results():
    def run_at(rate):
        return RunResult.from_times(rate, 1.0, *simulate_fixed_rate(rate, 1.0, 20.0))

    assert find_peak_rate(run_at, 10, 100, trial_probe=False).peak_hz == pytest.approx(49.375)


def test_sustainable_rule():
    base = {'MEAN_PLAYBACK_FRAME_RATE': 100.0, 'NUM_FRAMES_SENT': 100}
    assert sustainable({**base, 'MEAN_FRAME_RATE': 90.0, 'NUM_MISSED_FRAMES': 5})
    assert not sustainable({**base, 'MEAN_FRAME_RATE': 90.0, 'NUM_MISSED_FRAMES': 6})  # > ceil(5% of 100)
    assert not sustainable({**base, 'MEAN_FRAME_RATE': 89.9, 'NUM_MISSED_FRAMES': 0})  # > 10 Hz drop
    assert not sustainable({**base, 'MEAN_FRAME_RATE': 95.0, 'NUM_MISSED_FRAMES': 0}, rate_drop_hz=4.0)


def test_conclude_drops_best_and_worst_like_ros2_benchmark():
    its = [{'MEAN_FRAME_RATE': v, 'MAX_LATENCY': v, 'MIN_LATENCY': v, 'MEAN_JITTER': v}
           for v in (10.0, 20.0, 30.0, 40.0, 1000.0)]
    c = conclude(its)
    assert c == {'MEAN_FRAME_RATE': 30.0, 'MAX_LATENCY': 40.0, 'MIN_LATENCY': 20.0, 'MEAN_JITTER': 40.0}
    assert conclude(its[:2]) == {'MEAN_FRAME_RATE': 15.0, 'MAX_LATENCY': 20.0, 'MIN_LATENCY': 10.0,
                                 'MEAN_JITTER': 20.0}  # fewer than 3: nothing dropped
    assert conclude([{'MEAN_LATENCY': float('nan')}, {'MEAN_LATENCY': 3.0}]) == {}


def test_stability_by_coefficient_of_variation():
    steady = stability([{'MEAN_FRAME_RATE': v} for v in (99.0, 100.0, 101.0)], metrics=['MEAN_FRAME_RATE'])
    assert steady['metrics']['MEAN_FRAME_RATE']['cv'] == pytest.approx(0.01)  # sample std 1 / mean 100
    assert steady['stable'] is True
    shaky = stability([{'MEAN_FRAME_RATE': v} for v in (50.0, 100.0, 150.0)], metrics=['MEAN_FRAME_RATE'])
    assert shaky['metrics']['MEAN_FRAME_RATE']['cv'] == pytest.approx(0.5) and shaky['stable'] is False
    assert stability([{'MEAN_FRAME_RATE': 1.0}])['stable'] is None


def test_resource_metrics_names_and_values():
    r = resource_metrics({'OVERALL_CPU_UTILIZATION': [10.0, 30.0], 'DEVICE_UTILIZATION': []},
                         baseline={'OVERALL_CPU_UTILIZATION': 2.0})
    assert r == {'BASELINE_OVERALL_CPU_UTILIZATION': 2.0, 'MAX_OVERALL_CPU_UTILIZATION': 30.0,
                 'MIN_OVERALL_CPU_UTILIZATION': 10.0, 'MEAN_OVERALL_CPU_UTILIZATION': 20.0,
                 'STDDEV_OVERALL_CPU_UTILIZATION': 10.0}


def test_t_distribution_and_welch():
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5)  # Cauchy: 1 - 2/pi * atan(1)
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.0733880, abs=1e-6)
    assert t_two_sided_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6)  # the table's critical value
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248)  # closed form: 1 - 0.6^4 - 4 * 0.4 * 0.6^3
    t, df, p = welch_t_test([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert t == pytest.approx(3 / math.sqrt(2.5))
    assert df == pytest.approx(6.25 / (0.25 / 4 + 4 / 4))
    assert 0.1 < p < 0.12
    assert welch_t_test([1, 1], [1, 1])[2] == 1.0
    assert welch_t_test([1, 1], [2, 2])[2] == 0.0
    with pytest.raises(ValueError, match='at least 2 values'):
        welch_t_test([1], [1, 2])


def _doc(service_ms, jitter, iterations=3, rates=(10.0, 30.0), config=None):
    runs = {}
    for rate in rates:
        its = []
        for i in range(iterations):
            sent, received = simulate_fixed_rate(rate, 2.0, service_ms, transport_ms=jitter[i % len(jitter)])
            its.append(RunResult.from_times(rate, 2.0, sent, received,
                                            resources={'MEAN_OVERALL_CPU_UTILIZATION': 40.0 + i}))
        runs[run_key(rate)] = its
    meta = {'name': 'sim', 'config': config or {'precision': 'fp32'}, 'input_hash': 'abc', 'datetime': 'x'}
    return results_document(meta, runs)


def test_results_document_is_strict_json_with_conclusions():
    doc = _doc(20.0, [0.0, 1.0, 2.0])
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)['schema'] == 'isaac_perf.bench/1'
    run = doc['runs']['30.0fps']
    assert len(run['iterations']) == 3
    assert run['concluded']['MEAN_LATENCY'] == 21.0  # 20 ms service + transport 0/1/2 -> middle one kept
    assert run['stability']['metrics']['MEAN_LATENCY']['cv'] == pytest.approx(1.0 / 21.0)
    assert '30.0fps' in summary_table(doc)


def test_compare_flags_real_changes_and_ignores_noise():
    a = _doc(20.0, [0.0, 1.0, 2.0])
    b = _doc(10.0, [0.0, 1.0, 2.0], config={'precision': 'fp16'})  # 10 ms faster per frame
    result = compare(a, b)
    rows = {(c['run'], c['metric']): c for c in result['changes']}
    lat = rows[('30.0fps', 'MEAN_LATENCY')]
    assert (lat['a'], lat['b'], lat['delta']) == (21.0, 11.0, -10.0)
    assert lat['method'] == 'welch-t' and lat['significant'] and lat['verdict'] == 'better'
    assert rows[('30.0fps', 'NUM_MISSED_FRAMES')]['verdict'] == 'same'
    assert result['metadata_diff'] == {'config.precision': ['fp32', 'fp16']}
    noisy = compare(a, _doc(20.0, [0.5, 1.2, 2.5]))  # within the iterations' spread
    lat = {(c['run'], c['metric']): c for c in noisy['changes']}[('30.0fps', 'MEAN_LATENCY')]
    assert lat['verdict'] == 'no significant change' and lat['p_value'] > 0.05
    text = format_comparison(result)
    assert 'MEAN_LATENCY' in text and 'better' in text and "config.precision: 'fp32' -> 'fp16'" in text


def test_compare_single_runs_uses_bootstrap_for_latency():
    a = _doc(20.0, [0.0], iterations=1, rates=(30.0,))
    b = _doc(25.0, [0.0], iterations=1, rates=(30.0,))
    rows = {c['metric']: c for c in compare(a, b)['changes']}
    assert rows['P99_LATENCY']['method'] == 'bootstrap' and rows['P99_LATENCY']['verdict'] == 'worse'
    assert rows['MEAN_OVERALL_CPU_UTILIZATION']['verdict'] == 'same'
    assert rows['MEAN_FRAME_RATE']['method'] == 'single-run'


def test_plots(tmp_path):
    a = _doc(20.0, [0.0, 1.0, 2.0])
    sim = find_peak_rate(lambda r: performance_metrics(*simulate_fixed_rate(r, 1.0, 20.0)), 10, 100)
    a = results_document(a['metadata'], {}, peak=sim) | {'runs': a['runs']}
    paths = plot_results(a, tmp_path) + plot_comparison(a, _doc(10.0, [0.0]), tmp_path)
    assert [p.split('/')[-1] for p in paths] == ['latency.png', 'throughput.png', 'compare_latency_cdf.png']
    for p in paths:
        assert open(p, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_input_hash_depends_on_content_and_shape():
    import numpy as np
    x = np.zeros((2, 3), np.uint8)
    assert input_hash([x]) == input_hash([x.copy()])
    assert input_hash([x]) != input_hash([x.reshape(3, 2)])
    assert input_hash([x]) != input_hash([x + 1])
