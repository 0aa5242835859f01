"""`isaac-perf top`: a live terminal view of /performance_metrics and /diagnostics.

    isaac-perf top              # rich dashboard when stdout is a terminal (works over SSH)
    isaac-perf top --plain      # plain text lines, one block per update (also when piped / not a TTY)
    isaac-perf top --once       # one snapshot, then exit (0: got data, 1: nothing arrived in --timeout)

Shows host CPU/memory, each GPU (utilisation, memory, temperature, power, and where the GPU has NVML GPM:
SM activity, occupancy, tensor-core and DRAM-bandwidth use, with the headroom they imply), each watched
topic (rate received against expected, what the publishers sent and the share lost in transport, latency
p50/p99, jitter, drops), each stage-time source (FPS, latency, engine batch size, per-stage means), the
GPU memory and SM use of this graph's node processes, and every /diagnostics status that is not OK,
highlighted (WARN yellow, ERROR red, STALE grey).
Fields are found by their labels (isaac_perf.core.telemetry.metrics), so a newer monitor's extra fields are
ignored.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TextIO

from isaac_perf.app.args import number
from isaac_perf.core.shutdown import OrderlyStop
from isaac_perf.core.telemetry.gpm import GPM_FIELDS, GpmSample, headroom_notes

LEVEL_NAMES = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}
LEVEL_STYLES = {0: 'green', 1: 'bold yellow', 2: 'bold red', 3: 'dim'}
MAX_STATUSES = 256  # diagnostics statuses remembered (newest kept)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--once', action='store_true', help='print one snapshot and exit')
    parser.add_argument('--plain', action='store_true', help='plain text even on a terminal')
    parser.add_argument('--period', type=number(above=0, maximum=3600, unit='s'), default=1.0,
                        help='seconds between screen updates')
    parser.add_argument('--timeout', type=number(above=0, maximum=86400, unit='s'), default=10.0,
                        help='with --once: seconds to wait for /performance_metrics')
    parser.add_argument('--metrics-topic', type=_topic, default='/performance_metrics')
    parser.add_argument('--diagnostics-topic', type=_topic, default='/diagnostics')


def _topic(text: str) -> str:
    from isaac_perf.ros.names import topic_name_error  # rclpy: only when top is the command
    problem = topic_name_error(text, 'isaac_perf_top', what='topic')
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


@dataclass
class Status:
    name: str
    level: int
    message: str
    values: dict[str, str]
    received: float


@dataclass
class TopState:
    """What the view shows: the latest parsed metrics and the latest status per diagnostics name."""
    metrics: dict[str, Any] | None = None
    metrics_received: float = 0.0
    updates: int = 0
    statuses: OrderedDict[str, Status] = field(default_factory=OrderedDict)

    def on_metrics(self, labels: list[str], values: list[float], now: float) -> None:
        from isaac_perf.core.telemetry import metrics
        self.metrics = metrics.parse(labels, values)
        self.metrics_received = now
        self.updates += 1

    def on_status(self, name: str, level: int, message: str, values: dict[str, str], now: float) -> None:
        self.statuses.pop(name, None)
        self.statuses[name] = Status(name, level, message, values, now)
        while len(self.statuses) > MAX_STATUSES:
            self.statuses.popitem(last=False)

    def alerts(self) -> list[Status]:
        """Statuses that are not OK, worst first."""
        bad = [s for s in self.statuses.values() if s.level != 0]
        return sorted(bad, key=lambda s: (-_severity(s.level), s.name))


def _severity(level: int) -> int:
    return {2: 3, 1: 2, 3: 1}.get(level, 0)


def _f(value: Any, digits: int = 1, unit: str = '') -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-'
    return f'{value:.{digits}f}{unit}'


def _level(value: Any) -> int:
    try:
        return int(value) if value is not None and math.isfinite(value) else 0
    except (TypeError, ValueError):
        return 0


def _stage_means(fields: dict[str, float]) -> list[tuple[str, float]]:
    return [(k[:-len('_ms_mean')], v) for k, v in fields.items()
            if k.endswith('_ms_mean') and not k.startswith('latency') and k != 'total_ms_mean']


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _gpm_text(gpu: dict[str, float]) -> str:
    """GPM headroom after the coarse utilization, only where the GPU has GPM."""
    if not _known(gpu.get('sm_active_percent')):
        return ''
    return (f"  | SM active {_f(gpu.get('sm_active_percent'))}%  "
            f"occupancy {_f(gpu.get('sm_occupancy_percent'))}%  "
            f"tensor {_f(gpu.get('tensor_active_percent'))}%  "
            f"DRAM bw {_f(gpu.get('dram_bw_util_percent'))}%")


def gpu_headroom(gpu: dict[str, float]) -> list[str]:
    """The report's reading of one GPU's GPM block (e.g. busy but tensor cores idle)."""
    if not _known(gpu.get('sm_active_percent')):
        return []
    sample = GpmSample(index=0, supported=True)
    sample.values.update({k: float(gpu[k]) for k in GPM_FIELDS if k in gpu})
    return headroom_notes(float(gpu.get('util_percent', math.nan)), sample)


def _sent_text(t: dict[str, float]) -> str:
    """What the publishers sent (sequence numbers) where it differs from what arrived."""
    if not _known(t.get('publisher_rate_hz')):
        return ''
    return (f"  | sent {_f(t.get('publisher_rate_hz'))} Hz, lost in transport "
            f"{_f(t.get('transport_loss_percent'))}%")


def _engine_batch_text(s: dict[str, float]) -> str:
    if not _known(s.get('engine_batch_size_mean')):
        return ''
    return (f"  engine batch {_f(s.get('engine_batch_size_mean'))} "
            f"(max {_f(s.get('engine_batch_size_max'), 0)})")


def render_plain(state: TopState, now: float | None = None) -> str:
    """The snapshot as plain text lines (for pipes, logs and tests)."""
    now = time.time() if now is None else now
    lines = [f"isaac-perf top  {time.strftime('%H:%M:%S', time.localtime(now))}"]
    m = state.metrics
    if m is None:
        lines.append('waiting for /performance_metrics (is perf_monitor running in this ROS_DOMAIN_ID?)')
    else:
        g = m['global']
        age = now - state.metrics_received
        lines.append(
            f"HOST cpu {_f(g.get('cpu_percent'))}% (max core {_f(g.get('cpu_max_core_percent'))}%)  "
            f"mem {_f(g.get('memory_percent'))}%  gpus {_f(g.get('gpu_count'), 0)}  "
            f"pipeline {_f(g.get('pipeline_fps'))} fps  "
            f"latency p50 {_f(g.get('pipeline_latency_ms_p50'))} ms "
            f"p99 {_f(g.get('pipeline_latency_ms_p99'))} ms  alerts warn {_f(g.get('alerts_warn'), 0)} "
            f"error {_f(g.get('alerts_error'), 0)}  (age {age:.1f} s)")
        for index, gpu in m['gpu'].items():
            lines.append(
                f"GPU {index}: util {_f(gpu.get('util_percent'), 0)}%  "
                f"mem {_f(gpu.get('memory_used_mib'), 0)}/{_f(gpu.get('memory_total_mib'), 0)} MiB  "
                f"temp {_f(gpu.get('temperature_c'), 0)} C  "
                f"power {_f(gpu.get('power_w'), 0)}/{_f(gpu.get('power_limit_w'), 0)} W  "
                f"[{LEVEL_NAMES.get(_level(gpu.get('level')), '?')}]{_gpm_text(gpu)}")
            lines.extend(f'  {note}' for note in gpu_headroom(gpu))
        for name, proc in m['proc'].items():
            if not proc.get('count'):
                continue  # a tracked process name with nothing running under it
            lines.append(f"PROC {name}: count {_f(proc.get('count'), 0)}  "
                         f"cpu {_f(proc.get('cpu_percent'))}%  rss {_f(proc.get('rss_mib'), 0)} MiB")
        for topic, t in m['topic'].items():
            lines.append(
                f"TOPIC {topic}: {_f(t.get('rate_hz'))} Hz (expected {_f(t.get('expected_rate_hz'))})  "
                f"latency p50 {_f(t.get('latency_ms_p50'), 2)} p99 {_f(t.get('latency_ms_p99'), 2)} ms  "
                f"jitter {_f(t.get('jitter_ms'), 2)} ms  drops {_f(t.get('drops'), 0)}  "
                f"{_f(t.get('bandwidth_mbps'), 2)} MB/s  [{LEVEL_NAMES.get(_level(t.get('level')), '?')}]"
                f"{_sent_text(t)}")
        for source, s in m['stages'].items():
            stages = '  '.join(f'{n} {_f(v, 2)}' for n, v in _stage_means(s))
            lines.append(
                f"STAGES {source}: {_f(s.get('fps'))} fps  latency p50 {_f(s.get('latency_ms_p50'), 2)} "
                f"p99 {_f(s.get('latency_ms_p99'), 2)} ms  batch {_f(s.get('batch_size_mean'), 1)}  | "
                f"{stages} ms  [{LEVEL_NAMES.get(_level(s.get('level')), '?')}]{_engine_batch_text(s)}")
        for node, n in m.get('node', {}).items():
            lines.append(f"NODE {node} (pid {_f(n.get('pid'), 0)}): "
                         f"GPU {_f(n.get('gpu_memory_mib'), 0)} MiB  "
                         f"SM {_f(n.get('gpu_sm_util_percent'), 0)}%  "
                         f"on {_f(n.get('gpu_count'), 0)} GPU(s)")
    for status in state.alerts():
        lines.append(f'ALERT {LEVEL_NAMES.get(status.level, status.level)} {status.name}: {status.message}')
    return '\n'.join(lines)


def render_rich(state: TopState, now: float | None = None) -> Any:
    """The snapshot as a rich renderable (tables; alerts highlighted)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    parts: list[Any] = []
    m = state.metrics
    head = Text(f"isaac-perf top  {time.strftime('%H:%M:%S', time.localtime(now))}  ", style='bold')
    if m is None:
        head.append('waiting for /performance_metrics ...', style='yellow')
        parts.append(head)
    else:
        g = m['global']
        head.append(f"cpu {_f(g.get('cpu_percent'))}%  mem {_f(g.get('memory_percent'))}%  "
                    f"pipeline {_f(g.get('pipeline_fps'))} fps  "
                    f"p50 {_f(g.get('pipeline_latency_ms_p50'))} ms  "
                    f"p99 {_f(g.get('pipeline_latency_ms_p99'))} ms  ")
        warn, err = _level(g.get('alerts_warn')), _level(g.get('alerts_error'))
        head.append(f'alerts {warn}/{err}', style='bold red' if err else ('bold yellow' if warn else 'green'))
        head.append(f'  (age {now - state.metrics_received:.1f} s)', style='dim')
        parts.append(head)
        if m['gpu']:
            table = Table(title='GPUs', expand=False)
            for col in ('gpu', 'util %', 'SM act %', 'occ %', 'tensor %', 'DRAM %', 'mem MiB', 'mem %',
                        'temp C', 'power W', 'level'):
                table.add_column(col, justify='right')
            for index, gpu in m['gpu'].items():
                lvl = _level(gpu.get('level'))
                frac = gpu.get('memory_used_fraction')
                table.add_row(index, _f(gpu.get('util_percent'), 0), _f(gpu.get('sm_active_percent')),
                              _f(gpu.get('sm_occupancy_percent')), _f(gpu.get('tensor_active_percent')),
                              _f(gpu.get('dram_bw_util_percent')),
                              f"{_f(gpu.get('memory_used_mib'), 0)}/{_f(gpu.get('memory_total_mib'), 0)}",
                              _f(100 * frac if frac is not None else None, 1),
                              _f(gpu.get('temperature_c'), 0), _f(gpu.get('power_w'), 0), _level_text(lvl))
            parts.append(table)
        if m['topic']:
            table = Table(title='Topics', expand=False)
            for col in ('topic', 'Hz', 'sent Hz', 'lost %', 'expected', 'p50 ms', 'p99 ms', 'jitter ms',
                        'drops', 'MB/s', 'level'):
                table.add_column(col, justify='left' if col == 'topic' else 'right', overflow='fold')
            for topic, t in m['topic'].items():
                lvl = _level(t.get('level'))
                table.add_row(topic, _f(t.get('rate_hz')), _f(t.get('publisher_rate_hz')),
                              _f(t.get('transport_loss_percent')), _f(t.get('expected_rate_hz')),
                              _f(t.get('latency_ms_p50'), 2), _f(t.get('latency_ms_p99'), 2),
                              _f(t.get('jitter_ms'), 2), _f(t.get('drops'), 0),
                              _f(t.get('bandwidth_mbps'), 2), _level_text(lvl))
            parts.append(table)
        if m['stages']:
            table = Table(title='Stage times', expand=False)
            for col in ('source', 'fps', 'p50 ms', 'p99 ms', 'engine batch', 'stages (mean ms)', 'level'):
                table.add_column(col, justify='left' if col in ('source', 'stages (mean ms)') else 'right',
                                 overflow='fold')
            for source, s in m['stages'].items():
                lvl = _level(s.get('level'))
                table.add_row(source, _f(s.get('fps')), _f(s.get('latency_ms_p50'), 2),
                              _f(s.get('latency_ms_p99'), 2), _f(s.get('engine_batch_size_mean')),
                              '  '.join(f'{n} {_f(v, 2)}' for n, v in _stage_means(s)), _level_text(lvl))
            parts.append(table)
    alerts = state.alerts()
    if alerts:
        table = Table(title='Alerts', expand=False, title_style='bold red')
        table.add_column('level')
        table.add_column('status')
        table.add_column('message')
        for s in alerts:
            style = LEVEL_STYLES.get(s.level)
            table.add_row(Text(LEVEL_NAMES.get(s.level, str(s.level)), style), Text(s.name, style), s.message)
        parts.append(table)
    return Group(*parts)


def _level_text(level: int) -> Any:
    from rich.text import Text
    return Text(LEVEL_NAMES.get(level, '?'), LEVEL_STYLES.get(level))


def _level_of(raw: Any) -> int:
    """DiagnosticStatus.level is a one-byte `bytes` in rclpy; accept ints too."""
    if isinstance(raw, (bytes, bytearray)):
        return raw[0] if raw else 0
    return int(raw)


def run(args: argparse.Namespace, context: Any = None, stream: TextIO | None = None) -> int:
    """Subscribe and draw until interrupted (or one snapshot with --once); `context` for tests."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Float32MultiArray

    stream = stream or sys.stdout
    state = TopState()
    own = context is None
    if own:
        context = rclpy.Context()
        rclpy.init(context=context)
    node = Node('isaac_perf_top', context=context)
    node.create_subscription(
        Float32MultiArray, args.metrics_topic,
        lambda msg: state.on_metrics([d.label for d in msg.layout.dim], list(msg.data), time.time()), 10)

    def on_diagnostics(msg: Any) -> None:
        now = time.time()
        for s in msg.status:
            state.on_status(s.name, _level_of(s.level), s.message, {kv.key: kv.value for kv in s.values}, now)

    node.create_subscription(DiagnosticArray, args.diagnostics_topic, on_diagnostics, 50)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    use_rich = not args.plain and stream.isatty()
    # Ctrl-C ends the view; a second one while it closes is ignored (no traceback from the clean-up).
    stop = OrderlyStop('isaac-perf top', keep_ignoring=False)
    try:
        stop.install()
        if args.once:
            return _run_once(args, state, executor, stop, stream, use_rich)
        if use_rich:
            from rich.console import Console
            from rich.live import Live
            with Live(render_rich(state), console=Console(file=stream), refresh_per_second=4,
                      screen=False) as live:
                next_draw = time.monotonic()
                while not stop.requested.is_set():
                    executor.spin_once(timeout_sec=0.05)
                    if time.monotonic() >= next_draw:
                        live.update(render_rich(state))
                        next_draw = time.monotonic() + args.period
        else:
            seen = -1
            next_draw = time.monotonic()
            while not stop.requested.is_set():
                executor.spin_once(timeout_sec=0.05)
                if time.monotonic() >= next_draw and state.updates != seen:
                    seen = state.updates
                    print(render_plain(state), file=stream, flush=True)
                    print('', file=stream, flush=True)
                    next_draw = time.monotonic() + args.period
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        stop.request()  # later signals are ignored while the view closes
        executor.shutdown()
        node.destroy_node()
        if own:
            context.try_shutdown()
        stop.restore()
    return 0


def _run_once(args: argparse.Namespace, state: TopState, executor: Any, stop: Any, stream: TextIO,
              use_rich: bool) -> int:
    """--once: wait for one metrics message (and its tick's diagnostics), draw it, return the exit code."""
    deadline = time.monotonic() + args.timeout
    while state.metrics is None and time.monotonic() < deadline and not stop.requested.is_set():
        executor.spin_once(timeout_sec=0.05)
    if stop.requested.is_set():
        return 0
    if state.metrics is None:
        print(f'isaac-perf top: no {args.metrics_topic} message within {args.timeout:.0f} s: start '
              'perf_monitor (or check ROS_DOMAIN_ID)', file=sys.stderr)
        return 1
    grace = time.monotonic() + min(1.0, args.period)  # let /diagnostics of the same tick arrive
    while time.monotonic() < grace:
        executor.spin_once(timeout_sec=0.05)
    _draw_once(state, stream, use_rich)
    return 0


def _draw_once(state: TopState, stream: TextIO, use_rich: bool) -> None:
    if use_rich:
        from rich.console import Console
        Console(file=stream).print(render_rich(state))
    else:
        print(render_plain(state), file=stream, flush=True)


def main(args: argparse.Namespace) -> int:
    return run(args)
