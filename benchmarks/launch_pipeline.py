"""The pipeline as `ros2 launch` runs it: one process per node, measured from an outside subscriber.

For each row (worker x cameras x size) and each DDS configuration, in one invocation:

- pipeline: image_source, the worker (inference_node or stream_batcher) and perf_monitor, each its own
  process (`python -m isaac_perf.nodes.<node> --ros-args -r __node:=<name> --params-file ...`) with the
  parameters the launch files give them (pipeline.launch.py / batcher.launch.py), plus an observer
  process that subscribes the worker's `~/stage_times` and `/diagnostics` and nothing else. Latency =
  arrival of a frame's stage report at the observer minus the camera stamp. Reported: delivered /
  offered fps, latency p50/p90/p99/max, time from the first process start to the first result (and the
  worker's own "engine ready in" figure), drops by cause (transport = published - received by the worker;
  the worker's own dropped_* counters), CPU per process (% of one core over the window), error lines
  and exit codes after SIGINT to the process group.
- ceiling: a plain rclpy publisher process (the same frames: cameras x size at the rate, reliable, depth 1,
  as image_source) -> a plain rclpy subscriber process (the worker's QoS, deserializing every Image), same
  DDS configuration: what the transport alone carries.
- limit: the worker's preprocessing + engine in one process on frames already in memory, batch = cameras
  (benchmarks/pipeline.py's measure_limit): the in-process limit.

DDS configurations (`--dds`): `default` (Fast DDS defaults: ISAAC_PERF_DDS_PROFILE=off), `profile` (the
shipped config/fastdds_large_frames.xml, as the launch files apply it), `large_data`
(FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, Fast DDS's own large-data mode).

    .venv/bin/python benchmarks/launch_pipeline.py                         # the GPU rows, default + profile
    .venv/bin/python benchmarks/launch_pipeline.py --quick                 # CPU: 2 cameras 320x240 at 10 Hz
    .venv/bin/python benchmarks/launch_pipeline.py --rows inference:1x640x480 --dds profile \
        --sections pipeline
    .venv/bin/python benchmarks/launch_pipeline.py --sections ceiling --rows inference:4x1920x1080 \
        --dds default,profile,large_data
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

GPU_ROWS = ('inference:1x640x480,inference:4x640x480,inference:4x1920x1080,'
            'stream_batcher:8x640x480,stream_batcher:8x1920x1080')
QUICK_ROWS = 'inference:2x320x240,stream_batcher:2x320x240'
WORKERS = {'inference': ('isaac_perf.nodes.inference', 'inference_node'),
           'stream_batcher': ('isaac_perf.nodes.stream_batcher', 'stream_batcher')}
DDS_CONFIGS = ('default', 'profile', 'large_data')
TRANSPORTS = ('dds', 'zero_copy')
ERROR_LINE = re.compile(r'\[ERROR\]|Traceback|exception was never retrieved|Failed to publish|'
                        r'Segmentation fault|core dumped', re.IGNORECASE)
ENGINE_READY = re.compile(r'engine ready in ([0-9.]+) s')
STOPPED_LINE = re.compile(r'marked stopped')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rows', help=f'worker:CAMSxWxH,... (default {GPU_ROWS}; --quick {QUICK_ROWS})')
    p.add_argument('--dds', default='default,profile',
                   help=f'DDS configurations, of {", ".join(DDS_CONFIGS)} or xml=PATH')
    p.add_argument('--transport', default='dds,zero_copy',
                   help=f'frame transports of the pipeline rows, of {", ".join(TRANSPORTS)}: dds = plain '
                   'sensor_msgs/Image (zero_copy false on both ends), zero_copy = shared-memory frames')
    p.add_argument('--sections', default='pipeline,ceiling,limit', help='which of pipeline,ceiling,limit')
    p.add_argument('--rate', type=float, help='frames per second per camera (default 30; --quick 10)')
    p.add_argument('--duration', type=float, help='measured seconds per run (default 10; --quick 5)')
    p.add_argument('--warmup', type=float, default=3.0,
                   help='seconds after the first result before measuring')
    p.add_argument('--first-result-timeout', type=float, default=240.0,
                   help='seconds allowed from start to the first result (model build, engine load)')
    p.add_argument('--backend', help='worker backend (default torch; --quick onnxruntime)')
    p.add_argument('--model', help='resnet50 or detector (default resnet50; --quick a 64x64 detector)')
    p.add_argument('--fp16', action=argparse.BooleanOptionalAction, default=None,
                   help='worker in FP16 (default on, --quick off)')
    p.add_argument('--cuda-graphs', action=argparse.BooleanOptionalAction, default=None,
                   help='worker replays CUDA graphs (default on, --quick off)')
    p.add_argument('--executor', default='', help='ISAAC_PERF_EXECUTOR for the worker and the ceiling\'s '
                   'subscriber (events, single, multi; empty = the node default, single for the subscriber)')
    p.add_argument('--worker-param', action='append', default=[], metavar='NAME=YAML',
                   help='extra worker parameter, e.g. input_reliability=best_effort (repeatable)')
    p.add_argument('--no-monitor', action='store_true', help='start no perf_monitor process')
    p.add_argument('--py-spy', type=float, default=0.0, metavar='S',
                   help='record the worker with py-spy for S seconds of the window (speedscope JSON)')
    p.add_argument('--quick', action='store_true',
                   help='CPU settings: 2 cameras 320x240 at 10 Hz, onnxruntime')
    p.add_argument('--out', default=str(ROOT / 'results' / 'launch_pipeline.json'), help='JSON output path')
    p.add_argument('--logs', help='folder for the processes\' logs (default: a temporary folder)')
    p.add_argument('--role', choices=('observe', 'publish'), help=argparse.SUPPRESS)
    p.add_argument('--spec', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = ({'rows': QUICK_ROWS, 'rate': 10.0, 'duration': 5.0, 'backend': 'onnxruntime',
                 'model': 'detector64', 'fp16': False, 'cuda_graphs': False} if args.quick else
                {'rows': GPU_ROWS, 'rate': 30.0, 'duration': 10.0, 'backend': 'torch', 'model': 'resnet50',
                 'fp16': True, 'cuda_graphs': True})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def parse_rows(text: str) -> list[tuple[str, int, int, int]]:
    rows = []
    for item in (t.strip() for t in text.split(',') if t.strip()):
        worker, _, shape = item.partition(':')
        if worker not in WORKERS:
            raise SystemExit(f'row {item!r}: worker must be one of {", ".join(WORKERS)}')
        try:
            cams, width, height = (int(x) for x in shape.lower().split('x'))
        except ValueError:
            raise SystemExit(f'row {item!r}: write worker:CAMSxWIDTHxHEIGHT, e.g. '
                             'inference:4x640x480') from None
        rows.append((worker, cams, width, height))
    return rows


# ------------------------------------------------------------------------------------- environment

def dds_environment(config: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of one run: the DDS configuration applied as launch applies it."""
    from isaac_perf.core import dds_profile
    env = dict(os.environ if base is None else base)
    for name in (dds_profile.PROFILE_VARIABLE, dds_profile.DEPRECATED_VARIABLE, 'FASTDDS_BUILTIN_TRANSPORTS',
                 dds_profile.SWITCH_VARIABLE):
        env.pop(name, None)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env['PYTHONUNBUFFERED'] = '1'
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in [env.get('PYTHONPATH', '')] if p])
    if config == 'default':
        env[dds_profile.SWITCH_VARIABLE] = 'off'
    elif config == 'profile':
        dds_profile.apply(env)
    elif config.startswith('xml='):  # another profile, for comparisons: xml=/path/to/profile.xml
        env[dds_profile.SWITCH_VARIABLE] = config[4:]
        dds_profile.apply(env)
    elif config == 'large_data':
        env[dds_profile.SWITCH_VARIABLE] = 'off'
        env['FASTDDS_BUILTIN_TRANSPORTS'] = 'LARGE_DATA'
    else:
        raise SystemExit(f'--dds {config!r}: use {", ".join(DDS_CONFIGS)} or xml=PATH')
    return env


# ------------------------------------------------------------------------------- node parameters

def launched_nodes(args: argparse.Namespace, worker: str, cams: int, width: int, height: int,
                   model_dir: Path, zero_copy: bool = True) -> list[Any]:
    """The graph pipeline.launch.py / batcher.launch.py start (core.pipeline_graph), with this engine."""
    import yaml

    from isaac_perf.core import pipeline_graph as graph
    from isaac_perf.core.paths import config_file
    model: dict[str, Any] = {'model': args.model}
    if args.model == 'detector64':  # small enough for a 2-core CPU at camera rates
        from isaac_perf.core.inference.models import build_detector
        path = build_detector(64, 64, num_classes=4, cache_dir=model_dir)
        model = {'model': '', 'model_file_path': str(path), 'task': 'detection'}
    engine = {'backend': args.backend, 'enable_fp16': bool(args.fp16), 'cuda_graphs': bool(args.cuda_graphs),
              'zero_copy': zero_copy, **model, **({'device': 'cpu'} if args.quick else {})}
    for item in args.worker_param:
        name, _, text = item.partition('=')
        engine[name.strip()] = yaml.safe_load(text)
    if worker == 'inference':
        params = graph.pipeline_params(config_file('pipeline.yaml'), cameras=cams, rate=args.rate,
                                       width=width, height=height, zero_copy=zero_copy)
        params['inference_node'].update(engine)
        nodes = graph.pipeline_nodes(params, use_monitor=not args.no_monitor)
    else:  # batcher.launch.py's defaults
        batcher = {'max_batch_size': 8, 'max_queue_delay_ms': 5.0, 'num_streams': 2, **engine}
        nodes = graph.batcher_nodes(cams, args.rate, width, height, str(config_file('stream_batcher.yaml')),
                                    str(config_file('perf_monitor.yaml')), batcher, zero_copy=zero_copy)
        if args.no_monitor:
            nodes = [n for n in nodes if n.name != 'perf_monitor']
    return nodes


# ------------------------------------------------------------------------------------------ processes

class Group:
    """Processes of one run in one process group (as `ros2 launch` has them), logs to files."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.pgid: int | None = None

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f'{name}.log', 'w')  # noqa: SIM115 - closed in stop()
        # One new process group for the run (launch's children share the terminal's group): SIGINT to it
        # is what a Ctrl-C under `ros2 launch` delivers. (setpgid by hand: Popen's process_group is 3.11+.)
        pgid = 0 if self.pgid is None else self.pgid
        kwargs: dict[str, Any] = {'preexec_fn': lambda: os.setpgid(0, pgid)}
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, **kwargs)
        proc.log = log  # type: ignore[attr-defined]
        if self.pgid is None:
            self.pgid = proc.pid
        self.procs[name] = proc
        return proc

    def __enter__(self) -> Group:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is not None:
            self.kill()  # never leave a pipeline running behind an interrupted benchmark

    def kill(self) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """SIGINT to the group (Ctrl-C under launch), then exit codes and the error lines of each log."""
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        out: dict[str, Any] = {}
        for name, proc in self.procs.items():
            started = time.monotonic()
            try:
                code: Any = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = f'killed (did not exit within {timeout_s:.0f} s of SIGINT)'
            proc.log.close()  # type: ignore[attr-defined]
            text = (self.logs / f'{name}.log').read_text(errors='replace')
            errors = [line for line in text.splitlines() if ERROR_LINE.search(line)]
            ready = ENGINE_READY.findall(text)
            out[name] = {'exit_code': code, 'exit_wait_s': round(time.monotonic() - started, 2),
                         'error_lines': len(errors), 'first_errors': errors[:3],
                         'engine_ready_s': float(ready[0]) if ready else None,
                         'cameras_marked_stopped': len(STOPPED_LINE.findall(text))}
        return out


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = math.nan
    return out


def wait_for(path: Path, timeout_s: float, procs: dict[str, subprocess.Popen]) -> str:
    """'' once `path` exists, else why not (timeout, or a process that died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return ''
        dead = [f'{n} exited with {p.returncode}' for n, p in procs.items() if p.poll() is not None]
        if dead:
            return '; '.join(dead)
        time.sleep(0.05)
    return f'no result within {timeout_s:.0f} s'


# ------------------------------------------------------------------------------------------ runs

def measure(group: Group, spec: dict[str, Any], args: argparse.Namespace, t0_ns: int,
            worker_name: str | None) -> dict[str, Any]:
    """Start the observer, wait for the first result, measure the window, stop everything."""
    spec_path = Path(spec['marker']).with_suffix('.spec.json')
    spec_path.write_text(json.dumps(spec))
    group.start('observer', [sys.executable, str(Path(__file__).resolve()), '--role', 'observe',
                             '--spec', str(spec_path)])
    why = wait_for(Path(spec['marker']), args.first_result_timeout, group.procs)
    first_ns = int(Path(spec['marker']).read_text()) if not why else None
    result: dict[str, Any] = {'t0_ns': t0_ns, 'failure': why,
                              'first_result_s': (first_ns - t0_ns) / 1e9 if first_ns else None}
    # The ceiling's subscriber is the observer itself; a pipeline's observer is outside what is measured.
    pids = {('subscriber' if n == 'observer' else n): p.pid for n, p in group.procs.items()
            if n != 'observer' or spec['kind'] == 'image'}
    if not why:
        time.sleep(args.warmup)
        c0, w0 = cpu_seconds(pids), time.time_ns()
        spy = None
        if args.py_spy and worker_name:
            spy = subprocess.Popen(
                [py_spy_command(), 'record', '-d', str(max(1, round(args.py_spy))), '-r', '100',
                 '-f', 'speedscope', '-o', str(group.logs / f'{worker_name}.speedscope.json'),
                 '-p', str(pids[worker_name]), '--threads', '--idle'],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.duration)
        c1, w1 = cpu_seconds(pids), time.time_ns()
        if spy is not None:
            spy.wait(timeout=args.py_spy + 30)
        result.update(window_ns=[w0, w1], cpu_percent={
            n: round(100 * (c1[n] - c0[n]) / ((w1 - w0) / 1e9), 1) for n in pids})
        time.sleep(min(2.0, max(0.5, args.duration / 5)))  # results of frames stamped in the window
    observer = group.procs.pop('observer')
    observer.send_signal(signal.SIGINT)
    try:
        observer.wait(timeout=20)
    except subprocess.TimeoutExpired:
        observer.kill()
    observer.log.close()  # type: ignore[attr-defined]
    data_path = Path(spec['data'])
    result['observed'] = json.loads(data_path.read_text()) if data_path.exists() else {}
    result['processes'] = group.stop()
    return result


def run_pipeline(args: argparse.Namespace, worker: str, cams: int, width: int, height: int, dds: str,
                 logs: Path, transport: str = 'dds') -> dict[str, Any]:
    from isaac_perf.core.pipeline_graph import process_command
    name = WORKERS[worker][1]
    nodes = launched_nodes(args, worker, cams, width, height, logs.parent / 'models',
                           zero_copy=transport == 'zero_copy')
    env = dds_environment(dds)
    if args.executor:
        env['ISAAC_PERF_EXECUTOR'] = args.executor
    spec = {'kind': 'stage', 'topic': f'/{name}/stage_times', 'marker': str(logs / 'first_result'),
            'data': str(logs / 'observed.json')}
    with Group(env, logs) as group:
        t0 = time.time_ns()
        for node in nodes:
            group.start(node.name, process_command(node, logs))
        raw = measure(group, spec, args, t0, name)
    row = summarize_pipeline(raw, worker, name, cams, width, height, dds, args.rate)
    row['executor'] = args.executor or 'node default'
    row['transport'] = transport
    publisher_cpu_per_frame(row, width, height)
    return row


def one_copy_ms(width: int, height: int, buffers: int = 8, repeats: int = 3) -> float:
    """The floor of publishing one rgb8 frame: one memcpy of its pixels, median over `buffers` different
    sources and destinations (together larger than a CPU cache, as a camera rig's frames are)."""
    import numpy as np
    rng = np.random.default_rng(0)
    src = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(buffers)]
    dst = [np.empty_like(s) for s in src]
    for d in dst:
        d.fill(0)  # first-touch page faults are not the copy's
    times = []
    for _ in range(repeats):
        for s_, d in zip(src, dst, strict=True):
            t = time.perf_counter()
            np.copyto(d, s_)
            times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def publisher_cpu_per_frame(row: dict[str, Any], width: int, height: int) -> None:
    """image_source's CPU per offered frame, beside the cost of one copy of the pixels."""
    cpu = row.get('cpu_percent', {}).get('image_source')
    offered = row.get('offered_fps')
    if cpu is None or not offered or not math.isfinite(offered):
        return
    row['publisher_cpu_ms_per_frame'] = round(10 * cpu / offered, 3)  # % of a core / fps -> ms per frame
    row['one_copy_ms'] = round(one_copy_ms(width, height), 3)


def run_ceiling(args: argparse.Namespace, worker: str, cams: int, width: int, height: int, dds: str,
                logs: Path) -> dict[str, Any]:
    """Plain rclpy publisher -> plain rclpy subscriber, the same frames, QoS and DDS configuration."""
    pub_spec = {'cameras': cams, 'width': width, 'height': height, 'rate': args.rate,
                'data': str(logs / 'published.json')}
    (logs / 'publish.spec.json').write_text(json.dumps(pub_spec))
    spec = {'kind': 'image', 'topics': [f'/camera_{i}/image_raw' for i in range(cams)],
            'executor': args.executor,
            'qos': worker_input_qos(worker), 'marker': str(logs / 'first_result'),
            'data': str(logs / 'observed.json')}
    with Group(dds_environment(dds), logs) as group:
        t0 = time.time_ns()
        group.start('publisher', [sys.executable, str(Path(__file__).resolve()), '--role', 'publish',
                                  '--spec', str(logs / 'publish.spec.json')])
        raw = measure(group, spec, args, t0, None)
    raw['executor'] = args.executor or 'single'
    published = json.loads(Path(pub_spec['data']).read_text()) if Path(pub_spec['data']).exists() else {}
    return summarize_ceiling(raw, published, worker, cams, width, height, dds, args.rate)


def worker_input_qos(worker: str) -> str:
    """The QoS the worker subscribes cameras with, by its shipped defaults."""
    from isaac_perf.core.paths import config_file
    from isaac_perf.core.pipeline_graph import load_params_file
    if worker == 'inference':
        values = load_params_file(config_file('pipeline.yaml'))['inference_node']
        return values.get('input_qos', 'SENSOR_DATA')
    import yaml
    sections = yaml.safe_load(config_file('stream_batcher.yaml').read_text())
    values = next(iter(sections.values()))['ros__parameters']  # its one section ('/**')
    reliability = values.get('input_reliability', 'best_effort')
    return f'{reliability},depth=5'


def _pipeline_bench() -> Any:
    """benchmarks/pipeline.py (the in-process benchmark): its limit measurement and table helpers."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('pipeline_bench', ROOT / 'benchmarks' / 'pipeline.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_f = _pipeline_bench()._f


def run_limit(args: argparse.Namespace, cams: int, width: int, height: int) -> dict[str, Any]:
    module = _pipeline_bench()
    ns = argparse.Namespace(model='detector' if args.model == 'detector64' else args.model,
                            backend=args.backend, fp16=args.fp16, cuda_graphs=args.cuda_graphs, max_batch=0)
    r = module.measure_limit(ns, cams, width, height)
    return {'section': 'limit', 'cameras': cams, 'width': width, 'height': height, 'backend': r['backend'],
            'device': r['device'], 'fps': r['fps'], 'latency_ms': {'p50': r['latency_ms']['p50']},
            'stages_ms': {k: v['mean'] for k, v in r['stages_ms'].items()}}


# ----------------------------------------------------------------------------------------- maths

def percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np
    if not values:
        return {k: math.nan for k in ('p50', 'p90', 'p99', 'max', 'mean')}
    a = np.asarray(values, dtype=np.float64)
    return {'p50': float(np.percentile(a, 50)), 'p90': float(np.percentile(a, 90)),
            'p99': float(np.percentile(a, 99)), 'max': float(a.max()), 'mean': float(a.mean())}


def diag_rate(diags: list[dict[str, Any]], status: str, key: str, w0: int, w1: int
              ) -> tuple[float, float]:
    """(count per second, count over the window) of a counter in /diagnostics, between window edges."""
    points = [(d['stamp_ns'], float(d['values'][key])) for d in diags
              if d['name'].endswith(status) and key in d['values']]
    inside = [p for p in points if w0 - 1.5e9 <= p[0] <= w1 + 1.5e9]
    if len(inside) < 2:
        return math.nan, math.nan
    (ta, a), (tb, b) = inside[0], inside[-1]
    if tb <= ta:
        return math.nan, math.nan
    rate = (b - a) / ((tb - ta) / 1e9)
    return rate, rate * (w1 - w0) / 1e9


def window_drops(diags: list[dict[str, Any]], status: str, w0: int, w1: int) -> dict[str, float]:
    """Frames the worker dropped over the window, by cause (its `dropped_<cause>` counters)."""
    grown = window_growth(diags, status, w0, w1, lambda key: key.startswith('dropped_'))
    return {key[len('dropped_'):]: value for key, value in grown.items()}


def window_growth(diags: list[dict[str, Any]], status: str, w0: int, w1: int, wanted: Callable[[str], bool]
                  ) -> dict[str, float]:
    """How much each wanted counter of the worker's /diagnostics grew over the window [w0, w1]."""
    rows = [d for d in diags if d['name'].endswith(status) and w0 - 1.5e9 <= d['stamp_ns'] <= w1 + 1.5e9]
    if len(rows) < 2:
        return {}
    first, last = rows[0]['values'], rows[-1]['values']
    span = (rows[-1]['stamp_ns'] - rows[0]['stamp_ns']) / 1e9
    scale = ((w1 - w0) / 1e9) / span if span > 0 else math.nan
    out = {}
    for key, value in last.items():
        if wanted(key) and key in first:
            try:
                out[key] = (float(value) - float(first[key])) * scale
            except ValueError:
                continue
    return out


def last_values(diags: list[dict[str, Any]], status: str) -> dict[str, str]:
    rows = [d for d in diags if d['name'].endswith(status)]
    return rows[-1]['values'] if rows else {}


def summarize_pipeline(raw: dict[str, Any], worker: str, name: str, cams: int, width: int, height: int,
                       dds: str, rate: float) -> dict[str, Any]:
    row: dict[str, Any] = {'section': 'pipeline', 'worker': name, 'cameras': cams, 'width': width,
                           'height': height, 'dds': dds, 'rate_hz': rate,
                           'first_result_s': raw.get('first_result_s'), 'failure': raw.get('failure', ''),
                           'processes': raw.get('processes', {}), 'cpu_percent': raw.get('cpu_percent', {})}
    proc = row['processes'].get(name, {})
    row['engine_ready_s'] = proc.get('engine_ready_s')
    row['cameras_marked_stopped'] = proc.get('cameras_marked_stopped')
    row['error_lines'] = sum(p.get('error_lines', 0) for p in row['processes'].values())
    row['exit_codes'] = {n: p.get('exit_code') for n, p in row['processes'].items()}
    obs = raw.get('observed', {})
    if 'window_ns' not in raw or not obs:
        row.update(offered_fps=math.nan, delivered_fps=math.nan, delivered_percent=math.nan,
                   latency_ms=percentiles([]), drops={})
        return row
    w0, w1 = raw['window_ns']
    span = (w1 - w0) / 1e9
    all_reports = obs.get('reports', [])
    transport_ms = obs.get('transport_ms', [])
    inside = [i for i, r in enumerate(all_reports) if w0 <= r[0] <= w1]
    reports = [all_reports[i] for i in inside]
    latency = [(arrival - stamp) / 1e6 for stamp, arrival, _ in reports]
    if len(transport_ms) == len(all_reports):
        row['transport_ms'] = percentiles([transport_ms[i] for i in inside])
    diags = obs.get('diagnostics', [])
    offered, offered_n = diag_rate(diags, ': frames', 'frames_published', w0, w1)
    status = ': inference' if worker == 'inference' else ': stream_batcher'
    received, received_n = diag_rate(diags, status, 'frames_received', w0, w1)
    drops = window_drops(diags, status, w0, w1)
    # Frames lost between publisher and worker: the worker counts them exactly from the publishers'
    # sequence numbers. Published minus received, each a rate read from two nodes' diagnostics at
    # different moments, is only an estimate (it read -3 in a lossless run): the fallback.
    lost = window_growth(diags, status, w0, w1, lambda key: key == 'frames_lost_before_receipt')
    if lost:
        drops['transport'] = lost['frames_lost_before_receipt']
    elif math.isfinite(offered_n):
        drops['transport'] = offered_n - received_n
    delivered = len(reports) / span
    row.update(offered_fps=offered, received_fps=received, delivered_fps=delivered,
               delivered_percent=100 * len(reports) / offered_n if offered_n else math.nan,
               latency_ms=percentiles(latency), drops={k: round(v, 1) for k, v in drops.items()},
               worker_diagnostics=last_values(diags, status))
    if reports and reports[0][2] >= 0:
        per_cam: dict[int, int] = {}
        for _, _, cam in reports:
            per_cam[int(cam)] = per_cam.get(int(cam), 0) + 1
        row['delivered_fps_per_camera'] = {str(k): round(v / span, 1) for k, v in sorted(per_cam.items())}
    ttfr = last_values(diags, status).get('time_to_first_result_s')
    if ttfr is not None:
        row['worker_time_to_first_result_s'] = ttfr
    return row


def summarize_ceiling(raw: dict[str, Any], published: dict[str, Any], worker: str, cams: int, width: int,
                      height: int, dds: str, rate: float) -> dict[str, Any]:
    row: dict[str, Any] = {'section': 'ceiling', 'worker': WORKERS[worker][1], 'cameras': cams,
                           'executor': raw.get('executor', ''),
                           'width': width, 'height': height, 'dds': dds, 'rate_hz': rate,
                           'qos': worker_input_qos(worker), 'failure': raw.get('failure', ''),
                           'cpu_percent': raw.get('cpu_percent', {}),
                           'error_lines': sum(p.get('error_lines', 0)
                                              for p in raw.get('processes', {}).values())}
    obs = raw.get('observed', {})
    if 'window_ns' not in raw or not obs:
        row.update(offered_fps=math.nan, delivered_fps=math.nan, delivered_percent=math.nan,
                   latency_ms=percentiles([]))
        return row
    w0, w1 = raw['window_ns']
    span = (w1 - w0) / 1e9
    stamps = [s for s in published.get('stamps', []) if w0 <= s <= w1]
    offered_n = len(stamps) * cams
    ours = set(stamps)  # a stray publisher on the same domain cannot count as delivered
    reports = [r for r in obs.get('reports', []) if r[0] in ours]
    row.update(offered_fps=offered_n / span, delivered_fps=len(reports) / span,
               delivered_percent=100 * len(reports) / offered_n if offered_n else math.nan,
               latency_ms=percentiles([(a - s) / 1e6 for s, a, _ in reports]))
    return row


# ----------------------------------------------------------------------------------- child roles

def role_observe(spec: dict[str, Any]) -> int:
    """The outside subscriber: stage reports (or camera images) and /diagnostics, dumped on SIGINT."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from isaac_perf.ros.node_main import run_node
    from isaac_perf.ros.qos import qos_from_name

    class Observer(Node):
        def __init__(self) -> None:
            super().__init__('launch_bench_observer')
            self.reports: list[tuple[int, int, int]] = []
            self.transport_ms: list[float] = []  # parallel to reports (stage reports that carry it)
            self.diagnostics: list[dict[str, Any]] = []
            self.marker = Path(spec['marker'])
            if spec['kind'] == 'stage':
                from std_msgs.msg import Float64MultiArray
                self.create_subscription(Float64MultiArray, spec['topic'], self.on_stage,
                                         QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))
            else:
                from sensor_msgs.msg import Image
                for i, topic in enumerate(spec['topics']):
                    self.create_subscription(Image, topic, lambda m, i=i: self.on_image(m, i),
                                             qos_from_name(spec['qos']))
            self.create_subscription(DiagnosticArray, '/diagnostics', self.on_diag,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

        def first(self) -> None:
            if not self.marker.exists():
                tmp = self.marker.with_suffix('.tmp')
                tmp.write_text(str(time.time_ns()))
                tmp.replace(self.marker)

        def on_stage(self, msg: Any) -> None:
            arrival = time.time_ns()
            labels = [d.label for d in msg.layout.dim]
            stamp = int(msg.data[0]) * 1_000_000_000 + int(msg.data[1])
            cam = int(msg.data[labels.index('camera_index')]) if 'camera_index' in labels else -1
            self.reports.append((stamp, arrival, cam))
            if 'transport_ms' in labels:
                self.transport_ms.append(float(msg.data[labels.index('transport_ms')]))
            self.first()

        def on_image(self, msg: Any, index: int) -> None:
            arrival = time.time_ns()
            self.reports.append((msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, arrival,
                                 index))
            self.first()

        def on_diag(self, msg: Any) -> None:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            for status in msg.status:
                self.diagnostics.append({'stamp_ns': stamp, 'name': status.name,
                                         'values': {kv.key: kv.value for kv in status.values}})

        def destroy_node(self) -> None:
            Path(spec['data']).write_text(json.dumps({
                'reports': self.reports, 'transport_ms': self.transport_ms, 'diagnostics': self.diagnostics}))
            super().destroy_node()

    from isaac_perf.ros import executors
    return run_node(Observer, [], executor_factory=executors.factory(spec.get('executor', ''), 'single'))


def role_publish(spec: dict[str, Any]) -> int:
    """The plain publisher of the ceiling: prebuilt Images, one timer for all cameras, stamps recorded."""
    import numpy as np
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from isaac_perf.ros.node_main import run_node

    class Publisher(Node):
        def __init__(self) -> None:
            super().__init__('launch_bench_publisher')
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # image_source's defaults
            rng = np.random.default_rng(0)
            w, h = spec['width'], spec['height']
            self.msgs, self.pubs, self.stamps = [], [], []
            for i in range(spec['cameras']):
                msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
                msg.data = rng.integers(0, 255, h * w * 3, dtype=np.uint8).tobytes()  # once, never an ndarray
                msg.header.frame_id = f'camera_{i}_optical_frame'
                self.msgs.append(msg)
                self.pubs.append(self.create_publisher(Image, f'/camera_{i}/image_raw', qos))
            self.create_timer(1.0 / spec['rate'], self.tick)

        def tick(self) -> None:
            now = self.get_clock().now()
            stamp = now.to_msg()
            for msg, pub in zip(self.msgs, self.pubs, strict=True):
                msg.header.stamp = stamp
                pub.publish(msg)
            self.stamps.append(now.nanoseconds)

        def destroy_node(self) -> None:
            Path(spec['data']).write_text(json.dumps({'stamps': self.stamps}))
            super().destroy_node()

    return run_node(Publisher, [])


# ---------------------------------------------------------------------------------------- output

def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'section':8} {'worker':14} {'cams':>4} {'size':>9} {'dds':10} {'path':9} {'offered':>7} "
            f"{'deliv':>7} "
            f"{'%':>5} {'p50':>6} {'p90':>6} {'p99':>7} {'max':>7} {'tr p99':>6} {'first s':>7} "
            f"{'drops':>22} "
            f"{'cpu %':>24} {'err':>3}")
    lines = [head, '-' * len(head)]
    for r in rows:
        lat = r.get('latency_ms', {})
        drops = ' '.join(f'{k}:{v:.0f}' for k, v in r.get('drops', {}).items() if v and math.isfinite(v))
        cpu = ' '.join(f'{k[:3]}:{v:.0f}' for k, v in r.get('cpu_percent', {}).items())
        lines.append(
            f"{r['section']:8} {r.get('worker', ''):14} {r['cameras']:>4} {r['width']}x{r['height']:<4} "
            f"{r.get('dds', '-') + ('/' + r['executor'][:6] if r.get('executor') else ''):10} "
            f"{r.get('transport', '-'):9} {_f(r.get('offered_fps')):>7} "
            f"{_f(r.get('delivered_fps', r.get('fps'))):>7} "
            f"{_f(r.get('delivered_percent'), 0):>5} {_f(lat.get('p50')):>6} {_f(lat.get('p90')):>6} "
            f"{_f(lat.get('p99')):>7} {_f(lat.get('max')):>7} {_f(r.get('transport_ms', {}).get('p99')):>6} "
            f"{_f(r.get('first_result_s')):>7} {drops:>22} "
            f"{cpu:>24} {r.get('error_lines', '')!s:>3}"
            + (f"  FAILED: {r['failure']}" if r.get('failure') else ''))
    return '\n'.join(lines)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {'host': platform.node(), 'python': platform.python_version(),
                            'cpu_count': os.cpu_count(), 'platform': platform.platform()}
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info['gpu'] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def py_spy_command() -> str | None:
    """py-spy beside this Python, else on PATH; None when neither exists."""
    local = Path(sys.executable).parent / 'py-spy'
    return str(local) if local.exists() else shutil.which('py-spy')


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.py_spy and py_spy_command() is None:
        print('launch_pipeline: --py-spy needs py-spy (pip install py-spy) beside this Python or on PATH',
              file=sys.stderr)
        return 2
    if args.role:
        spec = json.loads(Path(args.spec).read_text())
        return role_observe(spec) if args.role == 'observe' else role_publish(spec)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # SIGTERM (a timeout, a CI runner) as an exception, so the running group is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows_spec = parse_rows(args.rows)
    configs = [c.strip() for c in args.dds.split(',') if c.strip()]
    sections = {s.strip() for s in args.sections.split(',') if s.strip()}
    logs_root = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix='launch_pipeline_'))
    logs_root.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    result = {'benchmark': 'launch_pipeline', 'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
              'command': ' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              'machine': machine(), 'settings': vars(args), 'results': rows}

    def save() -> None:
        from isaac_perf.core.profiling.report import json_safe
        out.write_text(json.dumps(json_safe(result), indent=2) + '\n')

    transports = [t.strip() for t in args.transport.split(',') if t.strip()]
    bad = [t for t in transports if t not in TRANSPORTS]
    if bad:
        raise SystemExit(f'--transport {",".join(bad)}: use {", ".join(TRANSPORTS)}')
    runs = [('ceiling', 'dds')] * ('ceiling' in sections) + [('pipeline', t) for t in transports] * (
        'pipeline' in sections)
    for worker, cams, width, height in rows_spec:
        for dds in configs:
            for section, transport in runs:
                logs = logs_root / f'{section}_{worker}_{cams}x{width}x{height}_{dds}_{transport}'
                if logs.exists():
                    shutil.rmtree(logs)  # a stale marker or data file from an earlier run must not count
                logs.mkdir(parents=True)
                print(f'-- {section}: {worker} {cams}x{width}x{height} at {args.rate:g} Hz, dds={dds}'
                      + (f', transport={transport}' if section == 'pipeline' else ''), flush=True)
                if section == 'pipeline':
                    row = run_pipeline(args, worker, cams, width, height, dds, logs, transport)
                else:
                    row = run_ceiling(args, worker, cams, width, height, dds, logs)
                row['logs'] = str(logs)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
                save()
        if 'limit' in sections:
            print(f'-- limit: {cams}x{width}x{height}', flush=True)
            try:
                rows.append(run_limit(args, cams, width, height))
            except Exception as exc:  # noqa: BLE001 - one failed limit must not lose the other rows
                rows.append({'section': 'limit', 'cameras': cams, 'width': width, 'height': height,
                             'failure': f'{type(exc).__name__}: {exc}'})
            save()
    print()
    print(table(rows))
    save()
    print(f'\nwrote {out} (logs in {logs_root})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
