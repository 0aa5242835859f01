"""A small node run through `run_node`, shaped like the real ones: a worker thread that publishes as fast
as it can (as stream_batcher's does), a subscription, a timer, and a destroy_node that joins the worker.
Used by the fault tests as a separate process: `python test/fault_node.py --ros-args -p ...`.

Parameters: construct_s (seconds the constructor takes, like a model load), destroy_s (seconds the
clean-up takes after the worker is joined), fail ('' | 'startup' | 'bug').
"""
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from isaac_perf.ros.node_main import StartupError, run_node  # noqa: E402


class FaultNode(Node):
    def __init__(self) -> None:
        super().__init__('fault_node')
        self.declare_parameter('construct_s', 0.0)
        self.declare_parameter('destroy_s', 0.0)
        self.declare_parameter('fail', '')
        self.declare_parameter('topic', 'fault_in')
        fail = self.get_parameter('fail').value
        if fail == 'startup':
            raise StartupError("fail='startup' asked for a refusal: set fail:='' to start")
        if fail == 'bug':
            raise RuntimeError('a bug in the constructor')
        print('fault_node constructing', flush=True)
        time.sleep(self.get_parameter('construct_s').value)
        self.pub = self.create_publisher(String, 'fault_out', 10)
        self.sub = self.create_subscription(String, self.get_parameter('topic').value, self._echo, 10)
        self.timer = self.create_timer(0.05, lambda: None)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._loop, name='fault_worker')
        self._worker.start()
        print('fault_node ready', flush=True)

    def _echo(self, msg: String) -> None:
        self.pub.publish(msg)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.pub.publish(String(data='busy'))
            time.sleep(0.001)

    def destroy_node(self) -> None:
        # Deliberately fragile, like a real node's: after a refused constructor `_stop` does not exist, and
        # run_node must still show the refusal alone (the context destroys the half-built node).
        self._stop.set()
        if getattr(self, '_worker', None) is not None:
            self._worker.join()
            time.sleep(self.get_parameter('destroy_s').value)
        super().destroy_node()


if __name__ == '__main__':
    run_node(FaultNode, executor_factory=MultiThreadedExecutor)
