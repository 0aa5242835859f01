"""qos_tuner over ROS: image_source, stream_batcher and qos_tuner as separate processes, from the bad start,
measured from the outside, against an exhaustive sweep on the same processes (issue 16).

One invocation, in this order, on one set of processes (image_source and stream_batcher stay up throughout):

1. start image_source and stream_batcher (launch_pipeline's process group: `python -m isaac_perf.nodes.X
   --ros-args -r __node:=X --params-file ...`, SIGINT at the end); this process runs its own rclpy node,
   the observer: it subscribes `/stream_batcher/stage_times` (latency = arrival here - camera stamp, as
   launch_pipeline measures it), `/parameter_events` (the batcher's knobs over time), `/qos_tuner/decisions`
   and `/diagnostics`, and sets parameters through the nodes' own parameter services;
2. offered-rate probe (unless --rate): image_source's rate_hz raised step by step with the batcher at a
   roomy setting; the highest rate it publishes (>= 95 %) and the batcher receives (>= 95 %) is "the
   highest offered rate" used from then on;
3. the bad start (batch 1, one stream, queue_depth 100, reliable) set on the batcher, then the qos_tuner
   process started (t = 0 is that start): `--tune-seconds` recorded;
4. load changes: cameras 8 -> 4 -> 8 -> 4 (image_source camera_count and stream_batcher camera_topics set at
   run time), `--load-phase-s` each; the time until the budget holds again after each;
5. qos_tuner stopped (SIGINT); the exhaustive sweep on the same two processes at the full camera count:
   every (batch, streams, delay, reliability) point set by parameter calls, `--sweep-settle-s` then a
   `--sweep-window-s` window counting only frames captured after the change.

Reported: delivered FPS and p99 in 1 s bins (the trajectory, with the knobs), time to budget (the first bin
from which `--hold-bins` bins in a row meet it), the best `--sweep-window-s` window within budget in the
first 30 s and the window ending at 30 s, vs the sweep's best; the same after each load change; the YAML the
tuner wrote (its best window within budget). Table printed, JSON + PNG written.

    python3 benchmarks/tuning_ros.py --out $OUT/tuning_ros.json --plot $OUT/tuning_ros.png  # GPU
    python3 benchmarks/tuning_ros.py --quick                                              # CPU, < 2 min
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BAD_START = {'max_batch_size': 1, 'max_queue_delay_ms': 0.0, 'num_streams': 1, 'queue_depth': 100,
             'input_reliability': 'reliable'}
SERIES_KEYS = ('frames_received', 'results_published', 'total_dropped_frames', 'frames_pending',
               'frames_lost_before_receipt')
ROOMY = {'max_batch_size': 16, 'max_queue_delay_ms': 0.0, 'num_streams': 2, 'queue_depth': 4,
         'input_reliability': 'reliable'}


def _launch_pipeline() -> Any:
    """benchmarks/launch_pipeline.py: its process group, DDS environment, machine info and maths."""
    path = ROOT / 'benchmarks' / 'launch_pipeline.py'
    spec = importlib.util.spec_from_file_location('launch_pipeline_bench', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


LP = _launch_pipeline()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='CPU: onnxruntime, 2 cameras 320x240, short phases')
    p.add_argument('--cameras', type=int, help='default 8; quick 2')
    p.add_argument('--low-cameras', type=int, help='camera count of the load change (default half)')
    p.add_argument('--width', type=int, help='default 640; quick 320')
    p.add_argument('--height', type=int, help='default 480; quick 240')
    p.add_argument('--rate', type=float, help='frames/s per camera; default: the probe\'s highest sustained')
    p.add_argument('--probe-rates', default='30,60,90,120,150', help='rates the offered-rate probe tries')
    p.add_argument('--budget-ms', type=float, default=33.0)
    p.add_argument('--extra-budget-ms', type=float, nargs='*', default=[],
                   help='further tuner phases (bad start, tuner, no load change) at these budgets, compared '
                        'with the same sweep')
    p.add_argument('--tune-seconds', type=float, help='default 35; quick 25')
    p.add_argument('--load-phase-s', type=float, help='seconds per load phase (default 18; quick 10)')
    p.add_argument('--no-load', action='store_true', help='skip the load-change phase')
    p.add_argument('--sweep-batches', help='default 1,2,4,8,16,32,64; quick 1,4')
    p.add_argument('--sweep-streams', help='default 1,2; quick 1')
    p.add_argument('--sweep-delays', help='default 0,5; quick 0')
    p.add_argument('--sweep-reliability', help='default reliable,best_effort; quick reliable')
    p.add_argument('--sweep-settle-s', type=float, help='default 1.0; quick 1.0')
    p.add_argument('--sweep-window-s', type=float, help='default 2.0; quick 1.5')
    p.add_argument('--no-sweep', action='store_true')
    p.add_argument('--hold-bins', type=int, default=3, help='1 s bins in a row within budget = "held"')
    p.add_argument('--max-streams', type=int, help='num_streams_max of the tuner (default 2; quick 1)')
    p.add_argument('--backend', help='default torch; quick onnxruntime')
    p.add_argument('--model', help='default resnet50; quick detector64')
    p.add_argument('--fp16', action=argparse.BooleanOptionalAction, default=None)
    p.add_argument('--cuda-graphs', action=argparse.BooleanOptionalAction, default=None)
    p.add_argument('--dds', default='profile', help='launch_pipeline DDS configuration (default profile)')
    p.add_argument('--transport', choices=('zero_copy', 'dds'), default='zero_copy',
                   help='camera frames by the zero-copy transport (default) or as plain Images over DDS')
    p.add_argument('--py-spy', type=float, default=0.0, metavar='S',
                   help='profile stream_batcher with py-spy during the tuner phase: S s of who holds the '
                        'GIL, then S s of every busy thread (collapsed stacks in the logs folder)')
    p.add_argument('--ready-timeout', type=float, default=240.0)
    p.add_argument('--out', default=str(ROOT / 'results' / 'tuning_ros.json'))
    p.add_argument('--plot', default=str(ROOT / 'results' / 'tuning_ros.png'))
    p.add_argument('--logs', help='folder for process logs and params files (default: a temporary folder)')
    args = p.parse_args(argv)
    q = args.quick
    defaults = {'cameras': (8, 2), 'width': (640, 320), 'height': (480, 240), 'tune_seconds': (35.0, 25.0),
                'load_phase_s': (18.0, 10.0), 'sweep_batches': ('1,2,4,8,16,32,64', '1,4'),
                'sweep_streams': ('1,2', '1'), 'sweep_delays': ('0,5', '0'),
                'sweep_reliability': ('reliable,best_effort', 'reliable'), 'sweep_settle_s': (1.0, 1.0),
                'sweep_window_s': (2.0, 1.5), 'max_streams': (2, 1), 'backend': ('torch', 'onnxruntime'),
                'model': ('resnet50', 'detector64'), 'fp16': (True, False), 'cuda_graphs': (True, False)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if q else full)
    if args.low_cameras is None:
        args.low_cameras = max(1, args.cameras // 2)
    if q and args.rate is None:
        args.rate = 15.0
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(',') if x.strip()]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(',') if x.strip()]


# ----------------------------------------------------------------------------------------- the observer

class Observer:
    """This process's rclpy node: what arrives, what the knobs are, and parameter calls to the nodes."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.msg import ParameterEvent
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64MultiArray, String

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('tuning_ros_observer', context=self.context)
        self._lock = threading.Lock()
        self.reports: list[tuple[int, int, float]] = []  # stamp ns, arrival ns, engine batch
        self.stages: list[tuple[float, ...]] = []  # per report, the batcher's stage times (stage_names)
        self.stage_names: list[str] = []
        self._stage_index: list[int] = []
        self.knob_events: list[tuple[int, str, Any]] = []  # arrival ns, name, value (stream_batcher)
        self.decisions: list[tuple[int, dict[str, Any]]] = []
        self.published: list[tuple[int, float]] = []  # arrival ns, image_source frames_published
        self.batcher_diag: dict[str, str] = {}
        self.batcher_series: list[tuple[int, dict[str, float]]] = []  # arrival ns, the batcher's counters
        self.tuner_diag: dict[str, str] = {}
        self._batch_index: int | None = None
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        n = self.node
        n.create_subscription(Float64MultiArray, '/stream_batcher/stage_times', self._on_stage, reliable)
        n.create_subscription(ParameterEvent, '/parameter_events', self._on_event, reliable)
        n.create_subscription(String, '/qos_tuner/decisions', self._on_decision, reliable)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag,
                              QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._clients: dict[str, Any] = {}
        self.on_unanswered: Any = None  # called with the node's name when a parameter request times out
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name='observer')
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown while spinning
            pass

    def _on_stage(self, msg: Any) -> None:
        arrival = time.time_ns()
        data = msg.data
        if self._batch_index is None:
            labels = [d.label for d in msg.layout.dim]
            self._batch_index = labels.index('engine_batch_size') if 'engine_batch_size' in labels else -1
            self._stage_index = [i for i, name in enumerate(labels) if name.endswith('_ms')]
            self.stage_names = [labels[i][:-3] for i in self._stage_index]
        stamp = int(data[0]) * 1_000_000_000 + int(data[1])
        b = float(data[self._batch_index]) if 0 <= self._batch_index < len(data) else math.nan
        stages = tuple(float(data[i]) for i in self._stage_index if i < len(data))
        with self._lock:
            self.reports.append((stamp, arrival, b))
            self.stages.append(stages)

    def _on_event(self, event: Any) -> None:
        if event.node != '/stream_batcher':
            return
        from rclpy.parameter import parameter_value_to_python
        arrival = time.time_ns()
        with self._lock:
            for p in list(event.changed_parameters) + list(event.new_parameters):
                self.knob_events.append((arrival, p.name, parameter_value_to_python(p.value)))

    def _on_decision(self, msg: Any) -> None:
        try:
            payload = json.loads(msg.data)
        except ValueError:
            return
        with self._lock:
            self.decisions.append((time.time_ns(), payload))

    def _on_diag(self, msg: Any) -> None:
        arrival = time.time_ns()
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.hardware_id == '/stream_batcher':
                self.batcher_diag = values
                counters = {k: _number(v) for k, v in values.items()
                            if k in SERIES_KEYS or k.startswith(('dropped_', 'transport_'))}
                with self._lock:
                    self.batcher_series.append((arrival, counters))
            elif status.hardware_id == '/qos_tuner' or 'tuner_status' in values:
                self.tuner_diag = values
            if 'frames_published' in values:
                with self._lock:
                    self.published.append((arrival, float(values['frames_published'])))

    # -- parameters ---------------------------------------------------------------------------------------
    def set_params(self, node: str, values: dict[str, Any], timeout_s: float = 10.0) -> str:
        """'' when `node` took every value, else its reasons."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        client = self._clients.get(node)
        if client is None:
            client = self._clients[node] = self.node.create_client(SetParameters, f'{node}/set_parameters')
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                return f'{node}/set_parameters not available'
            time.sleep(0.05)
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        future = client.call_async(request)
        while not future.done():
            if time.monotonic() > deadline:
                if self.on_unanswered is not None:
                    self.on_unanswered(node)
                return f'{node} did not answer within {timeout_s:g} s'
            time.sleep(0.01)
        reasons = [r.reason for r in future.result().results if not r.successful]
        return '; '.join(reasons)

    # -- windows ------------------------------------------------------------------------------------------
    def window(self, start_ns: int, end_ns: int, since_ns: int = 0, detail: bool = True) -> dict[str, Any]:
        with self._lock:
            picked = [i for i, (s, a, _) in enumerate(self.reports)
                      if start_ns <= a < end_ns and s >= since_ns]
            rows = [self.reports[i] for i in picked]
            stages = [self.stages[i] for i in picked]
        lat = [(a - s) / 1e6 for s, a, _ in rows]
        p = LP.percentiles(lat)
        batches = [b for _, _, b in rows if math.isfinite(b)]
        out = {'frames': len(rows), 'fps': len(rows) / max(1e-9, (end_ns - start_ns) / 1e9),
               'p50_ms': p['p50'] if lat else None, 'p99_ms': p['p99'] if lat else None,
               'mean_batch': sum(batches) / len(batches) if batches else None}
        if stages and detail:
            cols = list(zip(*[st for st in stages if len(st) == len(self.stage_names)], strict=True))
            out['stages_ms'] = {name: {'p50': round(LP.percentiles(list(c))['p50'], 2),
                                       'p99': round(LP.percentiles(list(c))['p99'], 2)}
                                for name, c in zip(self.stage_names, cols, strict=True)}
        return out

    def counters_at(self, t_ns: int) -> dict[str, float] | None:
        """The batcher's last diagnostics counters published before `t_ns`."""
        with self._lock:
            before = [c for a, c in self.batcher_series if a <= t_ns]
        return before[-1] if before else None

    def offered_fps(self, start_ns: int, end_ns: int) -> float:
        with self._lock:
            pts = [(t, n) for t, n in self.published if start_ns - 1.5e9 <= t <= end_ns + 1.5e9]
        if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
            return math.nan
        return (pts[-1][1] - pts[0][1]) / ((pts[-1][0] - pts[0][0]) / 1e9)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


# ------------------------------------------------------------------------------------------- processes

def node_commands(args: argparse.Namespace, logs: Path, budget: float, yaml_name: str
                  ) -> dict[str, list[str]]:
    from isaac_perf.core import pipeline_graph as graph
    from isaac_perf.core.paths import config_file
    model: dict[str, Any] = {'model': args.model}
    if args.model == 'detector64':
        from isaac_perf.core.inference.models import build_detector
        path = build_detector(64, 64, num_classes=4, cache_dir=logs / 'models')
        model = {'model': '', 'model_file_path': str(path), 'task': 'detection'}
    topics = graph.pattern_topics(args.cameras)
    source = {'camera_count': args.cameras, 'topic_pattern': graph.CAMERA_PATTERN,
              'rate_hz': float(args.rate or 30.0), 'width': args.width, 'height': args.height,
              'zero_copy': args.transport == 'zero_copy'}
    batcher = {'camera_topics': topics, **BAD_START, 'backend': args.backend, 'enable_fp16': bool(args.fp16),
               'cuda_graphs': bool(args.cuda_graphs), 'graph_max_batch_size': max(_ints(args.sweep_batches)),
               'graph_streams': max(args.max_streams, max(_ints(args.sweep_streams))), **model,
               'zero_copy': args.transport == 'zero_copy', **({'device': 'cpu'} if args.quick else {})}
    tuner = {'target_node': '/stream_batcher', 'latency_budget_ms': float(budget),
             'window_source': 'stage_times', 'cooldown_s': 0.5, 'confirm_windows': 2,
             'batch_size_max': max(_ints(args.sweep_batches)), 'num_streams_max': args.max_streams,
             'queue_delay_ms_max': max(_floats(args.sweep_delays) + [5.0]),
             'output_dir': str(logs), 'output_config_path': yaml_name, 'max_changes_per_min': 20}
    nodes = [graph.LaunchedNode('image_source', 'image_source', (source,)),
             graph.LaunchedNode('stream_batcher', 'stream_batcher',
                                (str(config_file('stream_batcher.yaml')), batcher)),
             graph.LaunchedNode('qos_tuner', 'qos_tuner', (str(config_file('qos_tuner.yaml')), tuner))]
    return {n.name: graph.process_command(n, logs) for n in nodes}


def wait_until(predicate: Any, timeout_s: float, group: Any, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [f'{n} exited with {p.returncode}' for n, p in group.procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f'{what}: ' + '; '.join(dead))
        time.sleep(0.1)
    raise RuntimeError(f'{what}: not within {timeout_s:g} s')


# -------------------------------------------------------------------------------------------- phases

def probe_rate(obs: Observer, args: argparse.Namespace) -> dict[str, Any]:
    """The highest image_source rate_hz it publishes and the batcher receives (>= 95 % of cameras x rate)."""
    why = obs.set_params('/stream_batcher', ROOMY)
    if why:
        raise RuntimeError(f'stream_batcher refused the probe setting: {why}')
    rows, best = [], None
    for rate in _floats(args.probe_rates):
        obs.set_params('/image_source', {'rate_hz': float(rate)})
        time.sleep(1.5)
        t0 = time.time_ns()
        time.sleep(2.5)
        t1 = time.time_ns()
        offered = obs.offered_fps(t0, t1)
        w = obs.window(t0, t1, since_ns=t0 - int(1e9))
        want = args.cameras * rate
        ok = offered >= 0.95 * want and w['fps'] >= 0.95 * want
        rows.append({'rate_hz': rate, 'wanted_fps': want, 'published_fps': offered,
                     'delivered_fps': w['fps'], 'p99_ms': w['p99_ms'], 'sustained': ok})
        print(f'  rate {rate:6.1f} Hz: wanted {want:7.1f}, published {offered:7.1f}, '
              f'delivered {w["fps"]:7.1f} FPS, p99 {w["p99_ms"] or math.nan:7.1f} ms '
              f'{"ok" if ok else "NOT sustained"}', flush=True)
        if ok:
            best = rate
        else:
            break
    if best is None:
        best = rows[0]['rate_hz']
    return {'rows': rows, 'rate_hz': best}


def sweep(obs: Observer, args: argparse.Namespace) -> dict[str, Any]:
    points = []
    cams = args.cameras
    for rel in [r.strip() for r in args.sweep_reliability.split(',') if r.strip()]:
        for b in _ints(args.sweep_batches):
            for k in _ints(args.sweep_streams):
                for d in _floats(args.sweep_delays):
                    cfg = {'max_batch_size': b, 'num_streams': k, 'max_queue_delay_ms': float(d),
                           'queue_depth': max(2, math.ceil(b / cams)), 'input_reliability': rel}
                    why = obs.set_params('/stream_batcher', cfg)
                    changed = time.time_ns()
                    time.sleep(args.sweep_settle_s)
                    t0 = time.time_ns()
                    time.sleep(args.sweep_window_s)
                    w = obs.window(t0, time.time_ns(), since_ns=changed)
                    w.update(config=cfg, refused=why)
                    points.append(w)
                    print(f'  {cfg} fps={w["fps"]:7.1f} p99={w["p99_ms"] or math.nan:8.1f} ms'
                          + (f' REFUSED {why}' if why else ''), flush=True)
    feasible = [p for p in points if p['p99_ms'] is not None and p['p99_ms'] <= args.budget_ms
                and not p['refused']]
    best = max(feasible, key=lambda p: p['fps']) if feasible else None
    return {'points': points, 'best': best}


# ------------------------------------------------------------------------------------------ analysis

def knobs_at(events: list[tuple[int, str, Any]], t_ns: int, start: dict[str, Any]) -> dict[str, Any]:
    knobs = dict(start)
    for arrival, name, value in events:
        if arrival > t_ns:
            break
        if name in knobs or name == 'camera_topics':
            knobs[name] = value
    return knobs


def trajectory(obs: Observer, t0_ns: int, t1_ns: int, budget: float) -> list[dict[str, Any]]:
    with obs._lock:
        events = sorted(obs.knob_events)
    bins = []
    start = dict(BAD_START)
    for i in range(int((t1_ns - t0_ns) // 1_000_000_000)):
        a, b = t0_ns + i * 1_000_000_000, t0_ns + (i + 1) * 1_000_000_000
        w = obs.window(a, b)
        k = knobs_at(events, b, start)
        counters = obs.counters_at(b)
        cams = k.pop('camera_topics', None)
        off = obs.offered_fps(a, b)
        bins.append({'t_s': i + 1.0, 'fps': w['fps'], 'p99_ms': w['p99_ms'], 'p50_ms': w['p50_ms'],
                     'mean_batch': w['mean_batch'], 'knobs': k, 'stages_ms': w.get('stages_ms'),
                     'batcher': counters,
                     'cameras': len(cams) if isinstance(cams, list) else None,
                     'offered_fps': off if math.isfinite(off) else None,
                     'within_budget': w['p99_ms'] is not None and w['p99_ms'] <= budget and w['frames'] > 0})
    return bins


def held_from(bins: list[dict[str, Any]], after_s: float, hold: int) -> float | None:
    """The end of the first 1 s bin after `after_s` from which `hold` bins in a row are within budget,
    in seconds after `after_s`."""
    rows = [b for b in bins if b['t_s'] - 1.0 >= after_s]
    for i in range(len(rows) - hold + 1):
        if all(r['within_budget'] for r in rows[i:i + hold]):
            return round(rows[i]['t_s'] - after_s, 2)
    return None


def best_window(obs: Observer, start_ns: int, end_ns: int, length_s: float, budget: float
                ) -> dict[str, Any] | None:
    """The best sliding window (`length_s`, 0.5 s steps) within budget between start and end."""
    best = None
    step = 500_000_000
    a = start_ns
    while a + int(length_s * 1e9) <= end_ns:
        w = obs.window(a, a + int(length_s * 1e9))
        if w['p99_ms'] is not None and w['p99_ms'] <= budget and (best is None or w['fps'] > best['fps']):
            best = {**w, 't_end_s': round((a + int(length_s * 1e9) - start_ns) / 1e9, 2)}
        a += step
    return best


def dump_stacks(group: Any, logs: Path, name: str) -> None:
    """Every thread's Python stack of process `name` (py-spy dump) into the logs, once per call: the
    stream_batcher that stopped answering on the H200 (2026-12-04) left no trace of where it was stuck."""
    spy, proc = LP.py_spy_command(), group.procs.get(name)
    if spy is None or proc is None or proc.poll() is not None:
        return
    path = logs / f'{name}_unanswered_{time.strftime("%H%M%S")}.txt'
    with open(path, 'w') as out:
        subprocess.run([spy, 'dump', '-p', str(proc.pid)], stdout=out, stderr=subprocess.STDOUT,
                       timeout=30, check=False)
    print(f'{name} did not answer a parameter request: its stacks are in {path}', flush=True)


def profile_batcher(group: Any, logs: Path, seconds: float, tag: str) -> None:
    """py-spy on stream_batcher (2 s after the tuner starts): `seconds` with --gil (who holds it), then
    `seconds` of every busy thread; collapsed stacks, one line per stack with its sample count."""
    spy = LP.py_spy_command()
    if spy is None:
        print('--py-spy: py-spy not found beside this Python or on PATH', flush=True)
        return
    time.sleep(2.0)
    pid = group.procs['stream_batcher'].pid
    with open(logs / 'py-spy.log', 'a') as log:
        for kind, extra in (('gil', ['--gil']), ('busy', [])):
            subprocess.run([spy, 'record', '-d', str(max(1, round(seconds))), '-r', '200', '-f', 'raw',
                            '--threads', *extra, '-o', str(logs / f'stream_batcher_{tag}_{kind}.txt'),
                            '-p', str(pid)],
                           stdout=log, stderr=subprocess.STDOUT, check=False)


# ---------------------------------------------------------------------------------------------- main

def tuner_phase(obs: Observer, group: Any, args: argparse.Namespace, logs: Path, budget: float,
                load: bool, phase: dict[str, Any]) -> None:
    """Bad start, then a qos_tuner process for `budget` (t0 = its start), then (if `load`) the load
    changes."""
    from isaac_perf.core.pipeline_graph import pattern_topics
    why = obs.set_params('/stream_batcher', {**BAD_START, 'camera_topics': pattern_topics(args.cameras)})
    obs.set_params('/image_source', {'camera_count': args.cameras})
    if why:
        raise RuntimeError(f'stream_batcher refused the bad start: {why}')
    time.sleep(3.0)  # the bad start's queues fill
    bad0 = time.time_ns()
    time.sleep(2.0)
    phase.update(budget_ms=budget, load_changes=[],
                 bad_start=obs.window(bad0, time.time_ns(), since_ns=bad0 - int(3e9)))
    print(f'bad start: {phase["bad_start"]}', flush=True)
    yaml_name = f'tuned_{budget:g}ms.yaml'
    command = node_commands(args, logs, budget=budget, yaml_name=yaml_name)['qos_tuner']
    t0 = phase['t0_ns'] = time.time_ns()
    tuner = group.start('qos_tuner', command)
    print(f'qos_tuner (budget {budget:g} ms) started; recording {args.tune_seconds:g} s', flush=True)
    if args.py_spy:
        threading.Thread(target=profile_batcher, args=(group, logs, args.py_spy, f'{budget:g}ms'),
                         daemon=True).start()
    try:
        time.sleep(args.tune_seconds)
        for cams in (args.low_cameras, args.cameras, args.low_cameras) if load else ():
            at = time.time_ns()
            reasons = (obs.set_params('/stream_batcher', {'camera_topics': pattern_topics(cams)})
                       + obs.set_params('/image_source', {'camera_count': cams}))
            phase['load_changes'].append({'t_s': round((at - t0) / 1e9, 2), 'cameras': cams,
                                          'refused': reasons})
            print(f'load change -> {cams} cameras at t={phase["load_changes"][-1]["t_s"]} s {reasons}',
                  flush=True)
            time.sleep(args.load_phase_s)
    finally:  # a phase cut short (a node that stops answering) keeps what it recorded
        phase['t_end_ns'] = time.time_ns()
        with obs._lock:
            phase['decisions'] = [{'t_s': round((t - t0) / 1e9, 3), **d} for t, d in obs.decisions if t >= t0]
        phase['tuner_diagnostics'] = dict(obs.tuner_diag)
        tuner.send_signal(signal.SIGINT)
        try:
            tuner.wait(timeout=15)
        except subprocess.TimeoutExpired:
            tuner.kill()
        group.procs.pop('qos_tuner').log.close()
        (logs / 'qos_tuner.log').rename(logs / f'qos_tuner_{budget:g}ms.log')
        phase['tuner_exit_code'] = tuner.returncode
        tuned = logs / yaml_name
        phase['tuned_yaml'] = tuned.read_text() if tuned.exists() else None


def run(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    env = LP.dds_environment(args.dds)
    env.setdefault('ROS_DOMAIN_ID', str(random.randint(150, 230)))
    for name in set(os.environ) - set(env):  # this process's own node runs in the same DDS configuration
        del os.environ[name]
    os.environ.update(env)
    commands = node_commands(args, logs, budget=args.budget_ms, yaml_name='tuned.yaml')
    obs = Observer()
    doc: dict[str, Any] = {'schema': 'isaac_perf.tuning_ros/1', 'budget_ms': args.budget_ms,
                           'cameras': args.cameras, 'width': args.width, 'height': args.height,
                           'dds': args.dds, 'machine': LP.machine(), 'settings': vars(args),
                           'date': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
    group = LP.Group(env, logs)
    obs.on_unanswered = lambda node: dump_stacks(group, logs, node.strip('/'))
    phases = []
    try:
        start = time.monotonic()
        group.start('image_source', commands['image_source'])
        group.start('stream_batcher', commands['stream_batcher'])
        wait_until(lambda: len(obs.reports) > 0, args.ready_timeout, group, 'first result')
        doc['first_result_s'] = round(time.monotonic() - start, 2)
        wait_until(lambda: 'batch_latency_ms' in obs.batcher_diag, 30.0, group, 'latency curve')
        doc['batch_latency_ms'] = obs.batcher_diag.get('batch_latency_ms')
        doc['engine_ready_s'] = obs.batcher_diag.get('time_to_engine_ready_s')
        print(f'first result {doc["first_result_s"]} s after start; curve {doc["batch_latency_ms"]}',
              flush=True)
        if args.rate is None:
            print('offered-rate probe:', flush=True)
            doc['probe'] = probe_rate(obs, args)
            args.rate = doc['probe']['rate_hz']
        obs.set_params('/image_source', {'rate_hz': float(args.rate)})
        doc['rate_hz'] = args.rate
        failures = doc['failures'] = []
        for budget, load in [(args.budget_ms, not args.no_load)] + [(b, False) for b in args.extra_budget_ms]:
            phase: dict[str, Any] = {}
            try:
                tuner_phase(obs, group, args, logs, budget, load, phase)
            except Exception as exc:  # noqa: BLE001 - keep the other phases and what this one recorded
                failures.append(f'phase {budget:g} ms: {type(exc).__name__}: {exc}')
                print(f'FAILED: {failures[-1]}', flush=True)
            if 't0_ns' in phase:
                phases.append(phase)
            if failures:
                break
        if not args.no_sweep and not failures:
            from isaac_perf.core.pipeline_graph import pattern_topics
            obs.set_params('/stream_batcher', {'camera_topics': pattern_topics(args.cameras)})
            obs.set_params('/image_source', {'camera_count': args.cameras})
            time.sleep(3.0)  # new publishers and subscriptions discover each other
            print(f'exhaustive sweep ({args.cameras} cameras):', flush=True)
            doc['sweep'] = sweep(obs, args)
    finally:
        processes = group.stop()
        obs.close()
    doc['processes'] = processes
    with obs._lock:
        t_first = obs.batcher_series[0][0] if obs.batcher_series else 0
        doc['batcher_series'] = [{'t_ns': a, **c} for a, c in obs.batcher_series if a >= t_first]
    doc['phases'] = [analyse({'load_changes': [], 'decisions': [], 'tuner_diagnostics': {}, 'bad_start': {},
                              **phase}, doc.get('sweep'), obs, args) for phase in phases]
    if doc['phases']:
        doc.update({k: doc['phases'][0].get(k) for k in ('trajectory', 'load_changes', 'tuned', 'tuned_yaml',
                                                         'bad_start')})
    return doc


def analyse(phase: dict[str, Any], sweep_doc: dict[str, Any] | None, obs: Observer,
            args: argparse.Namespace) -> dict[str, Any]:
    budget = phase['budget_ms']
    t0, t_end = phase.pop('t0_ns'), phase.pop('t_end_ns')
    bins = trajectory(obs, t0, t_end, budget)
    phase['trajectory'] = bins
    first_change = phase['load_changes'][0]['t_s'] if phase['load_changes'] else bins[-1]['t_s']
    w = args.sweep_window_s
    cut = min(30.0, first_change)
    phase['tuned'] = {
        'time_to_budget_s': held_from(bins, 0.0, args.hold_bins),
        'best_window_by_30s': best_window(obs, t0, t0 + int(cut * 1e9), w, budget),
        'window_ending_30s': obs.window(t0 + int((cut - w) * 1e9), t0 + int(cut * 1e9)),
        'best_window_before_load_change': best_window(obs, t0, t0 + int(first_change * 1e9), w, budget)}
    for change in phase['load_changes']:
        change['budget_held_again_after_s'] = held_from(bins, change['t_s'], args.hold_bins)
    points = (sweep_doc or {}).get('points', [])
    feasible = [p for p in points if p['p99_ms'] is not None and p['p99_ms'] <= budget and not p['refused']]
    best = max(feasible, key=lambda p: p['fps']) if feasible else None
    lowest = min((p for p in points if p['p99_ms'] is not None), key=lambda p: p['p99_ms'], default=None)
    phase['sweep_best'] = best
    phase['sweep_lowest_p99'] = lowest
    by30, at30 = phase['tuned']['best_window_by_30s'], phase['tuned']['window_ending_30s']
    phase['ratio_best_by_30s_vs_sweep'] = by30['fps'] / best['fps'] if best and by30 else None
    phase['ratio_at_30s_vs_sweep'] = (at30['fps'] / best['fps'] if best and at30['p99_ms'] is not None
                                      and at30['p99_ms'] <= budget else None)
    phase['changes_applied'] = sum(1 for d in phase['decisions'] if d.get('action') == 'applied')
    return phase


def table(doc: dict[str, Any]) -> str:
    def f(x: Any, nd: int = 1) -> str:
        return '-' if x is None or (isinstance(x, float) and not math.isfinite(x)) else f'{x:.{nd}f}'
    lines = []
    for ph in doc['phases']:
        tuned, best, low = ph['tuned'], ph['sweep_best'], ph['sweep_lowest_p99']
        diag = ph['tuner_diagnostics']
        by30, at30 = tuned['best_window_by_30s'], tuned['window_ending_30s']
        lines += [f'--- budget p99 {ph["budget_ms"]:g} ms',
                  f'{"row":44s} {"FPS":>8s} {"p99 ms":>8s}  config',
                  f'{"bad start":44s} {f(ph["bad_start"].get("fps")):>8s} '
                  f'{f(ph["bad_start"].get("p99_ms")):>8s}  '
                  f'{BAD_START}',
                  f'{"tuned: best window within budget by 30 s":44s} {f(by30 and by30["fps"]):>8s} '
                  f'{f(by30 and by30["p99_ms"]):>8s}  (ends at t={by30 and by30["t_end_s"]} s)',
                  f'{"tuned: window ending at 30 s":44s} {f(at30["fps"]):>8s} {f(at30["p99_ms"]):>8s}',
                  f'{"sweep best within budget (same processes)":44s} {f(best and best["fps"]):>8s} '
                  f'{f(best and best["p99_ms"]):>8s}  {best and best["config"]}',
                  f'{"sweep lowest p99":44s} {f(low and low["fps"]):>8s} {f(low and low["p99_ms"]):>8s}  '
                  f'{low and low["config"]}',
                  f'ratio best-by-30s / sweep best: {f(ph["ratio_best_by_30s_vs_sweep"], 3)}; at 30 s: '
                  f'{f(ph["ratio_at_30s_vs_sweep"], 3)}; time to budget (held '
                  f'{doc["settings"]["hold_bins"]} s): '
                  f'{tuned["time_to_budget_s"]} s; changes applied: {ph["changes_applied"]}; tuner: '
                  f'{diag.get("tuner_status")}, best {diag.get("best_fps")} FPS / '
                  f'{diag.get("best_p99_ms")} ms']
        for c in ph['load_changes']:
            lines.append(f'load change at t={c["t_s"]} s -> {c["cameras"]} cameras: budget held again after '
                         f'{c["budget_held_again_after_s"]} s')
        impossible = ph['tuner_diagnostics'].get('impossible')
        if impossible and impossible != 'no':
            lines.append(f'tuner: {impossible}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix='tuning_ros_'))
    logs.mkdir(parents=True, exist_ok=True)
    doc = run(args, logs)
    doc['command'] = ' '.join(['benchmarks/tuning_ros.py'] + (argv if argv is not None else sys.argv[1:]))
    doc['title'] = (f'qos_tuner over ROS: {args.cameras} x {args.width}x{args.height} at {args.rate:g} Hz, '
                    f'{args.backend} {args.model}, p99 budget {args.budget_ms:g} ms')
    print()
    print(table(doc))
    for failure in doc.get('failures', []):
        print(f'FAILED: {failure}')
    for ph in doc['phases']:
        print(f'\ntuned YAML (budget {ph["budget_ms"]:g} ms):\n{ph["tuned_yaml"]}')
    from isaac_perf.core.profiling.report import json_safe
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(doc), indent=1, default=str) + '\n')
    if args.plot:
        from isaac_perf.core.plotting import plot_tuning_trajectory
        for i, ph in enumerate(doc['phases']):
            stem = str(Path(args.plot).with_suffix(''))
            path = args.plot if i == 0 else f'{stem}_{ph["budget_ms"]:g}ms.png'
            plot_tuning_trajectory({**doc, **ph, 'sweep': {'best': ph['sweep_best']},
                                    'title': doc['title'].replace(f'{args.budget_ms:g} ms',
                                                                  f'{ph["budget_ms"]:g} ms')}, path)
    print(f'wrote {out}' + (f' and {args.plot}' if args.plot else '') + f' (logs in {logs})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
