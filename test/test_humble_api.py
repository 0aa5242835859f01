"""The package on rclpy's Humble API surface (rclpy 3.3): what Iron+ added is feature-detected, not assumed.

Humble has no wheels for this Python, so the Humble surface is produced from this rclpy by removing what
later distros added (conftest.py, ISAAC_PERF_RCLPY_API=humble) and the node tests run against it; the
pieces below check the compatibility layer itself on a real node over real DDS.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from isaac_perf.core.params import ParamSpec
from isaac_perf.ros import compat
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.topic_watch import StreamStats, TopicWatch  # via topic_watch: core/ is being regrouped

ROOT = Path(__file__).resolve().parents[1]
NODE_TESTS = ['test_params.py', 'test_image_source_node.py', 'test_inference_node.py',
              'test_perf_monitor_node.py', 'test_qos_tuner_node.py', 'test_stream_batcher_node.py']


class HumbleNode(Node):
    """A Node as Humble's rclpy has it: no pre/post-set parameter callbacks."""

    def __getattribute__(self, name):
        if name in ('add_post_set_parameters_callback', 'add_pre_set_parameters_callback'):
            raise AttributeError(f"Humble's rclpy Node has no {name}")
        return super().__getattribute__(name)


SPECS = [ParamSpec('rate_hz', 30.0, 'Frames per second.', min=0.1, max=1000.0),
         ParamSpec('backend', 'auto', 'Backend.', choices=('auto', 'torch'))]


def test_post_set_callbacks_are_emulated_after_the_values_are_stored(ros_context):
    node = HumbleNode('humble_params', context=ros_context)
    seen = []
    try:
        assert not compat.has_post_set_callbacks(node)

        def on_change(changes):  # the new value must already be readable, as Jazzy's post-set gives it
            seen.append((changes, node.get_parameter('rate_hz').value))
        declare_params(node, SPECS, on_change=on_change)
        refused = node.set_parameters([Parameter('backend', value='tvm')])[0]
        assert not refused.successful and seen == []
        assert node.set_parameters([Parameter('rate_hz', value=12.5)])[0].successful
        assert seen == [({'rate_hz': 12.5}, 12.5)]
        assert node.set_parameters_atomically([Parameter('rate_hz', value=7.0)]).successful
        assert seen[-1] == ({'rate_hz': 7.0}, 7.0)
        assert node._post_set_parameters_callbacks == []  # the native (Iron+) list was never used
    finally:
        node.destroy_node()


def test_native_post_set_callbacks_are_used_where_rclpy_has_them(ros_context):
    if not hasattr(Node, 'add_post_set_parameters_callback'):
        pytest.skip('this run emulates Humble: no native post-set callbacks')
    node = rclpy.create_node('native_params', context=ros_context)
    try:
        declare_params(node, SPECS, on_change=lambda c: None)
        assert len(node._post_set_parameters_callbacks) == 1
        assert '_isaac_perf_post_set_callbacks' not in node.__dict__
    finally:
        node.destroy_node()


class HumbleTakeSubscription:
    """A real subscription whose take_message returns Humble's message info: timestamps only."""

    class Handle:
        def __init__(self, handle):
            self._handle = handle

        def __enter__(self):
            return self._handle.__enter__()

        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

        def take_message(self, msg_type, raw):
            got = self._handle.take_message(msg_type, raw)
            if got is None:
                return None
            data, info = got
            return data, {k: info[k] for k in ('source_timestamp', 'received_timestamp')}

    def __init__(self, sub):
        self.sub = sub
        self.handle = self.Handle(sub.handle)
        self.msg_type = sub.msg_type


def test_topic_watch_drains_humble_message_info_without_sequence_numbers(ros_context):
    node = rclpy.create_node('humble_watch', context=ros_context)
    sub_node = rclpy.create_node('humble_watch_sub', context=ros_context)
    pub = node.create_publisher(Header, '/humble_watch', 10)
    stats = StreamStats(capacity=64)
    watch = TopicWatch(node, '/humble_watch', stats, mode='poll', sub_node=sub_node, depth=50)
    try:
        deadline = time.monotonic() + 10
        while not watch.try_subscribe(dict(node.get_topic_names_and_types())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.subscribed
        real = watch.subscription
        watch.subscription = HumbleTakeSubscription(real)
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(5):
            pub.publish(Header(frame_id=str(i)))
        taken = 0
        while taken < 5 and time.monotonic() < deadline:
            taken += watch.drain()
            time.sleep(0.02)
        assert taken == 5 and stats.count == 5
        assert stats.drops == 0  # no sequence numbers: nothing is counted as lost
        watch.subscription = real
    finally:
        watch.destroy()
        sub_node.destroy_node()
        node.destroy_node()


@pytest.mark.slow
def test_node_tests_pass_on_the_humble_api_surface():
    env = dict(os.environ, ISAAC_PERF_RCLPY_API='humble')
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *NODE_TESTS],
                            cwd=ROOT / 'test', env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ' passed' in result.stdout and ' failed' not in result.stdout


def test_humble_surface_really_lacks_the_iron_api():
    """Guards the emulation itself: under ISAAC_PERF_RCLPY_API=humble the Iron+ calls are gone."""
    code = ('import conftest, rclpy; from rclpy.node import Node; '
            'assert not hasattr(Node, "add_post_set_parameters_callback"); '
            'assert not hasattr(rclpy, "try_shutdown"); '
            'from rclpy.qos import QoSPresetProfiles as P; assert "DEFAULT" not in P.__members__; '
            'from isaac_perf.ros.qos import qos_from_name; qos_from_name("DEFAULT", 5); '
            'print("humble surface")')
    env = dict(os.environ, ISAAC_PERF_RCLPY_API='humble')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT / 'test', env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and 'humble surface' in result.stdout, result.stderr
