"""The qos_tuner's diagnostics task, called directly (no ROS)."""
from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import run_task
from isaac_perf.core.tuning.knobs import knob_from_target, knob_to_target, knobs_from
from isaac_perf.core.tuning.tuner_health import TunerFacts, tuner_status


def status(**facts):
    base = {'target': '/stream_batcher', 'knobs': ('max_batch_size',), 'config': {'max_batch_size': 8}}
    return run_task('qos_tuner: tuning', lambda s: tuner_status(s, TunerFacts(**{**base, **facts})))


def test_levels_follow_the_facts():
    ok = status(counts={'applied': 2})
    assert ok.level == Level.OK and ok.message == 'tuning /stream_batcher: max_batch_size'
    assert ok.values['config'] == 'max_batch_size=8' and ok.values['applied'] == 2
    assert status(advise_only=True).message.startswith('advising on /stream_batcher')
    waiting = status(config=None)
    assert waiting.level == Level.WARN and 'waiting for /stream_batcher' in waiting.message
    assert waiting.values['config'] == 'unknown'
    both = status(incompatible_pairs=2, last_timed_out=True)
    assert both.level == Level.WARN
    assert '2 QoS-incompatible' in both.message and 'did not answer' in both.message


def test_knob_tables_map_to_and_from_the_target():
    values = {'batch_size_min': 1, 'batch_size_max': 8, 'queue_delay_ms_min': 0.0, 'queue_delay_ms_max': 2.0,
              'num_streams_min': 1, 'num_streams_max': 2, 'queue_depth_min': 1, 'queue_depth_max': 4,
              'max_gpus': 2, 'tune_params': ['num_streams', 'max_batch_size']}
    knobs = knobs_from(values)
    assert [k.name for k in knobs] == ['max_batch_size', 'num_streams']  # table order, not list order
    assert knobs[0].values == (1, 2, 4, 8) and knobs[1].values == (1, 2)
    assert knob_to_target('num_gpus', 2) == ('gpu_ids', [0, 1])
    assert knob_from_target('num_gpus', [-1], max_gpus=2) == 2
    assert knob_to_target('max_queue_delay_ms', 1) == ('max_queue_delay_ms', 1.0)
