"""The profile report's statistics, bottleneck rules and recommendations, on constructed profiles."""
import json
import math

import pytest

from isaac_perf.core.profiling.profiler import profile_from_stage_times
from isaac_perf.core.profiling.report import (
    BEST_PRACTICES,
    analyze,
    stage_kind,
    to_json,
    to_markdown,
    write_report,
)
from isaac_perf.core.telemetry.stage_times import StageReport


def _profile(stages, frames=None, **extra):
    """A profile dict as StageProfiler.to_dict writes it, from {name: wall_ms list}."""
    prof = {'schema': 'isaac_perf.profile/1', 'stage_order': list(stages),
            'stages': {n: {'wall_ms': list(v), 'frame': list(range(len(v))), 'gpu_ms': [], 'alloc_bytes': [],
                           'calls': len(v)} for n, v in stages.items()},
            'frames': {'count': len(frames or []), 'wall_ms': list(frames or []),
                       'frame': list(range(len(frames or [])))}}
    for name, fields in extra.items():
        prof['stages'][name].update(fields)
    return prof


# Frame = sum of stage means = 2 + 5 + 3 = 10 ms (no frame samples).
# convert: exactly 20% -> not a bottleneck (the rule is "above 20%").
# infer: 50%; preprocess: 30% and CV = sqrt(3)/3 = 0.577 (samples 2, 2, 2, 6).
BASE = {'convert': [2.0, 2.0, 2.0, 2.0], 'infer': [5.0, 5.0, 5.0, 5.0], 'preprocess': [2.0, 2.0, 2.0, 6.0]}


def test_stage_statistics_exact():
    report = analyze(_profile(BASE))
    assert report.frame['source'] == 'sum_of_stage_means'
    assert report.frame['mean_ms'] == 10.0
    assert report.frame['fps'] == 100.0
    pre = report.stage('preprocess')
    assert pre.mean_ms == 3.0
    assert pre.p50_ms == 2.0
    assert pre.p99_ms == pytest.approx(2.0 + 0.97 * 4.0)  # linear interpolation between 2 and 6
    assert pre.max_ms == 6.0
    assert pre.std_ms == pytest.approx(math.sqrt(3.0))
    assert pre.cv == pytest.approx(math.sqrt(3.0) / 3.0)
    assert [s.share for s in report.stages] == [0.2, 0.5, 0.3]


def test_bottlenecks_ranked_by_frame_time_at_stake():
    report = analyze(_profile(BASE))
    got = [(b.where, b.cause) for b in report.bottlenecks]
    # infer: 5 ms at stake; preprocess share: 3 ms; preprocess variance: std = sqrt(3) = 1.73 ms.
    assert got == [('infer', 'time_share'), ('preprocess', 'time_share'), ('preprocess', 'high_variance')]
    assert [b.impact_ms for b in report.bottlenecks] == pytest.approx([5.0, 3.0, math.sqrt(3.0)])
    assert report.top_bottlenecks() == ['infer', 'preprocess']
    assert 'convert' not in {b.where for b in report.bottlenecks}  # exactly 20% is not above 20%


def test_share_uses_measured_frame_time_when_present():
    report = analyze(_profile(BASE, frames=[20.0, 20.0, 20.0, 20.0]))
    assert report.frame['source'] == 'frames'
    assert [s.share for s in report.stages] == [0.1, 0.25, 0.15]
    assert [(b.where, b.cause) for b in report.bottlenecks] == [('infer', 'time_share'),
                                                                ('preprocess', 'high_variance')]
    assert report.frame['stage_coverage'] == 0.5
    assert any('cover 50%' in w for w in report.warnings)  # half the frame is untimed


def test_variance_of_a_negligible_stage_is_not_flagged():
    stages = dict(BASE, publish=[0.01, 0.01, 0.01, 0.05])  # CV 0.77 but 0.2% of the frame
    report = analyze(_profile(stages))
    assert report.stage('publish').cv > 0.25
    assert 'publish' not in {b.where for b in report.bottlenecks}


def test_thresholds_are_arguments():
    report = analyze(_profile(BASE), share_threshold=0.6, cv_threshold=1.0)
    assert report.bottlenecks == []
    assert report.recommendations == []
    assert 'None' in to_markdown(report)


def test_allocation_and_host_overhead_rules():
    mib = 1 << 20
    prof = _profile(BASE, preprocess={'alloc_bytes': [3 * mib] * 4}, infer={'gpu_ms': [1.0, 1.0, 1.0, 1.0]})
    report = analyze(prof)
    causes = {(b.where, b.cause): b for b in report.bottlenecks}
    assert causes[('preprocess', 'allocation')].value == 3 * mib
    host = causes[('infer', 'host_overhead')]
    assert host.value == 5.0 and host.impact_ms == 4.0  # 5 ms wall, 1 ms GPU: 4 ms of CPU-side time
    recs: dict = {}
    for r in report.recommendations:
        recs.setdefault((r.where, r.cause), r.practice)  # the first (most direct) practice per cause
    assert recs[('infer', 'host_overhead')] == 'Minimize synchronization points'
    assert recs[('preprocess', 'allocation')] == 'Pre-allocate memory pools'


def test_cpu_only_stages_with_cuda_events_are_not_host_overhead():
    # With CUDA events on, a numpy stage measures a few microseconds of "GPU time": still a CPU stage.
    prof = _profile(BASE, preprocess={'gpu_ms': [0.004] * 4}, infer={'gpu_ms': [4.0] * 4})
    report = analyze(prof)
    assert [b for b in report.bottlenecks if b.cause == 'host_overhead'] == []
    pre = [r.practice for r in report.recommendations if r.where == 'preprocess' and r.cause == 'time_share']
    assert pre == ['Minimize memory copies', 'Optimize memory bandwidth']
    infer = [r.practice for r in report.recommendations if r.where == 'infer']
    assert infer[0] == 'Use TensorRT optimizations'  # on the GPU already: no 'target hardware' advice


def test_variance_with_allocation_evidence_is_answered_by_memory_pools():
    mib = 1 << 20
    # mean 3 ms, std sqrt(18.75) = 4.33 ms: the variance outranks the allocation (3 ms at stake)
    stages = dict(BASE, preprocess=[0.5, 0.5, 0.5, 10.5])
    report = analyze(_profile(stages, preprocess={'alloc_bytes': [3 * mib] * 4}))
    assert [(b.where, b.cause) for b in report.bottlenecks if b.where == 'preprocess'] == [
        ('preprocess', 'high_variance'), ('preprocess', 'time_share'), ('preprocess', 'allocation')]
    pre = [(r.cause, r.practice) for r in report.recommendations if r.where == 'preprocess']
    assert pre[0] == ('high_variance', 'Pre-allocate memory pools')
    assert [p for _, p in pre].count('Pre-allocate memory pools') == 1  # not repeated for 'allocation'


def test_recommendations_follow_the_measured_cause_and_use_the_catalogue():
    report = analyze(_profile(BASE))
    for r in report.recommendations:
        assert r.practice in BEST_PRACTICES
        assert (r.category, r.description) == BEST_PRACTICES[r.practice]
        assert r.evidence and r.action
    by_stage = [(r.where, r.cause, r.practice) for r in report.recommendations]
    # inference on the CPU (no GPU timing): target hardware first, then TensorRT / FP16 / batching.
    assert by_stage[:4] == [('infer', 'time_share', 'Optimize for target hardware'),
                            ('infer', 'time_share', 'Use TensorRT optimizations'),
                            ('infer', 'time_share', 'Quantize models when accuracy allows'),
                            ('infer', 'time_share', 'Batch operations when possible')]
    assert ('preprocess', 'time_share', 'Minimize memory copies') in by_stage
    assert 'takes 30.0% of the frame' in [r for r in report.recommendations
                                          if r.cause == 'time_share' and r.where == 'preprocess'][0].evidence


def test_hot_function_from_sampling_is_a_bottleneck():
    prof = _profile(BASE)
    prof['hot_functions'] = {'source': 'py-spy', 'samples': 100, 'functions': [
        {'function': 'letterbox (preprocess.py:40)', 'self_fraction': 0.35, 'total_fraction': 0.4,
         'samples': 35},
        {'function': 'nms (postprocess.py:68)', 'self_fraction': 0.1, 'total_fraction': 0.1, 'samples': 10}]}
    report = analyze(prof)
    hot = [b for b in report.bottlenecks if b.cause == 'hot_function']
    assert [(b.where, b.impact_ms) for b in hot] == [('letterbox (preprocess.py:40)', pytest.approx(3.5))]
    assert report.top_bottlenecks() == ['infer', 'preprocess']  # stages; functions only when asked
    assert report.top_bottlenecks(functions=True) == ['infer', 'letterbox (preprocess.py:40)', 'preprocess']
    assert any(r.practice == 'Profile and optimize hotspots' for r in report.recommendations)
    assert 'letterbox' in to_markdown(report)


@pytest.mark.parametrize('name, kind', [
    ('preprocess', 'preprocess'), ('postprocess', 'postprocess'), ('nms', 'postprocess'),
    ('infer', 'inference'), ('engine', 'inference'), ('h2d', 'transfer'), ('convert', 'conversion'),
    ('publish', 'publish'),
    ('frobnicate', 'other')])
def test_stage_kind(name, kind):
    assert stage_kind(name) == kind


def test_bad_profiles_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="no 'stages'"):
        analyze({'stages': {}})
    with pytest.raises(ValueError, match="lacks a 'wall_ms'"):
        analyze({'stages': {'infer': {'mean': 3}}})


def test_json_markdown_and_plots(tmp_path):
    report, paths = write_report(_profile(BASE, frames=[10.0, 10.0, 10.0, 10.0]), tmp_path)
    doc = json.loads((tmp_path / 'report.json').read_text())  # standard JSON: no NaN tokens
    assert doc['schema'] == 'isaac_perf.report/1'
    assert doc['top_bottlenecks'] == ['infer', 'preprocess']
    assert [s['name'] for s in doc['stages']] == ['convert', 'infer', 'preprocess']
    md = (tmp_path / 'report.md').read_text()
    assert '| infer | inference | 4 | 5.000 | 5.000 | 5.000 | 50.0% | 0.00 |' in md
    assert 'Top bottlenecks: infer, preprocess' in md
    for name in ('stages', 'distribution', 'timeline'):
        assert (tmp_path / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert paths[name].endswith(f'{name}.png')
    assert 'NaN' not in to_json(report)


def test_report_from_stage_times_reports():
    reports = [StageReport(stamp_ns=i, batch_size=1, stages_ms={'pre': 0.5, 'infer': 3.0 + i % 2})
               for i in range(10)]
    report = analyze(profile_from_stage_times(reports))
    assert report.frame['source'] == 'frames'
    assert report.frame['mean_ms'] == 4.0  # each report's total_ms is its frame
    assert report.stage('infer').mean_ms == 3.5
    assert report.stage('infer').share == 3.5 / 4.0
    assert report.stage('pre').share == 0.5 / 4.0
    assert report.top_bottlenecks() == ['infer']


def test_gpu_headroom_from_gpm_becomes_bottlenecks_with_practices():
    from isaac_perf.core.profiling.report import analyze
    profile = {'stages': {'infer': {'wall_ms': [5.0, 5.0, 5.0]}},
               'gpu_headroom': {'0': {'util_percent': 30.0, 'sm_active_percent': 28.0,
                                      'tensor_active_percent': 0.1, 'fp32_active_percent': 20.0,
                                      'sm_occupancy_percent': 40.0, 'dram_bw_util_percent': 10.0}}}
    report = analyze(profile)
    gpu = [b for b in report.bottlenecks if b.where == 'gpu0']
    assert [b.cause for b in gpu] == ['tensor_idle']
    assert gpu[0].evidence.startswith('GPU 30% busy but tensor cores idle (0.1% active)')
    practices = [r.practice for r in report.recommendations if r.where == 'gpu0']
    assert practices == ['Quantize models when accuracy allows', 'Use TensorRT optimizations']
