"""Start-up refusals of the camera/inference nodes: one stderr line naming the parameter, exit code 2, no
traceback (real processes through each node's main()); and a refused node holds nothing afterwards."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.parameter import Parameter  # noqa: E402

from isaac_perf.nodes.image_source import ImageSource  # noqa: E402
from isaac_perf.nodes.inference import InferenceNode  # noqa: E402
from isaac_perf.nodes.stream_batcher import StreamBatcher  # noqa: E402
from isaac_perf.ros.node_main import StartupError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

REFUSALS = [
    ('isaac_perf.nodes.inference', 'input_topics:=[""]', 'input_topics is empty'),
    ('isaac_perf.nodes.inference', 'max_batch_size:=0', 'max_batch_size out of range'),
    ('isaac_perf.nodes.stream_batcher', 'camera_topics:=["/a","/a"]', 'camera_topics has duplicates'),
    ('isaac_perf.nodes.stream_batcher', 'num_streams:=abc', "parameter 'num_streams'"),
    ('isaac_perf.nodes.image_source', 'encoding:=yuv9', 'encoding=\'yuv9\' is not one of'),
]


@pytest.mark.parametrize(('module', 'override', 'words'), REFUSALS)
def test_bad_start_up_parameter_exits_2_with_one_line(module, override, words):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    result = subprocess.run([sys.executable, '-m', module, '--ros-args', '-p', override], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and 'cannot start' in lines[0] and words in lines[0], lines
    assert 'Traceback' not in result.stderr


def half_built(factory, context, params):
    """A node whose constructor refused its parameters, kept (as a subclass can) to be destroyed."""
    class Kept(factory):
        def __init__(self, **kwargs):
            try:
                super().__init__(**kwargs)
            except StartupError as exc:
                self.refusal = str(exc)
    return Kept(node_name='half_built', context=context,
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.mark.parametrize(('factory', 'params'), [
    (InferenceNode, {'input_topics': ['/x', '/x']}),
    (StreamBatcher, {'camera_topics': [''], 'device': 'cpu'}),
    (ImageSource, {'rate_hz': 0.0}),
])
def test_half_built_node_raises_startup_error_and_destroys_cleanly(ros_context, factory, params):
    with pytest.raises(StartupError, match='invalid start-up parameters'):
        factory(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    node = half_built(factory, ros_context, params)
    assert 'invalid start-up parameters' in node.refusal
    node.destroy_node()  # no AttributeError: what destroy_node touches exists before anything can fail
    probe = rclpy.create_node('startup_probe', context=ros_context)
    try:
        assert 'startup_probe' in probe.get_node_names() and 'half_built' not in probe.get_node_names()
    finally:
        probe.destroy_node()


def test_ctrl_c_during_start_up_ends_quietly():
    """SIGINT shuts the context down while a constructor still creates entities (stream_batcher's start-up
    takes seconds): the failure that follows is a stop, exit 0, no traceback."""
    script = ('import rclpy\n'
              'from rclpy.node import Node\n'
              'from std_msgs.msg import Empty\n'
              'from isaac_perf.ros.node_main import run_node\n'
              'def slow_start():\n'
              '    node = Node("slow_start")\n'
              '    rclpy.shutdown()  # what the SIGINT handler does while the constructor runs\n'
              '    node.create_publisher(Empty, "late", 1)\n'
              '    return node\n'
              'print("returned", run_node(slow_start))\n')
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and 'returned 0' in result.stdout, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
