"""The one `main()` every node has: build inside `try`, spin, stop in order on every path.

    def main(args=None):
        run_node(PerfMonitor, args)

Start-up refusals end as one line on stderr (`[<node>] cannot start: ...`) and exit code 2, with no
traceback: a constructor raising `StartupError` (a ValueError naming the parameter and the fix), a
parameter override of the wrong type or range, a topic or node name rcl refuses, unknown `--ros-args`, and
a params file that is not one (checked before rcl reads it, so the line names the file and the line).
Keys in the params files or `-p` overrides that the node does not declare are reported in one warning.

Ctrl-C and SIGTERM: the first one starts an orderly stop, later ones are ignored while it completes (see
`isaac_perf.core.shutdown`): the spin ends, the executor finishes the callbacks in flight, the node is
destroyed (its worker threads told and joined, its engine released), then the context is shut down, and
the process exits 0. rclpy's own signal handlers are not installed: they would raise KeyboardInterrupt
wherever the second signal lands and, on SIGTERM, shut the context down under running threads.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    NameValidationException,
    ParameterUninitializedException,
)
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from isaac_perf.core.params_yaml import (
    ParamsFileError,
    check_override_args,
    params_file_args,
    read_params_file,
    unknown_names,
)
from isaac_perf.core.shutdown import OrderlyStop
from isaac_perf.ros import executors
from isaac_perf.ros.compat import try_shutdown

SPIN_STEP_S = 0.1  # the spin returns to Python this often, so a signal is seen within it
DRAIN_S = 2.0  # callbacks in flight get this long to finish (the whole stop must fit in 5 s)
STOP_DEADLINE_S = 8.0  # launch sends SIGTERM 5 s after SIGINT and SIGKILL 5 s later



class StartupError(ValueError):
    """A node cannot start with the parameters it was given; the message says which one and what to do."""


# Exceptions a constructor raises because of what the user gave it, not because of a bug.
USER_INPUT_ERRORS = (StartupError, InvalidParameterTypeException, InvalidParameterValueException,
                     NameValidationException, ParameterUninitializedException, ParamsFileError)


def one_line(exc: BaseException) -> str:
    """An exception as one readable line: rclpy's name errors span three lines with a caret."""
    text = str(exc)
    if isinstance(exc, NameValidationException):
        lines = text.splitlines()
        head = lines[0].rstrip(':')
        name = lines[1].strip() if len(lines) > 1 else ''
        caret = lines[2].index('^') - 3 if len(lines) > 2 and '^' in lines[2] else -1
        text = f'{head}: {name}' + (f' (at character {caret})' if caret >= 0 else '')
        return text + ': fix the name (letters, digits, _ and /; not starting with a digit; at most 255)'
    if type(exc).__name__ == 'UnknownROSArgsError':
        return f'unknown ROS arguments {text}: see `ros2 run --help` and `--ros-args --help`'
    if isinstance(exc, ParameterUninitializedException):
        name = text.split("'")[1] if text.count("'") >= 2 else text
        return f"parameter '{name}' has no value: give one (e.g. -p {name}:=<value>) or leave it out"
    if isinstance(exc, InvalidParameterTypeException):
        return f'{text.rsplit(": ", 1)[0]}: give a value of the expected type'
    text = re.sub(r',? at /\S+:\d+', '', text)  # rcl's C source locations say nothing to a user
    return ' '.join(text.split())


def _node_label(factory: Callable[..., Node]) -> str:
    module = getattr(factory, '__module__', '') or ''
    return module.rsplit('.', 1)[-1] if module.startswith('isaac_perf.nodes.') else \
        getattr(factory, '__name__', 'node')


def _check_ros_args(args: list[str] | None) -> None:
    argv = sys.argv if args is None else args
    check_override_args(argv)
    for path in params_file_args(argv):
        read_params_file(path)  # raises ParamsFileError naming the file, the line and the fix


def _warn_unknown_overrides(node: Node) -> None:
    # rclpy keeps the overrides it was given (params files, -p, parameter_overrides) in this attribute;
    # a name never declared is silently ignored by rclpy, which hides a misspelt key.
    overrides = getattr(node, '_parameter_overrides', None) or {}
    unknown = unknown_names(overrides, node.list_parameters([], 0).names)
    if unknown:
        node.get_logger().warning(
            f'{len(unknown)} parameter(s) given to {node.get_name()} that it does not declare, ignored: '
            f'{", ".join(unknown)}; `ros2 param list {node.get_fully_qualified_name()}` lists the real ones')


def watch_for_namesakes(node: Node, after_s: float = 3.0) -> None:
    """Once, `after_s` after start (discovery needs a moment): warn when another node on the graph has this
    node's full name. Two nodes named alike split parameter services and diagnostics between them."""
    def check() -> None:
        timer.cancel()
        me = (node.get_name(), node.get_namespace())
        count = sum(1 for entry in node.get_node_names_and_namespaces() if entry == me)
        if count > 1:
            node.get_logger().warning(
                f'{count} nodes are named {node.get_fully_qualified_name()} on this ROS domain: parameters '
                'and diagnostics reach either one; give each its own name (--ros-args -r __node:=<name>)')
        node.destroy_timer(timer)
    timer = node.create_timer(after_s, check)


def drain_executor(executor: Executor, timeout_s: float = 5.0) -> list[BaseException]:
    """Wait for callbacks still running on the executor's threads; return the errors they raised.

    rclpy's Executor.shutdown does not wait for them (its work-tracker wait sits under a condition that is
    always false by then): a callback finishing after it touches the destroyed guard condition and leaves
    'The following exception was never retrieved' on stderr. MultiThreadedExecutor keeps the tasks in
    `_futures` (not public API, hence getattr); the single-threaded executor has none in flight.
    """
    deadline = time.monotonic() + timeout_s
    errors = []
    for future in list(getattr(executor, '_futures', [])):
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if future.done():
            error = future.exception()
            if error is not None:
                errors.append(error)
    return errors


def run_node(factory: Callable[[], Node], args: list[str] | None = None,
             executor_factory: Callable[[], Executor] = SingleThreadedExecutor,
             stop_deadline_s: float = STOP_DEADLINE_S) -> int:
    """Initialise rclpy, build the node, spin it on a new executor, and always stop in order."""
    label = _node_label(factory)
    code = 0
    with OrderlyStop(label, deadline_s=stop_deadline_s) as stop:
        try:
            _check_ros_args(args)
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        except (ParamsFileError, RuntimeError) as exc:  # rclpy's RCLError / UnknownROSArgsError
            print(f'[{label}] cannot start: {one_line(exc)}', file=sys.stderr, flush=True)
            sys.exit(2)
        node: Node | None = None
        executor: Executor | None = None
        cut_short = False  # a stop came before the node was built
        try:
            if not stop.requested.is_set():
                stop.interrupt_main = True
                try:
                    node = factory()
                finally:
                    stop.interrupt_main = False
                _warn_unknown_overrides(node)
                watch_for_namesakes(node)
                executor = executor_factory()
                executor.add_node(node)
            while not stop.requested.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=SPIN_STEP_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            cut_short = node is None
        except USER_INPUT_ERRORS as exc:
            print(f'[{label}] cannot start: {one_line(exc)}', file=sys.stderr, flush=True)
            code = 2
        except Exception:
            if rclpy.ok() and not stop.requested.is_set():
                raise
            # A stop (signal, or the context shut down from outside) cut the start-up short: the error
            # that follows from it is part of stopping, not a crash.
            cut_short = True
        finally:
            stop.begin()
            if executor is not None:
                for error in drain_executor(executor, DRAIN_S):
                    print(f'[{label}] a callback failed while stopping: {type(error).__name__}: {error}',
                          file=sys.stderr, flush=True)
                executors.shutdown(executor)
            if node is not None:
                node.destroy_node()
            try:
                # rclpy.try_shutdown is Iron+; this also destroys a node whose constructor did not finish
                try_shutdown()
            except Exception:  # noqa: BLE001
                # A half-built node may fail its destroy_node (an attribute never set): that must not
                # replace the refusal the user needs to read, or turn a stop into a traceback.
                if not (code or cut_short):
                    raise
    if code:
        sys.exit(code)
    return code
