"""Diagnostics tasks without ROS (core.telemetry.health), and the Updater over real rclpy."""
import os

import pytest

from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import Status, run_task


def test_merge_summary_escalates_and_joins_equal_levels():
    s = Status()
    s.merge_summary(Level.WARN, 'slow')
    s.merge_summary(Level.OK, 'fine')
    assert (s.level, s.message) == (Level.WARN, 'slow')
    s.merge_summary(Level.WARN, 'drops')
    assert s.message == 'slow; drops'
    s.merge_summary(Level.ERROR, 'no engine')
    assert (s.level, s.message) == (Level.ERROR, 'no engine')


def test_a_failing_task_becomes_an_error_status():
    def broken(stat):
        raise RuntimeError('boom')
    status = run_task('x', broken)
    assert status.level == Level.ERROR and 'RuntimeError: boom' in status.message


@pytest.mark.ros
def test_updater_publishes_named_statuses_over_dds():
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from isaac_perf.ros.diagnostics import Updater

    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('health_probe', context=context)
        updater = Updater(node, period_s=0.05)

        def engine(stat):
            stat.summary(Level.WARN, 'loading the engine')
            stat.add('frames_dropped', 3)
        updater.add('engine', engine)
        got = []
        node.create_subscription(DiagnosticArray, '/diagnostics', got.append, 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        for _ in range(200):
            executor.spin_once(timeout_sec=0.05)
            if got:
                break
        assert got, 'no /diagnostics within 10 s'
        status = got[0].status[0]
        assert status.name == 'health_probe: engine' and status.level == b'\x01'
        assert status.message == 'loading the engine'
        # the node's own values, then who it is (the monitor matches GPU processes to nodes by `pid`)
        assert {(kv.key, kv.value) for kv in status.values} == {('frames_dropped', '3'),
                                                                ('node', 'health_probe'),
                                                                ('pid', str(os.getpid()))}
        updater.destroy()
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
