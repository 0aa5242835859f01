"""The one `main()` every node has: build inside `try`, spin, shut down cleanly on every path.

    def main(args=None):
        run_node(PerfMonitor, args)

A constructor that refuses its start-up parameters raises `StartupError` (a ValueError naming the
parameter and the fix): it is printed as one line on stderr and the process exits with code 2, with no
traceback. Ctrl-C (KeyboardInterrupt) and an external shutdown end the spin quietly; the node is
destroyed only if it was built, and the context is shut down exactly once.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from isaac_perf.ros.compat import try_shutdown


class StartupError(ValueError):
    """A node cannot start with the parameters it was given; the message says which one and what to do."""


def run_node(factory: Callable[[], Node], args: list[str] | None = None,
             executor_factory: Callable[[], Executor] = SingleThreadedExecutor) -> int:
    """Initialise rclpy, build the node, spin it on a new executor, and always clean up."""
    rclpy.init(args=args)
    node: Node | None = None
    executor: Executor | None = None
    code = 0
    try:
        node = factory()
        executor = executor_factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        print(f'[{getattr(factory, "__name__", "node")}] cannot start: {exc}', file=sys.stderr)
        code = 2
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C during a slow start-up shut the context down under the constructor: a stop, not a crash.
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        try_shutdown()  # rclpy.try_shutdown is Iron+
    if code:
        sys.exit(code)
    return code
