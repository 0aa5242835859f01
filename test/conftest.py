"""Test set-up: DDS isolated per test run (random domain, localhost discovery), real rclpy contexts."""
import os
import random
import time

import pytest

# Before any rclpy import: every test run gets its own DDS domain, discovery kept on this host.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid() ^ time.time_ns()).randint(120, 230)))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


@pytest.fixture
def ros_context():
    """A fresh rclpy Context, initialised for one test and shut down after it."""
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


def spin_until(executor, predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    """Spin `executor` until `predicate()` is true or `timeout_s` passes; return the predicate's value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step_s)
    return bool(predicate())


@pytest.fixture
def spin():
    return spin_until
