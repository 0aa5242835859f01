"""The /performance_metrics layout is documented, stable and append-only."""
import math

import pytest

from isaac_perf.core.telemetry import metrics

# Frozen copy of the published layout: new fields may be appended, existing ones never move.
FROZEN_GLOBAL = (
    'cpu_percent', 'cpu_max_core_percent', 'memory_percent', 'memory_used_mib', 'gpu_count',
    'gpu_util_percent_max', 'gpu_memory_used_fraction_max', 'gpu_temperature_c_max', 'gpu_power_w_total',
    'pipeline_fps', 'pipeline_latency_ms_p50', 'pipeline_latency_ms_p99', 'topics_watched', 'topics_stale',
    'alerts_warn', 'alerts_error', 'monitor_cpu_percent',
)
FROZEN_TOPIC = ('rate_hz', 'expected_rate_hz', 'stamp_rate_hz', 'bandwidth_mbps', 'mean_size_kib',
                'latency_ms_mean', 'latency_ms_p50', 'latency_ms_p90', 'latency_ms_p99', 'latency_ms_max',
                'jitter_ms', 'max_abs_jitter_ms', 'drops', 'count', 'age_s', 'level')
FROZEN_GPU_PREFIX = ('util_percent', 'memory_used_mib', 'memory_total_mib', 'memory_used_fraction',
                     'memory_bw_util_percent', 'temperature_c', 'power_w')


def test_layout_is_append_only():
    assert metrics.GLOBAL_FIELDS[:len(FROZEN_GLOBAL)] == FROZEN_GLOBAL
    assert metrics.TOPIC_FIELDS[:len(FROZEN_TOPIC)] == FROZEN_TOPIC
    assert metrics.GPU_FIELDS[:len(FROZEN_GPU_PREFIX)] == FROZEN_GPU_PREFIX
    for fields in (metrics.GLOBAL_FIELDS, *metrics.BLOCK_FIELDS.values()):
        assert len(set(fields)) == len(fields)
        assert all(':' not in f for f in fields)


def test_layout_is_documented_in_the_user_docs():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / 'docs' / 'monitor.md').read_text()
    for name in metrics.GLOBAL_FIELDS + metrics.GPU_FIELDS + metrics.TOPIC_FIELDS + metrics.STAGE_FIELDS:
        assert f'`{name}`' in doc, f'docs/monitor.md does not document the field {name}'


def test_flatten_orders_globals_then_blocks_and_fills_nan():
    blocks = [
        metrics.Block('gpu', '0', {'util_percent': 50.0}),
        metrics.Block('topic', '/cam/image', {'rate_hz': 30.0, 'drops': 2}),
        metrics.Block('stages', '/inf/stage_times', {'fps': 29.5, 'infer_ms_p50': 7.0},
                      metrics.stage_extra_fields(['infer'])),
    ]
    labels, values = metrics.flatten({'cpu_percent': 12.5, 'gpu_count': 1}, blocks)
    n = len(metrics.GLOBAL_FIELDS)
    assert labels[:n] == list(metrics.GLOBAL_FIELDS)
    assert values[0] == 12.5 and values[labels.index('gpu_count')] == 1.0
    assert math.isnan(values[labels.index('pipeline_fps')])
    assert labels[n] == 'gpu:0:util_percent' and values[n] == 50.0
    topic_start = n + len(metrics.GPU_FIELDS)
    assert labels[topic_start] == 'topic:/cam/image:rate_hz'
    stage_start = topic_start + len(metrics.TOPIC_FIELDS)
    assert labels[stage_start] == 'stages:/inf/stage_times:fps'
    assert labels[-3:] == ['stages:/inf/stage_times:infer_ms_mean', 'stages:/inf/stage_times:infer_ms_p50',
                           'stages:/inf/stage_times:infer_ms_p99']
    assert values[-2] == 7.0 and math.isnan(values[-1])
    assert len(labels) == len(values) == n + len(metrics.GPU_FIELDS) + len(metrics.TOPIC_FIELDS) \
        + len(metrics.STAGE_FIELDS) + 3


def test_parse_inverts_flatten_including_keys_with_colons():
    labels, values = metrics.flatten({'cpu_percent': 1.0}, [
        metrics.Block('proc', 'pid:42', {'count': 1, 'cpu_percent': 3.0}),
        metrics.Block('topic', '/a', {'rate_hz': 10.0})])
    parsed = metrics.parse(labels + ['future:thing'], values + [5.0])
    assert parsed['global']['cpu_percent'] == 1.0
    assert parsed['proc']['pid:42']['cpu_percent'] == 3.0
    assert parsed['topic']['/a']['rate_hz'] == 10.0
    assert parsed['other'] == {'future:thing': 5.0}
    with pytest.raises(ValueError, match='labels'):
        metrics.parse(['a'], [])
