"""Test set-up: DDS isolated per test run (random domain, localhost discovery), real rclpy contexts."""
import os
import random
import time

import pytest

# Before any rclpy import: every test run gets its own DDS domain, discovery kept on this host.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid() ^ time.time_ns()).randint(120, 230)))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'

# ISAAC_PERF_RCLPY_API=humble: run on rclpy's Humble API surface. No Humble wheels exist (Humble is Python
# 3.10 and apt-only), so the Iron+ additions the package could reach are removed from this rclpy before any
# test imports it: Node's pre/post-set parameter callbacks and rclpy.try_shutdown (rclpy humble branch:
# rclpy/node.py has only add/remove_on_set_parameters_callback; rclpy/__init__.py has no try_shutdown;
# rclpy/qos.py's QoSPresetProfiles has no DEFAULT and no BEST_AVAILABLE).
# test_humble_api.py runs the node tests this way; Humble's take_message info is tested there directly.
HUMBLE_REMOVED = ('add_pre_set_parameters_callback', 'remove_pre_set_parameters_callback',
                  'add_post_set_parameters_callback', 'remove_post_set_parameters_callback')
if os.environ.get('ISAAC_PERF_RCLPY_API') == 'humble':
    import rclpy
    from rclpy.node import Node
    for _name in HUMBLE_REMOVED:
        if hasattr(Node, _name):
            delattr(Node, _name)
    if hasattr(rclpy, 'try_shutdown'):
        del rclpy.try_shutdown
    from rclpy.qos import QoSPresetProfiles
    for _name in ('DEFAULT', 'BEST_AVAILABLE'):  # Enum members cannot be deleted: hide them from lookups
        QoSPresetProfiles._member_map_.pop(_name, None)
        if _name in QoSPresetProfiles._member_names_:
            QoSPresetProfiles._member_names_.remove(_name)


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
    from rclpy._rclpy_pybind11 import InvalidHandle
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        try:
            executor.spin_once(timeout_sec=step_s)
        except InvalidHandle:
            # rclpy's multi-threaded executors race with an entity that a callback on another thread
            # destroys (a subscription recreated by a parameter change): the wait set being built names
            # it. The nodes spin single-threaded under launch, and `isaac-perf run` logs this and spins
            # on; so does this helper, and the test's own assertions still judge the outcome.
            continue
    return bool(predicate())


@pytest.fixture
def spin():
    return spin_until
