"""Which rclpy executor a node process spins on: chosen by measurement, overridable for benchmarks.

    run_node(StreamBatcher, args, executor_factory=executors.factory())

`factory(name)` takes 'single' (SingleThreadedExecutor), 'multi' (MultiThreadedExecutor) or 'events'
(rclpy.experimental.EventsExecutor, where the distro has it); '' = the environment variable
ISAAC_PERF_EXECUTOR, else `default`. An 'events' request on a distro without it falls back to 'single'.

The default is 'single', by measurement (BENCHMARKS.md, "The pipeline as ros2 launch runs it"): a node's
receive path is one thread of O(1) callbacks and the engine runs on the node's own thread, so a
MultiThreadedExecutor only adds GIL contention (it delivered 37% of 8x320x240 at 30 Hz where the single
one delivered 100%, on a 2-core box); and the EventsExecutor of the Kilted wheels (rclpy 9.1.2) never ran
a callback from `spin()` (a busy loop in C++ holding the GIL) and ignored SIGINT even under `spin_once`,
so a node on it could not stop on Ctrl-C. 'events' stays selectable for re-measuring on other distros.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor

VARIABLE = 'ISAAC_PERF_EXECUTOR'
NAMES = ('events', 'single', 'multi')
DEFAULT = 'single'


def events_executor() -> type[Executor] | None:
    """rclpy.experimental.EventsExecutor, or None where this rclpy has none (Humble)."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return None
    return EventsExecutor


def resolve(name: str = '', default: str = DEFAULT) -> str:
    """The executor name that will run: the argument, else $ISAAC_PERF_EXECUTOR, else `default`."""
    chosen = (name or os.environ.get(VARIABLE, '') or default).strip().lower()
    if chosen not in NAMES:
        raise ValueError(f'executor {chosen!r} (from {VARIABLE} or the caller): use one of '
                         f'{", ".join(NAMES)}')
    if chosen == 'events' and events_executor() is None:
        return 'single'
    return chosen


def factory(name: str = '', default: str = DEFAULT) -> Callable[[], Executor]:
    """A zero-argument callable that makes the chosen executor (for run_node's executor_factory)."""
    chosen = resolve(name, default)
    if chosen == 'events':
        return events_executor()  # type: ignore[return-value]
    return MultiThreadedExecutor if chosen == 'multi' else SingleThreadedExecutor


def shutdown(executor: Executor, timeout_sec: float | None = None) -> bool:
    """`executor.shutdown(timeout_sec)`, and its worker threads stopped too.

    Kilted's MultiThreadedExecutor stops its thread pool in shutdown(); Jazzy's (rclpy 7.1) never does, so
    every multi-threaded executor left idle workers behind for the life of the process (a profiler then
    counted them as threads of the pipeline).
    """
    done = executor.shutdown(timeout_sec)
    pool = getattr(executor, '_executor', None)  # rclpy's ThreadPoolExecutor behind MultiThreadedExecutor
    if pool is not None:
        pool.shutdown(wait=True)  # a no-op where rclpy already did it
    return done
