"""`isaac-perf bench` end to end on the CPU with real DDS: playback -> InferenceNode (onnxruntime detector)
-> monitor; fixed-rate iterations and a peak search produce a valid result file and plots; `bench compare`
and `report` read it back."""
import json
import math

import pytest

from isaac_perf import cli
from isaac_perf.app import bench as bench_app
from isaac_perf.core.bench.metrics import BASIC_METRICS, EXTRA_METRICS

pytest.importorskip('onnxruntime')

FAST_GRAPH = ['--width', '160', '--height', '120', '--frames', '4', '--warmup', '0.5',
              # The detector has random weights, so at the default 0.25 thousands of boxes reach NMS; 0.5
              # keeps post-processing light enough for a 2-core CI machine (the harness is under test).
              '--param', 'score_threshold=0.5', '--backend', 'onnxruntime', '--device', 'cpu']


@pytest.mark.ros
def test_bench_end_to_end(ros_context, tmp_path):
    out = tmp_path / 'run'
    args = cli.build_parser().parse_args(
        ['bench', '--rates', '4', '--iterations', '2', '--duration', '1.5', '--peak', '--peak-min', '2',
         '--peak-max', '10', '--peak-width', '4', '--peak-step', '2', '--probe-fraction', '1',
         '--out', str(out), '--name', 'cpu'] + FAST_GRAPH)
    assert bench_app.main(args, context=ros_context) == 0

    doc = json.loads((out / 'cpu.json').read_text())  # strict JSON (allow_nan=False when written)
    assert doc['schema'] == 'isaac_perf.bench/1'
    meta = doc['metadata']
    assert meta['host'] and meta['cpu'] and meta['versions']['python']
    assert len(meta['input_hash']) == 64
    assert meta['config']['backend'] == 'onnxruntime' and meta['config']['frames']['width'] == 160

    run = doc['runs']['4.0fps']
    assert len(run['iterations']) == 2
    for it in run['iterations']:
        m = it['metrics']
        assert set(BASIC_METRICS) | set(EXTRA_METRICS) <= set(m)
        assert m['NUM_FRAMES_SENT'] == 6  # 4 Hz x 1.5 s
        assert m['NUM_FRAMES_RECEIVED'] >= 1 and m['NUM_FRAMES_RECEIVED'] <= m['NUM_FRAMES_SENT']
        assert m['NUM_MISSED_FRAMES'] == m['NUM_FRAMES_SENT'] - m['NUM_FRAMES_RECEIVED']
        # A frame counts only if it arrives within the run (1.5 s) plus the harness's drain (at most 3 s).
        assert 0 < m['MIN_LATENCY'] <= m['P50_LATENCY'] <= m['P99_LATENCY'] <= m['MAX_LATENCY'] <= 4500
        assert len(it['latencies_ms']) == m['NUM_FRAMES_RECEIVED']
        assert {'pre', 'infer', 'post'} <= set(it['stage_ms'])
        assert 'MEAN_OVERALL_CPU_UTILIZATION' in it['resources']
    assert run['concluded']['MEAN_FRAME_RATE'] > 0
    assert run['stability']['metrics']['MEAN_FRAME_RATE']['n'] == 2

    peak = doc['peak']
    assert 2 <= peak['peak_hz'] <= 10 and peak['probes']
    assert [p['phase'] for p in peak['probes']][0] == 'trial'
    assert any(key.endswith('(peak)') for key in doc['runs'])
    assert doc['profile']['stages']['infer']['wall_ms']
    for png in ('latency.png', 'throughput.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # The same file compared with itself: nothing changed.
    cmp_dir = tmp_path / 'cmp'
    assert cli.main(['bench', 'compare', str(out / 'cpu.json'), str(out / 'cpu.json'),
                     '--out', str(cmp_dir)]) == 0
    changes = json.loads((cmp_dir / 'compare.json').read_text())['changes']
    assert changes and all(c['verdict'] == 'same' for c in changes)
    assert (cmp_dir / 'compare_latency_cdf.png').exists()

    # The bench file carries a stage profile: `isaac-perf report` turns it into a report.
    report_dir = tmp_path / 'report'
    assert cli.main(['report', str(out / 'cpu.json'), '--out', str(report_dir)]) == 0
    report = json.loads((report_dir / 'report.json').read_text())
    assert {s['name'] for s in report['stages']} >= {'pre', 'infer', 'post'}
    assert math.isclose(sum(s['share'] for s in report['stages']), 1.0, rel_tol=1e-6)
    assert (report_dir / 'report.md').read_text().startswith('# Profile report: cpu')


@pytest.mark.parametrize('argv, message', [
    (['bench', '--rates', 'fast'], "--rates entry 'fast' is not a number"),
    (['bench', '--rates', ''], 'nothing to run'),
    (['bench', '--graph', 'none'], '--graph none needs --end-topic'),
    (['bench', '--peak', '--peak-min', '50', '--peak-max', '10'], 'need 0 < min < max'),
    (['bench', 'compare', 'missing_a.json', 'missing_b.json'], 'cannot read a benchmark result'),
    (['report', 'missing.json'], 'cannot read missing.json'),
])
def test_bad_invocations_say_what_to_fix(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_rates():
    assert bench_app.parse_rates('10, 30,60') == [10.0, 30.0, 60.0]
    with pytest.raises(ValueError, match='must be in'):
        bench_app.parse_rates('0')


@pytest.mark.ros
def test_bench_batcher_graph_over_two_cameras(ros_context, tmp_path):
    args = cli.build_parser().parse_args(
        ['bench', '--graph', 'batcher', '--cameras', '2', '--rates', '4', '--duration', '1.5',
         '--max-batch', '2', '--out', str(tmp_path), '--name', 'batcher', '--no-plots'] + FAST_GRAPH)
    assert bench_app.main(args, context=ros_context) == 0
    doc = json.loads((tmp_path / 'batcher.json').read_text())
    assert doc['metadata']['config']['graph'] == 'stream_batcher'
    m = doc['runs']['8.0fps']['iterations'][0]['metrics']  # 2 cameras x 4 Hz
    assert m['NUM_FRAMES_SENT'] == 12
    assert m['NUM_FRAMES_RECEIVED'] >= 8
    assert not (tmp_path / 'latency.png').exists()


def test_input_topics_give_each_camera_a_namespace():
    assert bench_app.input_topics('/bench/image_raw', 1) == ['/bench/image_raw']
    assert bench_app.input_topics('/bench/image_raw', 2) == ['/bench/camera_0/image_raw',
                                                             '/bench/camera_1/image_raw']
