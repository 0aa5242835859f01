"""`isaac-perf bench`: ros2_benchmark's method on our stack, in one process with real DDS.

    isaac-perf bench --rates 10,30,60 --iterations 3 --duration 5 --out results/bench
    isaac-perf bench --peak --peak-min 5 --peak-max 200
    isaac-perf bench --graph none --input-topic /cam/image_raw --end-topic /my_node/stage_times
    isaac-perf bench compare results/a/bench.json results/b/bench.json --out results/a_vs_b

Three parts, as in ros2_benchmark: a playback publisher that sends pre-built sensor_msgs/Image frames at a
controlled rate (stamped with the send time, which is the frame's key), the graph under test (by default an
in-process `InferenceNode`; `--graph none` benchmarks a graph that is already running), and a monitor at
the end of the graph that records when each frame's `stage_times` report arrives (the report carries the
input stamp, so end-to-end latency is per frame). Each fixed-rate run gives ros2_benchmark's metrics plus
latency percentiles and CPU/GPU utilisation; `--peak` searches the highest sustainable rate; `--iterations`
repeats every run and checks stability. Results: <out>/<name>.json, latency.png, throughput.png.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_RATES = '10,30,60'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='bench_command', metavar='{compare}')
    cmp = sub.add_parser('compare', help='compare two result files: what changed, and is it beyond noise',
                         description='Compare two `isaac-perf bench` result files.')
    cmp.add_argument('a', help='baseline result JSON')
    cmp.add_argument('b', help='candidate result JSON')
    cmp.add_argument('--out', default='', help='directory for compare.json and compare_latency_cdf.png')
    cmp.add_argument('--alpha', type=float, default=0.05, help='significance level (default 0.05)')

    runs = parser.add_argument_group('runs')
    runs.add_argument('--rates', default=DEFAULT_RATES,
                      help=f"fixed publishing rates in Hz, comma-separated ('' = none; "
                      f'default {DEFAULT_RATES})')
    runs.add_argument('--peak', action='store_true', help='also search the peak sustainable rate')
    runs.add_argument('--peak-min', type=float, default=10.0, help='peak search window low end, Hz')
    runs.add_argument('--peak-max', type=float, default=100.0, help='peak search window high end, Hz')
    runs.add_argument('--peak-width', type=float, default=10.0,
                      help='stop bisecting when the window is this narrow, Hz (then scan in --peak-step)')
    runs.add_argument('--peak-step', type=float, default=5.0, help='linear scan step, Hz')
    runs.add_argument('--loss', type=float, default=0.05, help='acceptable fraction of missed frames')
    runs.add_argument('--iterations', type=int, default=1, help='repeats of every fixed-rate run (and of '
                      'the final run at the peak); 3+ gives ros2_benchmark-style trimmed conclusions')
    runs.add_argument('--duration', type=float, default=5.0, help='seconds of publishing per run')
    runs.add_argument('--probe-fraction', type=float, default=1.0,
                      help='peak-search probes run for this fraction of --duration')
    runs.add_argument('--warmup', type=float, default=2.0, help='seconds of warm-up traffic before the runs')
    runs.add_argument('--max-cv', type=float, default=0.05,
                      help='iterations are stable when the coefficient of variation is at most this')
    runs.add_argument('--out', default='results/bench', help='output directory (JSON + PNG)')
    runs.add_argument('--name', default='bench', help='result file name (without .json)')
    runs.add_argument('--no-plots', action='store_true', help='skip the PNG plots')

    graph = parser.add_argument_group('graph under test')
    graph.add_argument('--graph', choices=('inference', 'batcher', 'none'), default='inference',
                       help="'inference': an in-process InferenceNode; 'batcher': an in-process "
                       "StreamBatcher (dynamic batching over --cameras); 'none': a graph already running")
    graph.add_argument('--input-topic', default='/isaac_perf_bench/image_raw',
                       help='topic the playback publishes on (with --cameras N: '
                       '<parent>/camera_<i>/<name>)')
    graph.add_argument('--end-topic', default='',
                       help="stage_times topic at the end of the graph (default: the in-process node's)")
    graph.add_argument('--cameras', type=int, default=1, help='number of camera streams, each at the rate')
    graph.add_argument('--model', default='detector', help="built-in model ('detector', 'resnet50') or an "
                       'ONNX file')
    graph.add_argument('--backend', default='onnxruntime', help='auto, onnxruntime, torch or tensorrt')
    graph.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    graph.add_argument('--fp16', action='store_true', help='enable_fp16 on the inference node')
    graph.add_argument('--max-batch', type=int, default=1, help='inference max_batch_size')
    graph.add_argument('--queue-depth', type=int, default=1, help='queue_depth per input (both graphs)')
    graph.add_argument('--max-queue-delay-ms', type=float, default=5.0, help='batcher max_queue_delay_ms')
    graph.add_argument('--num-streams', type=int, default=2, help='batcher num_streams')
    graph.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                       help='extra parameter of the graph node (YAML value), repeatable')

    frames = parser.add_argument_group('input frames')
    frames.add_argument('--width', type=int, default=640)
    frames.add_argument('--height', type=int, default=480)
    frames.add_argument('--encoding', default='rgb8')
    frames.add_argument('--source', default='synthetic', help="'synthetic', or folder/video/mcap")
    frames.add_argument('--source-path', default='', help='file or folder for a recorded source')
    frames.add_argument('--frames', type=int, default=16, help='distinct frames cycled by the playback')
    frames.add_argument('--qos', default='SENSOR_DATA', help='QoS of the playback publisher')


def parse_rates(text: str) -> list[float]:
    """'10,30,60' -> [10.0, 30.0, 60.0]; raises ValueError naming a bad entry."""
    rates = []
    for part in (p.strip() for p in text.split(',')):
        if not part:
            continue
        try:
            rate = float(part)
        except ValueError:
            raise ValueError(f'--rates entry {part!r} is not a number: give Hz values like '
                             '10,30,60') from None
        if not (0 < rate <= 10000):
            raise ValueError(f'--rates entry {rate} must be in (0, 10000] Hz')
        rates.append(rate)
    return rates


def _check_args(args: argparse.Namespace) -> list[str]:
    errors = []
    try:
        rates = parse_rates(args.rates)
    except ValueError as exc:
        errors.append(str(exc))
        rates = []
    if not rates and not args.peak:
        errors.append('nothing to run: give --rates and/or --peak')
    if args.duration <= 0:
        errors.append(f'--duration {args.duration} must be > 0 s')
    if args.iterations < 1:
        errors.append(f'--iterations {args.iterations} must be at least 1')
    if args.peak and not 0 < args.peak_min < args.peak_max:
        errors.append(f'--peak-min {args.peak_min} / --peak-max {args.peak_max}: need 0 < min < max')
    if args.cameras < 1:
        errors.append('--cameras must be at least 1')
    if args.graph == 'none' and not args.end_topic:
        errors.append("--graph none needs --end-topic (the graph's stage_times topic)")
    if not 0 <= args.loss < 1:
        errors.append('--loss must be in [0, 1)')
    for item in args.param:
        if '=' not in item:
            errors.append(f'--param {item!r}: write NAME=VALUE')
    return errors


# --- the harness ---------------------------------------------------------------------------------------
@dataclass
class Graph:
    """The graph under test as the harness sees it."""
    nodes: list[Any]
    input_topics: list[str]
    end_topic: str
    wait_ready: Callable[[float], str]  # -> '' when ready, else why not
    config: dict[str, Any] = field(default_factory=dict)


def _yaml_value(text: str) -> Any:
    import yaml
    return yaml.safe_load(text)


def input_topics(topic: str, cameras: int) -> list[str]:
    """'/a/image_raw' for one camera; '/a/camera_<i>/image_raw' for several (one namespace each, so a
    graph that publishes next to its input never mixes cameras)."""
    if cameras == 1:
        return [topic]
    parent, _, name = topic.rstrip('/').rpartition('/')
    return [f'{parent}/camera_{i}/{name}' for i in range(cameras)]


def make_graph(args: argparse.Namespace, context: Any) -> Graph:
    """The graph under test for `--graph`."""
    topics = input_topics(args.input_topic, args.cameras)
    if args.graph == 'none':
        return Graph([], topics, args.end_topic, lambda timeout: '',
                     {'graph': 'external', 'end_topic': args.end_topic})
    from rclpy.parameter import Parameter

    name = 'isaac_perf_bench_graph'
    values: dict[str, Any] = {
        'backend': args.backend, 'device': args.device, 'enable_fp16': bool(args.fp16),
        'max_batch_size': int(args.max_batch), 'queue_depth': int(args.queue_depth)}
    if args.graph == 'batcher':
        from rclpy.qos import ReliabilityPolicy

        from isaac_perf.nodes.stream_batcher import StreamBatcher as GraphNode
        from isaac_perf.ros.qos import qos_from_name
        reliable = qos_from_name(args.qos).reliability == ReliabilityPolicy.RELIABLE
        values.update(camera_topics=topics, max_queue_delay_ms=float(args.max_queue_delay_ms),
                      num_streams=int(args.num_streams),
                      input_reliability='reliable' if reliable else 'best_effort')  # match the publisher
    else:
        from isaac_perf.nodes.inference import InferenceNode as GraphNode
        output = '' if len(topics) == 1 else f'/{name}/detections_{{i}}'
        values.update(input_topics=topics, output_topic=output)
    if args.model in ('detector', 'resnet50'):
        values['model'] = args.model
    else:
        values.update(model='', model_file_path=str(Path(args.model).expanduser()))
    for item in args.param:
        key, _, raw = item.partition('=')
        values[key.strip()] = _yaml_value(raw)
    node = GraphNode(context=context, node_name=name,
                     parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])

    def wait_ready(timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.engine_ready.wait(0.1) and getattr(node, 'listening', True):
                return ''  # the batcher subscribes its cameras once the engine is ready
            if node.engine_error:
                return node.engine_error
        return node.engine_error or f'the engine was not ready after {timeout:.0f} s'

    kind = 'stream_batcher' if args.graph == 'batcher' else 'inference_node'
    config = {k: v for k, v in values.items() if k not in ('input_topics', 'camera_topics')}
    end_topic = args.end_topic or f'/{name}/stage_times'
    return Graph([node], topics, end_topic, wait_ready, {'graph': kind, **config})


class Harness:
    """Playback publisher + monitor around a graph, on one executor thread; runs fixed-rate runs."""

    def __init__(self, args: argparse.Namespace, context: Any, log: Callable[[str], None] = print):
        import numpy as np
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray

        from isaac_perf.core.bench.provenance import input_hash
        from isaac_perf.core.bench.resources import ResourceSampler
        from isaac_perf.core.inference.frames import open_source
        from isaac_perf.ros.conversions import numpy_to_image
        from isaac_perf.ros.qos import qos_from_name

        self.log = log
        self.context = context
        self.graph = make_graph(args, context)
        source = open_source(args.source, args.width, args.height, args.encoding, path=args.source_path)
        count = max(1, min(args.frames, len(source)))
        frames = [np.ascontiguousarray(source.frame(i)) for i in range(count)]
        self.input_digest = input_hash(frames)
        self.frame_info = {'source': args.source, 'source_path': args.source_path, 'width': args.width,
                           'height': args.height, 'encoding': args.encoding, 'frames': count}
        self._messages = [numpy_to_image(f, args.encoding) for f in frames]

        self.node = Node('isaac_perf_bench', context=context)
        qos = qos_from_name(args.qos)
        self._publishers = [self.node.create_publisher(Image, t, qos) for t in self.graph.input_topics]
        self._lock = threading.Lock()
        self._received: dict[int, int] = {}
        self._reports: list[Any] = []
        self._max_reports = 20000
        self.node.create_subscription(Float64MultiArray, self.graph.end_topic, self._on_end, 1000)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        for n in [self.node] + self.graph.nodes:
            self.executor.add_node(n)
        self._spin = threading.Thread(target=self._spin_forever, name='bench-executor', daemon=True)
        self._spin.start()
        self.resources = ResourceSampler()
        self.baseline: dict[str, float] = {}

    def _spin_forever(self) -> None:
        from rclpy.executors import ExternalShutdownException
        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def _on_end(self, msg: Any) -> None:
        now = time.time_ns()
        from isaac_perf.ros.stage_reports import stage_report_from_msg
        try:
            report = stage_report_from_msg(msg)
        except ValueError:
            return  # not a stage report: the monitor only counts what it can key
        with self._lock:
            self._received.setdefault(report.stamp_ns, now)
            if len(self._reports) < self._max_reports:
                self._reports.append(report)

    def _publish_at(self, rate_hz: float, duration_s: float, sent: dict[int, int]) -> None:
        """Publish every camera at `rate_hz` for `duration_s`, on schedule (late frames go at once)."""
        period = 1.0 / rate_hz
        n = max(2, int(round(rate_hz * duration_s)))
        t0 = time.perf_counter()
        messages = self._messages
        from isaac_perf.ros.conversions import ns_to_stamp
        for i in range(n):
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for pub in self._publishers:
                msg = messages[i % len(messages)]
                stamp_ns = time.time_ns()
                while stamp_ns in sent:  # keys must be unique; the clock may repeat within a microsecond
                    stamp_ns += 1
                msg.header.stamp = ns_to_stamp(stamp_ns)
                sent[stamp_ns] = stamp_ns
                pub.publish(msg)

    def _drain(self, sent: dict[int, int], quiet_s: float = 0.3, max_s: float = 3.0) -> None:
        """Wait until every frame arrived, or nothing arrived for `quiet_s`, at most `max_s`."""
        deadline = time.monotonic() + max_s
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                count = sum(1 for k in self._received if k in sent)
            if count >= len(sent):
                return
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                return
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 120.0) -> str:
        """'' once the graph's engine is loaded and the end topic is connected, else the reason."""
        error = self.graph.wait_ready(timeout)
        if error:
            return error
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self._publishers) and \
                    self.node.count_publishers(self.graph.end_topic) > 0:
                return ''
            time.sleep(0.05)
        return (f'no subscriber on {self.graph.input_topics} or no publisher on {self.graph.end_topic} '
                'after 10 s: is the graph running (--graph none) and in this ROS_DOMAIN_ID?')

    def warm_up(self, seconds: float, rate_hz: float = 10.0) -> None:
        if seconds > 0:
            sent: dict[int, int] = {}
            self._publish_at(rate_hz, seconds, sent)
            self._drain(sent)
        self.baseline = self.resources.baseline(0.5)

    def run(self, rate_hz: float, duration_s: float) -> Any:
        """One fixed-rate run -> RunResult (metrics, per-frame latencies, resources, stage means)."""
        from isaac_perf.core.bench.metrics import RunResult, resource_metrics
        from isaac_perf.core.telemetry.stats import means_by_name
        with self._lock:
            self._received = {}
            self._reports = []
        sent: dict[int, int] = {}
        self.resources.start()
        self._publish_at(rate_hz, duration_s, sent)
        self._drain(sent)
        samples = self.resources.stop()
        with self._lock:
            received = dict(self._received)
            reports = [r for r in self._reports if r.stamp_ns in sent]
        stage_ms = means_by_name(r.stages_ms for r in reports)
        self.last_reports = reports
        return RunResult.from_times(rate_hz * len(self._publishers), duration_s, sent, received,
                                    resources=resource_metrics(samples, self.baseline), stage_ms=stage_ms)

    def close(self) -> None:
        self.resources.close()
        from isaac_perf.ros import executors
        executors.shutdown(self.executor, timeout_sec=2.0)
        for n in self.graph.nodes:
            n.destroy_node()
        self.node.destroy_node()
        self._spin.join(timeout=2.0)


def _describe(result: Any) -> str:
    m = result.metrics
    return (f"sent {m['NUM_FRAMES_SENT']:.0f} at {m['MEAN_PLAYBACK_FRAME_RATE']:.1f} fps, received "
            f"{m['MEAN_FRAME_RATE']:.1f} fps, missed {m['NUM_MISSED_FRAMES']:.0f}, latency mean "
            f"{m['MEAN_LATENCY']:.1f} / p99 {m['P99_LATENCY']:.1f} ms")


def run_benchmark(args: argparse.Namespace, context: Any,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """All runs of one `bench` invocation; returns the result document (also written to --out)."""
    from isaac_perf.core.bench import peak as peak_search
    from isaac_perf.core.bench import provenance
    from isaac_perf.core.profiling.profiler import profile_from_stage_times

    rates = parse_rates(args.rates)
    harness = Harness(args, context, log)
    started = time.monotonic()
    try:
        error = harness.wait_ready()
        if error:
            raise RuntimeError(f'the graph under test is not ready: {error}')
        log(f'graph ready; warming up {args.warmup:.1f} s')
        harness.warm_up(args.warmup)
        runs: dict[str, list[Any]] = {}
        profile = None
        for rate in rates:
            key = provenance.run_key(rate * args.cameras)
            for it in range(args.iterations):
                result = harness.run(rate, args.duration)
                runs.setdefault(key, []).append(result)
                log(f'{key} iteration {it + 1}/{args.iterations}: {_describe(result)}')
                if profile is None and harness.last_reports:
                    profile = profile_from_stage_times(harness.last_reports, {'rate_hz': rate * args.cameras})
        peak = None
        peak_runs: list[Any] = []
        if args.peak:
            probe_s = max(0.5, args.duration * args.probe_fraction)
            peak = peak_search.find_peak_rate(lambda r: harness.run(r, probe_s), args.peak_min, args.peak_max,
                                        terminal_width_hz=args.peak_width, step_hz=args.peak_step,
                                        loss_fraction=args.loss, log=log)
            for w in peak.warnings:
                log(f'warning: {w}')
            for it in range(args.iterations):
                peak_runs.append(harness.run(peak.peak_hz, args.duration))
                log(f'peak {peak.peak_hz:.1f} Hz iteration {it + 1}/{args.iterations}: '
                    f'{_describe(peak_runs[-1])}')
        config = {k: v for k, v in vars(args).items() if k not in ('module', 'missing', 'command')}
        config.update(harness.graph.config, frames=harness.frame_info)
        meta = provenance.collect_metadata(args.name, config, harness.input_digest)
        meta['duration_total_s'] = round(time.monotonic() - started, 1)
        doc = provenance.results_document(meta, runs, peak, peak_runs, max_cv=args.max_cv, profile=profile)
    finally:
        harness.close()
    return doc


def write_outputs(doc: dict[str, Any], out_dir: str | Path, name: str, plots: bool = True) -> dict[str, str]:
    import json

    from isaac_perf.core import plotting
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {'json': str(out / f'{name}.json')}
    Path(paths['json']).write_text(json.dumps(doc, indent=1, allow_nan=False))
    if plots:
        for p in plotting.plot_results(doc, out):
            paths[Path(p).stem] = p
    return paths


def compare_main(args: argparse.Namespace) -> int:
    import json

    from isaac_perf.core import plotting
    from isaac_perf.core.bench import compare as bench_compare
    from isaac_perf.core.bench import provenance
    try:
        a, b = provenance.load_results(args.a), provenance.load_results(args.b)
    except ValueError as exc:
        print(f'isaac-perf bench compare: {exc}', file=sys.stderr)
        return 2
    result = bench_compare.compare(a, b, alpha=args.alpha)
    print(f'A = {args.a}\nB = {args.b}')
    print(bench_compare.format_comparison(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'compare.json').write_text(json.dumps(provenance._clean(result), indent=1, allow_nan=False))
        plotting.plot_comparison(a, b, out)
        print(f'wrote {out / "compare.json"} and {out / "compare_latency_cdf.png"}')
    return 0


def main(args: argparse.Namespace, context: Any = None) -> int:
    if getattr(args, 'bench_command', None) == 'compare':
        return compare_main(args)
    errors = _check_args(args)
    if errors:
        for e in errors:
            print(f'isaac-perf bench: {e}', file=sys.stderr)
        return 2
    import rclpy

    from isaac_perf.core.bench import provenance
    own = context is None
    if own:
        context = rclpy.Context()
        rclpy.init(context=context)
    try:
        doc = run_benchmark(args, context)
    except RuntimeError as exc:
        print(f'isaac-perf bench: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('isaac-perf bench: interrupted', file=sys.stderr)
        return 130
    finally:
        if own:
            context.try_shutdown()
    paths = write_outputs(doc, args.out, args.name, plots=not args.no_plots)
    print(provenance.summary_table(doc))
    unstable = [k for k, r in doc['runs'].items() if r['stability']['stable'] is False]
    if unstable:
        print(f'unstable runs (CV above {args.max_cv}): {", ".join(unstable)}: lengthen --duration or quiet '
              'the machine', file=sys.stderr)
    print('wrote ' + ', '.join(paths.values()))
    return 0
