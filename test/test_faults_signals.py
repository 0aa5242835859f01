"""Signals as a terminal and `ros2 launch` send them, to separate processes: SIGINT to the process group
twice (the terminal's, then launch's), SIGTERM, SIGINT then SIGTERM, a signal during a slow start-up.
Every case: exit 0 within 5 s of the first signal, no traceback, no error line; and the process answered
on the graph before it was stopped. Start-up refusals: one line, exit 2."""
import signal

import pytest
from procs import PY, NodeProcess, fault_node

rclpy = pytest.importorskip('rclpy')

STOP_LIMIT_S = 5.0  # the bound: exit within 5 s of Ctrl-C


def _answers(ros_context, spin, name: str) -> bool:
    """The process's node is on the graph and its parameter service answers."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter_client import AsyncParameterClient
    probe = rclpy.create_node('fault_probe', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(probe)
    try:
        client = AsyncParameterClient(probe, name)
        if not spin(executor, lambda: client.services_are_ready(), 30.0):
            return False
        future = client.list_parameters([], 1)
        return spin(executor, future.done, 20.0) and future.result() is not None
    finally:
        executor.shutdown()
        probe.destroy_node()


def assert_clean_stop(proc: NodeProcess, code) -> None:
    assert code == 0, f'exit code {code}\n{proc.output[-3000:]}'
    assert proc.stop_seconds is not None and proc.stop_seconds < STOP_LIMIT_S, proc.stop_seconds
    assert proc.bad_lines() == [], proc.output[-3000:]


@pytest.mark.parametrize('signals', [
    (signal.SIGINT, signal.SIGINT),  # terminal Ctrl-C to the group, then launch forwards it
    (signal.SIGTERM,),
    (signal.SIGINT, signal.SIGTERM),  # launch escalates while the node is still stopping
    (signal.SIGINT, signal.SIGINT, signal.SIGINT, signal.SIGTERM),
], ids=['int-int', 'term', 'int-term', 'int-x3-term'])
def test_fault_node_stops_in_order_on_group_signals(ros_context, spin, signals):
    proc = fault_node('destroy_s:=0.5')  # the clean-up takes a while: later signals land inside it
    try:
        assert proc.wait_for('fault_node ready'), proc.output
        assert _answers(ros_context, spin, '/fault_node')
        proc.signal_group(*signals, gap_s=0.2)
        assert_clean_stop(proc, proc.wait())
    finally:
        proc.kill()


def test_signal_during_slow_construction_stops_cleanly():
    proc = fault_node('construct_s:=2.0')
    try:
        assert proc.wait_for('fault_node constructing', 60), proc.output  # the signal lands in the 2 s
        assert 'fault_node ready' not in proc.output
        proc.signal_group(signal.SIGINT, signal.SIGINT)
        assert_clean_stop(proc, proc.wait())
    finally:
        proc.kill()


@pytest.mark.parametrize(('params', 'words'), [
    (('fail:=startup',), "cannot start: fail='startup' asked for a refusal"),
    (('construct_s:=abc',), "parameter 'construct_s' to 'abc'"),
    (('topic:=a b',), "Invalid topic name"),
    (('topic:=',), "parameter 'topic' has no value"),
])
def test_startup_refusal_is_one_line_exit_2(params, words):
    proc = fault_node(*params)
    code = proc.wait(60)
    lines = [line for line in ''.join(proc.stderr).splitlines() if line.strip()]
    assert code == 2, proc.output
    assert len(lines) == 1 and words in lines[0] and 'cannot start' in lines[0], lines
    assert 'Traceback' not in proc.output


def test_a_constructor_bug_still_shows_its_traceback():
    """Only the user's input becomes a one-line refusal: a bug keeps its traceback and exit 1."""
    proc = fault_node('fail:=bug')
    assert proc.wait(60) == 1
    assert 'Traceback' in proc.output and 'a bug in the constructor' in proc.output


def test_isaac_perf_run_stops_cleanly_on_group_sigint():
    proc = NodeProcess([PY, '-m', 'isaac_perf.cli', 'run', '--duration', '0', '--quiet', '--rate', '10',
                        '--width', '160', '--height', '120', '--model', 'detector',
                        '--backend', 'onnxruntime', '--no-monitor'])
    try:
        assert proc.wait_for('publishing 1 camera(s)', 180), proc.output[-3000:]
        proc.signal_group(signal.SIGINT, signal.SIGINT)
        code = proc.wait()
        assert_clean_stop(proc, code)
        assert 'published' in proc.output and 'inferred' in proc.output  # the report still comes
    finally:
        proc.kill()


def test_two_nodes_with_one_name_are_reported_and_both_stop_cleanly():
    """Item 12: two nodes with the same name were not reported."""
    first, second = fault_node(), fault_node()
    try:
        assert first.wait_for('fault_node ready') and second.wait_for('fault_node ready')
        words = '2 nodes are named /fault_node on this ROS domain'
        assert first.wait_for(words, 20) and second.wait_for(words, 20), first.output + second.output
        for proc in (first, second):
            proc.signal_group(signal.SIGINT, signal.SIGINT)
            assert_clean_stop(proc, proc.wait())
    finally:
        first.kill()
        second.kill()


def test_the_process_reads_as_stopping_from_the_first_request_until_the_stop_is_done():
    from isaac_perf.core.shutdown import OrderlyStop, stopping
    assert not stopping()
    with OrderlyStop('probe', deadline_s=0, keep_ignoring=False) as stop:  # pytest keeps its Ctrl-C
        assert not stopping()
        stop.request()
        assert stopping()  # what peers could not finish sending is counted now, not logged
    assert not stopping()
