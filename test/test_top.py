"""`isaac-perf top`: plain-text and rich rendering of real /performance_metrics and /diagnostics messages."""
import argparse
import io
import threading

import pytest

from isaac_perf.app import top
from isaac_perf.core.telemetry import metrics


def _metrics_fields():
    global_values = {'cpu_percent': 23.5, 'memory_percent': 41.0, 'gpu_count': 1, 'pipeline_fps': 29.8,
                     'pipeline_latency_ms_p50': 12.25, 'pipeline_latency_ms_p99': 30.5, 'alerts_warn': 1,
                     'alerts_error': 0}
    blocks = [
        metrics.Block('gpu', '0', {'util_percent': 45, 'memory_used_mib': 1234, 'memory_total_mib': 81559,
                                   'memory_used_fraction': 0.015, 'temperature_c': 40, 'power_w': 120,
                                   'power_limit_w': 700, 'level': 0}),
        metrics.Block('topic', '/camera_0/image_raw', {'rate_hz': 12.0, 'expected_rate_hz': 30.0,
                                                       'latency_ms_p50': 2.5, 'latency_ms_p99': 5.25,
                                                       'jitter_ms': 0.5, 'drops': 3, 'level': 1}),
        metrics.Block('stages', '/inference_node/stage_times',
                      {'fps': 29.9, 'latency_ms_p50': 11.0, 'latency_ms_p99': 20.0, 'batch_size_mean': 1,
                       'pre_ms_mean': 1.25, 'infer_ms_mean': 8.5, 'level': 0},
                      extra=metrics.stage_extra_fields(['pre', 'infer'])),
    ]
    return metrics.flatten(global_values, blocks)


EXPECTED_LINES = [
    'HOST cpu 23.5% (max core -%)  mem 41.0%  gpus 1  pipeline 29.8 fps  latency p50 12.2 ms p99 30.5 ms  '
    'alerts warn 1 error 0',
    'GPU 0: util 45%  mem 1234/81559 MiB  temp 40 C  power 120/700 W  [OK]',
    'TOPIC /camera_0/image_raw: 12.0 Hz (expected 30.0)  latency p50 2.50 p99 5.25 ms  jitter 0.50 ms  '
    'drops 3  - MB/s  [WARN]',
    'STAGES /inference_node/stage_times: 29.9 fps  latency p50 11.00 p99 20.00 ms  batch 1.0  | '
    'pre 1.25  infer 8.50 ms  [OK]',
    'ALERT WARN /camera_0/image_raw: rate 12.0 Hz below the expected 30.0 Hz',
]


def _args(**kw):
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    return parser.parse_args([f'--{k.replace("_", "-")}' if v is True else f'--{k.replace("_", "-")}={v}'
                              for k, v in kw.items()])


@pytest.mark.ros
def test_once_renders_a_real_message_as_plain_text(ros_context):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node
    from std_msgs.msg import Float32MultiArray, MultiArrayDimension

    labels, values = _metrics_fields()
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=name, size=1, stride=1) for name in labels]
    msg.data = values
    diag = DiagnosticArray(status=[
        DiagnosticStatus(level=DiagnosticStatus.WARN, name='/camera_0/image_raw',
                         message='rate 12.0 Hz below the expected 30.0 Hz',
                         values=[KeyValue(key='frame_rate_msg', value='12.0')]),
        DiagnosticStatus(level=DiagnosticStatus.OK, name='perf_monitor: gpu0', message='ok')])
    node = Node('test_top_publisher', context=ros_context)
    metrics_pub = node.create_publisher(Float32MultiArray, '/performance_metrics', 10)
    diag_pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
    stop = threading.Event()

    def publish():
        while not stop.wait(0.1):
            diag_pub.publish(diag)
            metrics_pub.publish(msg)

    publisher = threading.Thread(target=publish)
    publisher.start()
    out = io.StringIO()  # not a TTY: plain text
    try:
        rc = top.run(_args(once=True, timeout=10, period=0.3), context=ros_context, stream=out)
    finally:
        stop.set()
        publisher.join()
        node.destroy_node()
    assert rc == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith('isaac-perf top  ')
    assert lines[1].startswith(EXPECTED_LINES[0])  # then '(age ...)'
    assert lines[2:] == EXPECTED_LINES[1:]


@pytest.mark.ros
def test_once_without_a_monitor_says_so(ros_context, capsys):
    rc = top.run(_args(once=True, timeout=0.5, metrics_topic='/no_monitor_here'), context=ros_context,
                 stream=io.StringIO())
    assert rc == 1
    assert 'no /no_monitor_here message within' in capsys.readouterr().err


def test_plain_render_before_any_message():
    assert 'waiting for /performance_metrics' in top.render_plain(top.TopState(), now=0.0)


def test_rich_render_highlights_alerts():
    from rich.console import Console
    state = top.TopState()
    state.on_metrics(*_metrics_fields(), now=100.0)
    state.on_status('/camera_0/image_raw', 2, 'no messages for 3 s', {}, now=100.0)
    state.on_status('perf_monitor: host vm', 0, 'ok', {}, now=100.0)
    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=True, color_system='standard').print(
        top.render_rich(state, now=101.0))
    text = buffer.getvalue()
    assert 'Topics' in text and '/camera_0/image_raw' in text and 'Stage times' in text
    assert 'no messages for 3 s' in text
    assert '\x1b[1;31mERROR' in text  # the alert is bold red
    assert 'perf_monitor: host vm' not in text  # OK statuses are not alerts


def test_status_memory_is_bounded():
    state = top.TopState()
    for i in range(top.MAX_STATUSES + 50):
        state.on_status(f's{i}', 1, 'warn', {}, now=float(i))
    assert len(state.statuses) == top.MAX_STATUSES
    assert 's0' not in state.statuses and f's{top.MAX_STATUSES + 49}' in state.statuses


def test_gpm_transport_loss_engine_batch_and_node_gpu_use_are_shown():
    labels, values = metrics.flatten({'gpu_count': 1}, [
        metrics.Block('gpu', '0', {'util_percent': 30, 'sm_active_percent': 28.0,
                                   'sm_occupancy_percent': 40.0, 'tensor_active_percent': 0.2,
                                   'dram_bw_util_percent': 6.8, 'fp32_active_percent': 12.0, 'level': 0}),
        metrics.Block('topic', '/cam', {'rate_hz': 9.6, 'publisher_rate_hz': 30.0,
                                        'transport_loss_percent': 68.0, 'level': 0}),
        metrics.Block('stages', '/stream_batcher/stage_times', {'fps': 120.0, 'engine_batch_size_mean': 3.5,
                                                                'engine_batch_size_max': 4, 'level': 0}),
        metrics.Block('node', 'inference_node', {'pid': 4242, 'gpu_memory_mib': 1024,
                                                 'gpu_sm_util_percent': 32, 'gpu_count': 1}),
    ])
    state = top.TopState()
    state.on_metrics(labels, values, 0.0)
    text = top.render_plain(state, now=0.0)
    assert ('[OK]  | SM active 28.0%  occupancy 40.0%  tensor 0.2%  DRAM bw 6.8%\n'
            '  GPU 30% busy but tensor cores idle (0.2% active): FP32 pipes are busy: FP16/BF16 (or TF32) '
            'would move the math onto tensor cores') in text
    assert '  | sent 30.0 Hz, lost in transport 68.0%' in text
    assert '  engine batch 3.5 (max 4)' in text
    assert 'NODE inference_node (pid 4242): GPU 1024 MiB  SM 32%  on 1 GPU(s)' in text
    rich_text = _render_rich_text(state)
    assert 'tensor %' in rich_text and 'sent Hz' in rich_text and 'engine batch' in rich_text


def _render_rich_text(state):
    from rich.console import Console
    console = Console(file=io.StringIO(), width=250)
    console.print(top.render_rich(state, now=0.0))
    return console.file.getvalue()
