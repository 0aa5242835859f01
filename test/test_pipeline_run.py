"""The pipeline on CPU with real DDS: image_source -> inference_node -> results, perf_monitor watching."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('onnxruntime')

from isaac_perf.app import run  # noqa: E402
from isaac_perf.core import pipeline_graph as graph  # noqa: E402
from isaac_perf.core.paths import config_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_params_file_feeds_every_node_and_wires_topics(tmp_path):
    params = run.pipeline_params(config_file('pipeline.yaml'), backend='onnxruntime', model='detector',
                                 cameras=3, rate=12, width=320, height=240)
    source, infer, monitor = params['image_source'], params['inference_node'], params['perf_monitor']
    topics = [f'/camera_{i}/image_raw' for i in range(3)]
    assert (source['camera_count'], source['rate_hz']) == (3, 12.0)
    assert (source['width'], source['height']) == (320, 240)
    assert isinstance(source['rate_hz'], float)  # YAML/CLI ints become floats for float parameters
    assert infer['input_topics'] == topics
    assert infer['backend'] == 'onnxruntime' and infer['model'] == 'detector'
    assert monitor['watched_topics'] == [f'{t}/zero_copy' for t in topics] + [
        f'{t}/detections' for t in topics]
    assert monitor['expected_rates_hz'] == [12.0] * 3 + [0.0] * 3
    own = tmp_path / 'own.onnx'
    own.write_bytes(b'')
    assert run.pipeline_params(config_file('pipeline.yaml'), model=str(own))['inference_node']['model'] == ''
    # '/**' sections apply to every node, named sections win.
    custom = tmp_path / 'p.yaml'
    custom.write_text('/**:\n  ros__parameters:\n    diagnostics_period_s: 2.0\n'
                      'image_source:\n  ros__parameters:\n    diagnostics_period_s: 3.0\n')
    loaded = graph.load_params_file(custom)
    assert loaded['image_source']['diagnostics_period_s'] == 3.0
    assert loaded['inference_node']['diagnostics_period_s'] == 2.0


def test_ten_second_pipeline_run_produces_results_and_metrics(ros_context, tmp_path, monkeypatch):
    monkeypatch.setenv('ISAAC_PERF_CACHE', os.environ.get('ISAAC_PERF_CACHE') or str(tmp_path / 'cache'))
    params = run.pipeline_params(config_file('pipeline.yaml'), backend='onnxruntime', cameras=1, rate=15,
                                 width=320, height=240)
    ticks = []
    called = time.monotonic()
    report = run.run_pipeline(params, 10.0, context=ros_context, on_tick=ticks.append)
    # No rate is assumed of a loaded machine: the run lasts its duration, within the call's own time.
    assert 9.5 <= report['duration_s'] <= time.monotonic() - called
    assert report['task'] == 'classification' and report['cameras'] == 1
    assert report['backend'] == 'onnxruntime' and report['device'] == 'cpu'
    assert report['frames_published'] >= report['frames_received'] > 0
    assert report['results_received'] > 0 and report['frames_processed'] >= report['results_received']
    assert report['fps'] > 0.0
    latency = report['latency_ms']
    assert 0 < latency['p50'] <= latency['p99'] <= latency['max'] < 10_000
    assert {'transport', 'queue', 'pre', 'infer', 'post'} <= set(report['stages_ms'])
    assert report['stages_ms']['infer']['mean'] > 0
    # Every frame that arrived was either inferred or dropped for a counted reason.
    drops = report['drops']
    assert report['frames_in_flight'] == 0
    assert report['frames_received'] == report['frames_processed'] + drops['total'] - drops['transport']
    # The monitor watched the run: /performance_metrics carried the pipeline's FPS and latency.
    assert math.isfinite(report['monitor']['pipeline_fps']) and report['monitor']['pipeline_fps'] > 0
    assert math.isfinite(report['monitor']['pipeline_latency_ms_p50'])
    assert len(ticks) >= 8 and any(math.isfinite(t['fps']) for t in ticks)
    text = run.format_report(report)
    assert 'throughput' in text and 'p99' in text and 'drops' in text


def test_console_command_runs_and_writes_json(tmp_path):
    out = tmp_path / 'report.json'
    env = dict(os.environ)
    env.setdefault('ISAAC_PERF_CACHE', str(tmp_path / 'cache'))
    result = subprocess.run(
        [sys.executable, '-m', 'isaac_perf.cli', 'run', '--duration', '3', '--backend', 'onnxruntime',
         '--width', '160', '--height', '120', '--rate', '10', '--no-monitor', '--json', str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert 'isaac-perf run: 1 camera(s) 160x120' in result.stdout
    assert 'fps' in result.stdout  # not a TTY: one plain live line per second
    report = json.loads(out.read_text())
    assert report['results_received'] > 0 and report['monitor'] == {}
    bad = subprocess.run([sys.executable, '-m', 'isaac_perf.cli', 'run', '--cameras', '0'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and 'argument --cameras: 0 is below the minimum 1' in bad.stderr


def test_pipeline_yaml_matches_the_declared_parameters():
    """Each key of config/pipeline.yaml is a parameter of its node, of the declared type (rclpy is strict)."""
    from isaac_perf.nodes import image_source, inference, perf_monitor
    params = graph.load_params_file(config_file('pipeline.yaml'))
    for name, module in (('image_source', image_source), ('inference_node', inference),
                         ('perf_monitor', perf_monitor)):
        specs = {s.name: s for s in module.PARAMS}
        unknown = set(params[name]) - set(specs)
        assert not unknown, f'{name}: {sorted(unknown)} in pipeline.yaml are not parameters of the node'
        for key, value in params[name].items():
            default = specs[key].default
            kind = type(default) if not isinstance(default, tuple) else list
            assert isinstance(value, kind), f'{name}.{key}: {value!r} is not a {kind.__name__}'
            assert specs[key].validate(value) == '', specs[key].validate(value)
