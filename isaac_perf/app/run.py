"""`isaac-perf run`: the perception pipeline in one process, with a live summary and a final report.

image_source -> inference_node -> results, with perf_monitor watching, composed on one
MultiThreadedExecutor from the same params file and the same wiring the launch file uses
(config/pipeline.yaml, isaac_perf.core.pipeline_graph), so a pip install without `ros2 launch` runs
exactly what a colcon install launches. The engine is loaded (and
warmed up) before the cameras start, so the numbers describe the steady state, not model start-up.

Only argparse/stdlib are imported at module level: `isaac-perf --help` must not pay for rclpy or numpy.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# The graph (nodes, parameters, topics) is the one launch/pipeline.launch.py uses.
from isaac_perf.core.pipeline_graph import pipeline_params
from isaac_perf.core.profiling.report import json_safe

BACKENDS = ('auto', 'onnxruntime', 'torch', 'tensorrt')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from isaac_perf.app.args import number, writable
    parser.add_argument('--duration', type=number(minimum=0, unit='s'), default=10.0,
                        help='seconds to run after the engine is ready (0 = until Ctrl-C; default 10)')
    parser.add_argument('--backend', choices=BACKENDS, help='inference backend (default: from the config)')
    parser.add_argument('--model', help="'resnet50', 'detector', or the path of an ONNX file")
    parser.add_argument('--cameras', type=number(int, minimum=1),
                        help='number of cameras (topics /camera_{i}/image_raw)')
    parser.add_argument('--rate', type=number(above=0, unit='Hz'), help='frames per second per camera')
    parser.add_argument('--width', type=number(int, minimum=1), help='camera image width')
    parser.add_argument('--height', type=number(int, minimum=1), help='camera image height')
    parser.add_argument('--config', help='params file (default: config/pipeline.yaml of the package)')
    parser.add_argument('--json', metavar='PATH', type=writable('file'),
                        help='also write the final report as JSON to PATH')
    parser.add_argument('--no-monitor', action='store_true', help='run without perf_monitor')
    parser.add_argument('--quiet', action='store_true', help='no live summary, only the final report')
    parser.add_argument('--load-timeout', type=number(above=0, unit='s'), default=300.0,
                        help='seconds allowed for generating/loading the model (default 300)')


# ---------------------------------------------------------------------------------------------- params

def to_overrides(values: Mapping[str, Any]) -> list[Any]:
    from rclpy.parameter import Parameter
    # An empty list has no ROS type: leave such parameters at their declared defaults.
    return [Parameter(name, value=value) for name, value in values.items()
            if not (isinstance(value, list) and not value)]


# ------------------------------------------------------------------------------------------- statistics

# Collector statistics cover the whole run (since the last reset): a window longer than any run.
WHOLE_RUN_S = 1e9


class Collector:
    """Subscribes to what the report needs: stage times, results and /performance_metrics.

    Per-frame end-to-end latency is the arrival of the frame's stage report minus the frame's stamp;
    the stage callback only records into a core StageStats (bounded numpy rings), statistics are computed
    on demand by it.
    """

    def __init__(self, node: Any, stage_topic: str, result_topics: list[str], capacity: int = 200_000):
        from std_msgs.msg import Float32MultiArray, Float64MultiArray

        from isaac_perf.core.telemetry.stats import StageStats
        from isaac_perf.ros.qos import qos_from_name
        self.node = node
        self._lock = threading.Lock()
        self.stage_stats = StageStats(capacity=capacity, window_s=WHOLE_RUN_S)
        self.results = 0
        self.detections = 0
        self.metrics: dict[str, Any] = {}
        qos = qos_from_name('DEFAULT', 100)
        self._subs = [node.create_subscription(Float64MultiArray, stage_topic, self._on_stage, qos)]
        self._subs += [node.create_subscription(Float32MultiArray, t, self._on_result, qos)
                       for t in result_topics]
        self._subs.append(node.create_subscription(Float32MultiArray, '/performance_metrics',
                                                   self._on_metrics, 10))

    def _on_stage(self, msg: Any) -> None:
        from isaac_perf.ros.stage_reports import stage_report_from_msg
        now_ns = time.time_ns()
        try:
            report = stage_report_from_msg(msg)
        except ValueError:
            self.stage_stats.note_malformed()
            return
        self.stage_stats.record(now_ns, report.stamp_ns, report.batch_size, report.stages_ms)

    def _on_result(self, msg: Any) -> None:
        with self._lock:
            self.results += 1
            if msg.layout.dim:
                self.detections += int(msg.layout.dim[0].size)

    def _on_metrics(self, msg: Any) -> None:
        from isaac_perf.core.telemetry import metrics
        try:
            parsed = metrics.parse([d.label for d in msg.layout.dim], list(msg.data))
        except ValueError:
            return
        with self._lock:
            self.metrics = parsed

    def reset(self) -> None:
        self.stage_stats.reset()
        with self._lock:
            self.results = 0
            self.detections = 0

    def fps(self, window_s: float | None = None, now_ns: int | None = None) -> float:
        """Frames per second of the stage reports within `window_s` (None: the whole run)."""
        now_ns = now_ns or time.time_ns()
        return self.stage_stats.snapshot(now_ns, WHOLE_RUN_S if window_s is None else window_s).fps

    def snapshot(self) -> dict[str, Any]:
        stages = self.stage_stats.snapshot(time.time_ns())
        with self._lock:
            results, detections = self.results, self.detections
        latency = stages.latency_ms
        return {
            'latency_ms': {'p50': latency.p50, 'p90': latency.p90, 'p99': latency.p99, 'max': latency.max,
                           'min': latency.min, 'mean': latency.mean},
            'stages_ms': {k: {'mean': v.mean, 'p50': v.p50, 'p99': v.p99}
                          for k, v in stages.stages_ms.items() if k != 'total'},
            'results_received': results, 'detections': detections, 'frames_timed': latency.count,
        }


# ------------------------------------------------------------------------------------------- the run

def run_pipeline(params: dict[str, dict[str, Any]], duration_s: float, context: Any = None,
                 monitor: bool = True, load_timeout_s: float = 300.0,
                 on_tick: Callable[[dict[str, Any]], None] | None = None,
                 stop: threading.Event | None = None, inference_factory: Callable[..., Any] | None = None,
                 source_factory: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Compose the nodes, run for `duration_s` after the engine is ready, and return the report dict.

    `on_tick` gets a live summary about once a second; `stop` ends the run early (Ctrl-C).
    `inference_factory` / `source_factory` replace InferenceNode / ImageSource (benchmarks use them for
    the naive node and for a camera in another process); they are called with `context` and
    `parameter_overrides`, and a source that is not a Node is not added to the executor.
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node

    from isaac_perf.nodes.image_source import ImageSource
    from isaac_perf.nodes.inference import InferenceNode
    from isaac_perf.ros import executors

    stop = stop or threading.Event()  # set by the caller to end the run early
    spinning = threading.Event()  # cleared to stop the executor thread
    spinning.set()
    own_context = context is None
    if own_context:
        context = rclpy.Context()
        rclpy.init(context=context, args=[])
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    nodes: list[Any] = []
    spin_thread = None
    report: dict[str, Any] = {}
    try:
        inference = (inference_factory or InferenceNode)(
            context=context, parameter_overrides=to_overrides(params['inference_node']))
        nodes.append(inference)
        collector_node = Node('isaac_perf_run', context=context, start_parameter_services=False)
        nodes.append(collector_node)
        stage_topic = inference.resolve_topic_name('~/stage_times')
        collector = Collector(collector_node, stage_topic, inference.output_topics)
        for node in nodes:
            executor.add_node(node)
        spin_thread = threading.Thread(target=_spin, args=(executor, spinning), daemon=True)
        spin_thread.start()
        _wait(lambda: inference.engine_ready.is_set() or bool(inference.engine_error), load_timeout_s, stop)
        if not inference.engine_ready.is_set():
            if stop.is_set():
                return {}
            reason = inference.engine_error or f'not ready after {load_timeout_s:g} s'
            raise RuntimeError(f'the inference engine did not load: {reason}')
        monitor_node = _start_monitor(params['perf_monitor'], context, executor) if monitor else None
        if monitor_node is not None:
            nodes.append(monitor_node)
        source = (source_factory or ImageSource)(
            context=context, parameter_overrides=to_overrides(params['image_source']))
        nodes.append(source)
        start_counts = _counts(source, inference)
        collector.reset()
        started = time.monotonic()
        if isinstance(source, Node):
            executor.add_node(source)
        next_tick = started + 1.0
        try:
            while not stop.is_set() and (duration_s <= 0 or time.monotonic() - started < duration_s):
                time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
                if time.monotonic() >= next_tick:
                    next_tick += 1.0
                    if on_tick is not None:
                        on_tick(_live(collector, source, inference, started))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the run early; the report still comes
        elapsed = time.monotonic() - started
        if isinstance(source, Node):
            executor.remove_node(source)  # stop the cameras, let frames in flight finish
        else:
            source.stop()
        # Frames still queued or being inferred are let finish, so every received frame is accounted for.
        _wait(lambda: inference.frames_received <= inference.frames_processed + inference.drops.total,
              5.0, None)
        time.sleep(0.2)  # the last results and stage reports reach the collector
        report = _report(collector, source, inference, monitor_node, start_counts, elapsed, params)
    finally:
        spinning.clear()
        if spin_thread is not None:
            spin_thread.join(timeout=10)
        _drain(executor, 10.0)
        executors.shutdown(executor, timeout_sec=5)
        for node in reversed(nodes):
            node.destroy_node()
        if own_context:
            context.try_shutdown()
    return report


def _start_monitor(monitor_params: Mapping[str, Any], context: Any, executor: Any) -> Any:
    """perf_monitor on the run's executor, or None (said on stderr) where it cannot be imported."""
    try:
        from isaac_perf.nodes.perf_monitor import PerfMonitor
    except ImportError as exc:
        print(f'perf_monitor is not available ({exc}): running without it', file=sys.stderr)
        return None
    node = PerfMonitor(context=context, parameter_overrides=to_overrides(monitor_params))
    executor.add_node(node)
    return node


def _spin(executor: Any, spinning: threading.Event) -> None:
    while spinning.is_set():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception as exc:  # noqa: BLE001 - a failing callback must not end the run silently
            if not spinning.is_set():
                return
            print(f'executor: {type(exc).__name__}: {exc}', file=sys.stderr)


def _drain(executor: Any, timeout_s: float) -> None:
    """Let callbacks still running on the executor's threads finish before it is shut down."""
    from isaac_perf.ros.node_main import drain_executor
    for error in drain_executor(executor, timeout_s):
        print(f'executor: {type(error).__name__}: {error}', file=sys.stderr)


def _wait(predicate: Callable[[], bool], timeout_s: float, stop: threading.Event | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _counts(source: Any, inference: Any) -> dict[str, int]:
    return {'published': source.frames_published, 'received': inference.frames_received,
            'processed': inference.frames_processed, 'dropped': inference.drops.total,
            **{f'dropped_{k}': v for k, v in inference.drops.by_reason.items()}}


def _metric(collector: Collector, name: str) -> float:
    return float(collector.metrics.get('global', {}).get(name, math.nan)) if collector.metrics else math.nan


def _live(collector: Collector, source: Any, inference: Any, started: float) -> dict[str, Any]:
    snap = collector.snapshot()
    return {
        't_s': time.monotonic() - started, 'fps': collector.fps(window_s=3.0),
        'latency_p50_ms': snap['latency_ms']['p50'], 'latency_p99_ms': snap['latency_ms']['p99'],
        'published': source.frames_published, 'processed': inference.frames_processed,
        'dropped': inference.drops.total,
        'monitor_fps': _metric(collector, 'pipeline_fps'),
        'monitor_p50_ms': _metric(collector, 'pipeline_latency_ms_p50'),
        'monitor_p99_ms': _metric(collector, 'pipeline_latency_ms_p99'),
        'cpu_percent': _metric(collector, 'cpu_percent'),
    }


def _report(collector: Collector, source: Any, inference: Any, monitor: Any, start: dict[str, int],
            elapsed: float, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    end = _counts(source, inference)
    delta = {k: end[k] - start[k] for k in end}
    snap = collector.snapshot()
    engine = inference._engine
    runner = inference._runner
    sp = params['image_source']
    report = {
        'duration_s': round(elapsed, 3),
        'cameras': source.camera_count, 'rate_hz': sp.get('rate_hz'),
        'width': sp.get('width'), 'height': sp.get('height'),
        'backend': getattr(engine, 'backend', ''), 'device': str(getattr(engine, 'device', '')),
        'model': params['inference_node'].get('model') or params['inference_node'].get('model_file_path'),
        'task': getattr(runner, 'task', ''),
        'frames_published': delta['published'], 'frames_received': delta['received'],
        'frames_processed': delta['processed'], 'results_received': snap['results_received'],
        'frames_in_flight': delta['received'] - delta['processed'] - delta['dropped'],
        'fps': collector.fps(), 'input_fps': delta['published'] / elapsed if elapsed > 0 else math.nan,
        'latency_ms': snap['latency_ms'], 'stages_ms': snap['stages_ms'],
        'drops': {'total': delta['dropped'] + max(0, delta['published'] - delta['received']),
                  'transport': max(0, delta['published'] - delta['received']),
                  **{k[len('dropped_'):]: v for k, v in delta.items() if k.startswith('dropped_')}},
        'source_missed_ticks': source.missed_ticks,
        'monitor': {k: _metric(collector, k) for k in ('pipeline_fps', 'pipeline_latency_ms_p50',
                                                       'pipeline_latency_ms_p99', 'cpu_percent',
                                                       'gpu_util_percent_max')} if monitor else {},
    }
    return report


# ------------------------------------------------------------------------------------------- output

def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return 'n/a' if math.isnan(value) else f'{value:.{digits}f}'
    return str(value)


def live_line(live: dict[str, Any]) -> str:
    return (f"t={live['t_s']:4.0f}s  fps {_fmt(live['fps'])}  latency p50 {_fmt(live['latency_p50_ms'])} "
            f"p99 {_fmt(live['latency_p99_ms'])} ms  frames {live['published']} in / "
            f"{live['processed']} out  "
            f"dropped {live['dropped']}  monitor: fps {_fmt(live['monitor_fps'])} "
            f"p99 {_fmt(live['monitor_p99_ms'])} ms cpu {_fmt(live['cpu_percent'], 0)}%")


def format_report(report: dict[str, Any]) -> str:
    """The final report as plain text (what `make run` prints)."""
    lat = report['latency_ms']
    lines = [
        f"isaac-perf run: {report['cameras']} camera(s) {report['width']}x{report['height']} at "
        f"{_fmt(report['rate_hz'])} Hz -> {report['model']} ({report['task']}) on {report['backend']} "
        f"({report['device']}), {report['duration_s']:.1f} s",
        f"  frames      {report['frames_published']} published, {report['frames_received']} received, "
        f"{report['frames_processed']} inferred, {report['results_received']} results received",
        f"  throughput  {_fmt(report['fps'])} results/s (input {_fmt(report['input_fps'])} frames/s)",
        f"  latency     p50 {_fmt(lat['p50'])} ms, p90 {_fmt(lat['p90'])} ms, p99 {_fmt(lat['p99'])} ms, "
        f"max {_fmt(lat['max'])} ms (camera stamp -> result)",
    ]
    stages = report['stages_ms']
    if stages:
        lines.append('  stages      ' + ', '.join(
            f"{name} {_fmt(s['mean'], 2)}" for name, s in stages.items()) + ' ms (mean per frame)')
    drops = report['drops']
    lines.append(f"  drops       {drops['total']} total: " + ', '.join(
        f'{k} {v}' for k, v in drops.items() if k != 'total'))
    mon = report.get('monitor') or {}
    if mon:
        lines.append(f"  monitor     pipeline fps {_fmt(mon.get('pipeline_fps', math.nan))}, latency p50 "
                     f"{_fmt(mon.get('pipeline_latency_ms_p50', math.nan))} / p99 "
                     f"{_fmt(mon.get('pipeline_latency_ms_p99', math.nan))} ms, "
                     f"host cpu {_fmt(mon.get('cpu_percent', math.nan), 0)}%")
    return '\n'.join(lines)



class _LiveView:
    """rich's Live table on a terminal, one plain line per second otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self._live = None
        if not quiet and sys.stdout.isatty():
            try:
                from rich.live import Live
                self._live = Live(refresh_per_second=2, transient=True)
                self._live.start()
            except ImportError:
                self._live = None

    def update(self, live: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self._live is None:
            print(live_line(live), flush=True)
            return
        from rich.table import Table
        table = Table(title=f"isaac-perf run  t={live['t_s']:.0f}s")
        for column in ('fps', 'latency p50 ms', 'latency p99 ms', 'frames in', 'frames out', 'dropped',
                       'monitor fps', 'monitor p99 ms', 'cpu %'):
            table.add_column(column, justify='right')
        table.add_row(_fmt(live['fps']), _fmt(live['latency_p50_ms']), _fmt(live['latency_p99_ms']),
                      str(live['published']), str(live['processed']), str(live['dropped']),
                      _fmt(live['monitor_fps']), _fmt(live['monitor_p99_ms']), _fmt(live['cpu_percent'], 0))
        self._live.update(table)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def node_param_errors(params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each node's values against its ParamSpec table (ranges, choices, checks), before any node exists:
    `--cameras 1000` is refused at once instead of after the model has loaded."""
    from isaac_perf.core.params import validate_all
    from isaac_perf.nodes import image_source, inference
    tables = {'image_source': image_source.PARAMS, 'inference_node': inference.PARAMS}
    try:
        from isaac_perf.nodes import perf_monitor
        tables['perf_monitor'] = perf_monitor.PARAMS
    except ImportError:
        pass
    from isaac_perf.core.params_yaml import unknown_names
    for node, specs in tables.items():
        unknown = unknown_names(params.get(node, {}), [s.name for s in specs] + ['use_sim_time'])
        if unknown:
            print(f'isaac-perf run: warning: {node} does not declare {", ".join(unknown)}: ignored',
                  file=sys.stderr)
    return [f'{node}: {message}' for node, specs in tables.items()
            for message in validate_all(specs, dict(params.get(node, {})))]


def main(args: argparse.Namespace) -> int:
    from isaac_perf.core.paths import config_file
    from isaac_perf.core.shutdown import OrderlyStop
    config = Path(args.config) if args.config else config_file('pipeline.yaml')
    if not config.is_file():
        print(f'isaac-perf run: params file {config} not found: pass --config', file=sys.stderr)
        return 2
    try:
        params = pipeline_params(config, args.backend, args.model, args.cameras, args.rate, args.width,
                                 args.height)
    except (OSError, ValueError) as exc:
        print(f'isaac-perf run: cannot read {config}: {exc}', file=sys.stderr)
        return 2
    errors = node_param_errors(params)
    if errors:
        print(f'isaac-perf run: {errors[0]}' + (f' (and {len(errors) - 1} more)' if len(errors) > 1 else ''),
              file=sys.stderr)
        return 2
    from isaac_perf.core import dds_profile
    try:
        # Before rclpy.init: Fast DDS reads its profile when the participant is created.
        dds = dds_profile.apply()
    except FileNotFoundError as exc:
        print(f'isaac-perf run: {exc}', file=sys.stderr)
        return 2
    view = _LiveView(args.quiet)
    # Ctrl-C or SIGTERM: the run stops in order and the report still comes; further signals are ignored.
    with OrderlyStop('isaac-perf run') as signals:
        stop = signals.requested
        try:
            report = run_pipeline(params, args.duration, monitor=not args.no_monitor,
                                  load_timeout_s=args.load_timeout, on_tick=view.update, stop=stop)
        except (RuntimeError, ValueError) as exc:
            view.close()
            print(f'isaac-perf run: {exc}', file=sys.stderr)
            return 1
        view.close()
        if not report:  # stopped before the engine was ready
            print('isaac-perf run: stopped before the engine was ready', file=sys.stderr)
            return 0
        report['dds'] = dds.reason
        print(format_report(report), flush=True)
        if args.json:
            try:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(json_safe(report), indent=2) + '\n')
            except OSError as exc:
                print(f'isaac-perf run: cannot write --json {args.json}: {exc.strerror or exc}',
                      file=sys.stderr)
                return 1
        if report['results_received'] == 0 and not stop.is_set():
            print('isaac-perf run: no results came back: see the log lines above for why', file=sys.stderr)
            return 1
    return 0
