"""The qos_tuner's parameters (one ParamSpec table), the rules between them, and the controller they make.

No ROS here: isaac_perf/nodes/qos_tuner.py declares the table and builds its controller with these.
"""
from __future__ import annotations

import os
from typing import Any

from isaac_perf.core.output_paths import OutputPathError, check_writable
from isaac_perf.core.params import ParamSpec
from isaac_perf.core.tuning.controller import RealtimeController
from isaac_perf.core.tuning.knobs import DEFAULT_KNOBS, KNOBS, Knob, Requirements
from isaac_perf.core.tuning.planner import WindowPolicy


def _check_node_name(name: str) -> str:
    if not name.startswith('/') or name.endswith('/') or ' ' in name or len(name) < 2:
        return f"target_node={name!r}: give the node's fully qualified name, e.g. /stream_batcher"
    return ''


def _check_knobs(names: list[str]) -> str:
    unknown = [n for n in names if n not in KNOBS]
    if unknown:
        return f'tune_params {unknown}: each must be one of {", ".join(KNOBS)}'
    if len(set(names)) != len(names):
        return 'tune_params lists a knob twice'
    return ''


def _check_topics(topics: list[str]) -> str:
    bad = [t for t in topics if t and (not t.startswith('/') or ' ' in t)]
    return f'watch_topics {bad}: give absolute topic names such as /camera_0/image_raw' if bad else ''


PARAMS: list[ParamSpec] = [
    ParamSpec('target_node', '/stream_batcher', 'Fully qualified name of the node whose parameters are tuned '
              '(through its parameter services).', check=_check_node_name),
    ParamSpec('latency_budget_ms', 33.0, 'The p99 end-to-end latency budget in milliseconds.', min=0.1,
              max=1e6),
    ParamSpec('min_fps', 0.0, 'Minimum pipeline throughput in frames per second (0 = none).', min=0.0,
              max=1e7),
    ParamSpec('max_jitter_ms', 0.0, 'Jitter tolerance: the latency standard deviation in ms (0 = ignore); '
              'needs jitter_field.', min=0.0, max=1e6),
    ParamSpec('objective', 'throughput', 'What to maximise within the budget: throughput, or latency '
              '(lowest p99 at min_fps).', choices=('throughput', 'latency')),
    ParamSpec('advise_only', False, 'Only publish and log the changes it would make; set nothing.'),
    ParamSpec('control_period_s', 0.25, 'Seconds between checks for a fresh metrics window.', min=0.01,
              max=60.0),
    ParamSpec('settle_s', 6.0, 'Seconds after a change before metrics count; at least the monitor window_s '
              'plus its publish_period_s, so a window holds only the new setting.', min=0.0, max=3600.0),
    ParamSpec('cooldown_s', 6.0, 'Least seconds between two changes (a revert of a failed probe is exempt).',
              min=0.0, max=3600.0),
    ParamSpec('headroom', 0.15, 'Hysteresis: explore for throughput only while p99 < (1 - headroom) x '
              'budget.', min=0.0, max=0.9),
    ParamSpec('margin', 0.05, 'A probe is kept only with p99 <= (1 - margin) x budget (<= headroom).',
              min=0.0, max=0.9),
    ParamSpec('min_gain', 0.03, 'A change is kept only when it improves the objective (or the overshoot) by '
              'this fraction.', min=0.0, max=1.0),
    ParamSpec('confirm_windows', 2, 'Windows in a row over budget before reacting, and windows after a '
              'change that must together say it did not help before it is reverted (filters one-off spikes).',
              min=1, max=100),
    ParamSpec('max_changes_per_min', 20, 'Most changes applied in any 60 s (reverts of a failed probe count '
              'and are exempt); 0 = no bound. With the tried/bad sets this keeps the loop from oscillating.',
              min=0, max=10000),
    ParamSpec('give_up_after', 12, "Fix attempts without a window within budget, or a 10 % fall of the "
              "lowest p99, before the budget is reported impossible ('budget cannot be met: best achievable "
              "p99 ...') and the lowest-p99 setting measured is held; 0 = only once no change is left to "
              'try. A load change starts over.',
              min=0, max=10000),
    ParamSpec('window_source', 'metrics', "Where windows come from: 'metrics' (the perf_monitor's "
              "/performance_metrics, windows of its window_s) or 'stage_times' (the target's per-frame "
              'reports, read directly: windows of window_frames frames, shorter as the frame rate rises).',
              choices=('metrics', 'stage_times')),
    ParamSpec('stage_topic', '', "With window_source stage_times: the target's stage-report topic; '' = "
              '<target_node>/stage_times.'),
    ParamSpec('settle_frames', 60, 'stage_times windows: frames to let pass after a change before measuring '
              '(bounded by min_settle_s and max_window_s).', min=0, max=100000),
    ParamSpec('window_frames', 300, 'stage_times windows: frames one window aims at (a p99 needs a few '
              'hundred); bounded by min_window_s and max_window_s.', min=1, max=1000000),
    ParamSpec('min_settle_s', 0.2, 'stage_times windows: least seconds to settle after a change.', min=0.0,
              max=600.0),
    ParamSpec('min_window_s', 0.5, 'stage_times windows: shortest window in seconds.', min=0.01, max=600.0),
    ParamSpec('max_window_s', 4.0, 'stage_times windows: longest settle or window in seconds (at a low '
              'frame rate).', min=0.05, max=600.0),
    ParamSpec('plan_start', True, "Start (and re-plan after a load change) from the setting the target's "
              'latency-per-batch curve predicts (its /diagnostics batch_latency_ms), then search from '
              'there.'),
    ParamSpec('load_margin', 0.5, 'Plan: capacity to keep above the offered rate (0.5 = the GPU at most '
              '2/3 busy).', min=0.0, max=10.0),
    ParamSpec('plan_overhead_ms', 1.0, 'Plan: host milliseconds per batch the engine curve does not see '
              '(staging, launches, publishing); raised to what a saturated window shows.', min=0.0,
              max=1000.0),
    ParamSpec('plan_per_frame_ms', 0.2, 'Plan: host milliseconds per frame the engine curve does not see.',
              min=0.0, max=1000.0),
    ParamSpec('load_change_ratio', 0.3, "A change of the target's received frame rate by more than this "
              'fraction, for 3 diagnostics samples in a row, counts as a load change (so does a change of '
              'its camera_topics): forget the measurements, re-plan, search again.', min=0.05, max=10.0),
    ParamSpec('tune_params', list(DEFAULT_KNOBS), 'Parameters of the target the tuner may change (add '
              'num_gpus to let it change how many GPUs the batcher uses, up to max_gpus).',
              check=_check_knobs),
    ParamSpec('max_gpus', 1, "Most GPUs the num_gpus knob may use (set as the target's gpu_ids = "
              "[0 .. n-1]); at most the GPUs of the target's machine (it refuses more).", min=1, max=64),
    ParamSpec('batch_size_min', 1, 'Lowest max_batch_size to set.', min=1, max=256),
    ParamSpec('batch_size_max', 64, 'Highest max_batch_size to set.', min=1, max=256),
    ParamSpec('queue_delay_ms_min', 0.0, 'Lowest max_queue_delay_ms to set.', min=0.0, max=1000.0),
    ParamSpec('queue_delay_ms_max', 20.0, 'Highest max_queue_delay_ms to set.', min=0.0, max=1000.0),
    ParamSpec('num_streams_min', 1, 'Fewest num_streams to set.', min=1, max=16),
    ParamSpec('num_streams_max', 4, 'Most num_streams to set.', min=1, max=16),
    ParamSpec('queue_depth_min', 1, 'Lowest queue_depth to set.', min=1, max=1000),
    ParamSpec('queue_depth_max', 1000, 'Highest queue_depth to set.', min=1, max=1000),
    ParamSpec('cameras', 0, "Cameras feeding the target (sizes queue_depth); 0 = the length of the target's "
              'camera_topics parameter, when it has one.', min=0, max=1024),
    ParamSpec('metrics_topic', '/performance_metrics', 'The perf_monitor metrics topic.'),
    ParamSpec('fps_field', 'pipeline_fps', 'Metrics label holding the pipeline throughput (frames/s).'),
    ParamSpec('latency_p99_field', 'pipeline_latency_ms_p99', 'Metrics label holding the p99 latency (ms).'),
    ParamSpec('latency_p50_field', 'pipeline_latency_ms_p50',
              "Metrics label holding the p50 latency (ms); '' = none."),
    ParamSpec('jitter_field', '', "Metrics label holding the latency jitter (ms); '' = none."),
    ParamSpec('gpu_util_field', 'gpu_util_percent_max',
              "Metrics label holding GPU utilisation (%); '' = none."),
    ParamSpec('batch_size_field', '', "Metrics label holding the mean batch size, e.g. "
              "'stages:/stream_batcher/stage_times:batch_size_mean'; '' = none."),
    ParamSpec('drops_field', '', "Metrics label whose positive value means frames are dropped; '' = none."),
    ParamSpec('metrics_timeout_s', 10.0, 'Metrics older than this are ignored (and the loop waits).', min=0.1,
              max=3600.0),
    ParamSpec('watch_topics', [''], "Topics to watch for QoS events and incompatible pairs; [''] = none.",
              check=_check_topics),
    ParamSpec('expected_rate_hz', 30.0, 'Expected rate of the watched topics (0 = unknown); sets the '
              'requested deadline to 1.5 periods when their publishers offer one.', min=0.0, max=1e6),
    ParamSpec('graph_check_period_s', 2.0, 'Seconds between QoS compatibility checks of the watched topics.',
              min=0.1, max=3600.0),
    ParamSpec('output_dir', '~/.ros/isaac_perf',
              'The only folder this node writes into (read-only: set at start-up). output_config_path is '
              'resolved inside it; `..`, paths outside it and files it did not write are refused.',
              read_only=True),
    ParamSpec('output_config_path', '',
              "Where to write the tuned parameters (ROS 2 params YAML), a file name inside output_dir (or an "
              "absolute path inside it); '' = nowhere."),
    ParamSpec('service_timeout_s', 3.0, 'Seconds to wait for the target to answer a parameter request.',
              min=0.1, max=600.0),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status of this node (read at start).',
              min=0.1, max=60.0, read_only=True),
]

CONTROLLER_PARAMS = {'latency_budget_ms', 'min_fps', 'max_jitter_ms', 'objective', 'settle_s', 'cooldown_s',
                     'headroom', 'margin', 'min_gain', 'confirm_windows', 'tune_params', 'batch_size_min',
                     'batch_size_max', 'queue_delay_ms_min', 'queue_delay_ms_max', 'num_streams_min',
                     'num_streams_max', 'queue_depth_min', 'queue_depth_max', 'max_gpus',
                     'max_changes_per_min', 'window_source', 'give_up_after'}


def cross_check(values: dict[str, Any]) -> list[str]:
    errors = []
    for low, high in (('batch_size_min', 'batch_size_max'), ('queue_delay_ms_min', 'queue_delay_ms_max'),
                      ('num_streams_min', 'num_streams_max'), ('queue_depth_min', 'queue_depth_max')):
        if values[low] > values[high]:
            errors.append(f'{low}={values[low]} is above {high}={values[high]}')
    if values['min_settle_s'] > values['max_window_s'] or values['min_window_s'] > values['max_window_s']:
        errors.append(f'min_settle_s={values["min_settle_s"]} and min_window_s={values["min_window_s"]} must '
                      f'not exceed max_window_s={values["max_window_s"]}')
    if values['margin'] > values['headroom']:
        errors.append(f'margin={values["margin"]} must not exceed headroom={values["headroom"]}')
    if values['output_config_path']:
        try:
            check_writable(output_dir(values), values['output_config_path'], 'output_config_path')
        except OutputPathError as exc:
            errors.append(str(exc))
    return errors


def output_dir(values: dict[str, Any]) -> str:
    return os.path.expanduser(values['output_dir'])


def controller_from(values: dict[str, Any], knobs: list[Knob]) -> RealtimeController:
    req = Requirements(max_latency_ms=values['latency_budget_ms'], min_fps=values['min_fps'],
                       jitter_tolerance_ms=values['max_jitter_ms'] or None)
    # stage_times windows settle themselves (they start settle_frames after the change): no extra wait
    settle = 0.0 if values['window_source'] == 'stage_times' else values['settle_s']
    return RealtimeController(req, knobs, objective=values['objective'], cooldown_s=values['cooldown_s'],
                              settle_s=settle, headroom=values['headroom'],
                              margin=values['margin'], min_gain=values['min_gain'],
                              confirm_windows=values['confirm_windows'],
                              max_changes_per_min=values['max_changes_per_min'],
                              give_up_after=values['give_up_after'])


def window_policy_from(values: dict[str, Any]) -> WindowPolicy:
    return WindowPolicy(settle_frames=values['settle_frames'], window_frames=values['window_frames'],
                        min_settle_s=values['min_settle_s'], min_window_s=values['min_window_s'],
                        max_s=values['max_window_s'])
