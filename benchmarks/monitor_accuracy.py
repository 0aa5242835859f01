"""Does perf_monitor tell the truth? Its rates against the publishers' own counts, one run, many processes.

Publishers, one process per kind, each topic published twice (`/acc/<kind><i>/reliable`, reliable depth
10, and `/acc/<kind><i>/best_effort`, best effort depth 5), stamping every message at publish time and
recording each publish time (the truth):

- imu:  `--imu` (4) sensor_msgs/Imu topics at 1 kHz;
- vga:  `--vga` (8) 640x480 rgb8 sensor_msgs/Image topics at 30 Hz;
- hd:   `--hd` (4) 1920x1080 rgb8 sensor_msgs/Image topics at 30 Hz.

Watchers, each its own process, started together after the publishers and stopped together:

- monitor:   PerfMonitor (default poll mode) on every topic, window = the measuring window; at the end its
             per-topic publisher rate (sequence numbers), received rate and transport loss;
- reference: a plain subscriber per topic with the publisher's own QoS, raw (no deserialization),
             recording each arrival: what a subscriber that wants every message actually gets;
- naive:     what `ros2 topic hz` does (typed subscription, every message deserialized, arrival times in
             a list trimmed with pop(0), sensor-data QoS) on ONE topic of each kind (the reliable one).

Reported per topic: the true publish rate over the monitor's window, the monitor's publisher rate and its
error, the monitor's and the reference's received rates, the naive rate; per process: CPU (user + system,
psutil) over the measuring window. Targets: monitor publisher rate within 1% of truth on every topic;
monitor received rate equal to the reference's (within 2%: best-effort losses are per subscriber);
monitor CPU below the naive watcher's.

    .venv/bin/python benchmarks/monitor_accuracy.py [--duration 20] [--imu 4 --vga 8 --hd 4]
        [--fastdds-profile config/fastdds_large_frames.xml] [--out results/monitor_accuracy.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from monitor_overhead import bench_env, hz_report  # the same naive watcher and set-up (benchmarks/)

HERE = Path(__file__).resolve()
KINDS = {  # kind -> (rate Hz, message description)
    'imu': (1000.0, 'sensor_msgs/Imu'),
    'vga': (30.0, '640x480 rgb8 Image'),
    'hd': (30.0, '1920x1080 rgb8 Image'),
}
QOS_VARIANTS = ('reliable', 'best_effort')


def kind_of(topic: str) -> str:
    return topic.split('/')[2].rstrip('0123456789')


def topics_of(kind: str, count: int) -> list[str]:
    return [f'/acc/{kind}{i}/{q}' for i in range(count) for q in QOS_VARIANTS]


def qos_of(topic: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    if topic.endswith('/reliable'):
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


def _spin(executor) -> None:
    """Spin in this (main) thread until SIGINT; the caller then writes its results and calls `_exit`.

    (The EventsExecutor returns neither on rclpy's SIGINT handling nor from a future, and spins only in
    the thread that made it, so: spin_once in a loop that a flag ends. A child only has to hand its
    numbers back, so it leaves with os._exit once they are written.)"""
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    while not stop:
        executor.spin_once(timeout_sec=0.1)


def _exit() -> None:
    sys.stdout.flush()
    os._exit(0)


def _executor():
    try:
        from rclpy.experimental import EventsExecutor  # Jazzy and later: the cheapest executor
        return EventsExecutor()
    except ImportError:
        from rclpy.executors import SingleThreadedExecutor
        return SingleThreadedExecutor()


# ---- child roles --------------------------------------------------------------------------------------

def role_publisher(args) -> None:
    import rclpy
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, Imu

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node(f'acc_pub_{args.kind}')
    rate = KINDS[args.kind][0]
    topics = topics_of(args.kind, args.count)
    if args.kind == 'imu':
        msg = Imu()
        msg.linear_acceleration.z = 9.81
        msg_type = Imu
    else:
        w, h = (640, 480) if args.kind == 'vga' else (1920, 1080)
        msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
        msg.data = np.random.default_rng(0).integers(0, 255, w * h * 3, dtype=np.uint8).tobytes()
        msg_type = Image
    pubs = [node.create_publisher(msg_type, t, qos_of(t)) for t in topics]
    capacity = int(rate * args.max_seconds) + 16
    times = np.zeros((len(topics), capacity), dtype=np.int64)   # every publish time = every stamp
    count = np.zeros(len(topics), dtype=np.int64)

    def tick():
        for i, pub in enumerate(pubs):
            now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            pub.publish(msg)
            if count[i] < capacity:
                times[i, count[i]] = now
            count[i] += 1
    node.create_timer(1.0 / rate, tick)
    executor = _executor()
    executor.add_node(node)
    _spin(executor)
    np.savez(Path(args.outdir) / f'pub_{args.kind}.npz', topics=np.array(topics),
             **{f't{i}': times[i, :min(count[i], capacity)] for i in range(len(topics))})
    _exit()


def role_reference(args) -> None:
    """Every topic with its publisher's QoS, raw: arrival time of every message."""
    import rclpy
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, Imu

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node('acc_reference')
    topics = json.loads(Path(args.topics_file).read_text())
    arrivals = {t: [] for t in topics}
    for t in topics:
        msg_type = Imu if kind_of(t) == 'imu' else Image
        node.create_subscription(msg_type, t, lambda _d, a=arrivals[t]: a.append(time.time_ns()), qos_of(t),
                                 raw=True)
    executor = _executor()
    executor.add_node(node)
    _spin(executor)
    np.savez(Path(args.outdir) / 'reference.npz', topics=np.array(topics),
             **{f't{i}': np.array(arrivals[t], dtype=np.int64) for i, t in enumerate(topics)})
    _exit()


def role_naive(args) -> None:
    """What `ros2 topic hz` does: deserialize every message, list of times trimmed with pop(0)."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, Imu

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node('acc_naive')
    topics = json.loads(Path(args.topics_file).read_text())
    window = 10000
    times = {t: [] for t in topics}

    def make_callback(t):
        def callback(_msg):
            lst = times[t]
            lst.append(time.time_ns())
            if len(lst) > window:
                lst.pop(0)
        return callback
    for t in topics:
        node.create_subscription(Imu if kind_of(t) == 'imu' else Image, t, make_callback(t),
                                 qos_profile_sensor_data)

    node.create_timer(1.0, lambda: hz_report(times.values()))
    from rclpy.executors import SingleThreadedExecutor  # ros2 topic hz spins the default executor
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    _spin(executor)
    np.savez(Path(args.outdir) / 'naive.npz', topics=np.array(topics),
             **{f't{i}': np.array(times[t], dtype=np.int64) for i, t in enumerate(topics)})
    _exit()


def monitor_report(node, now_ns: int) -> dict:
    """Per topic what the monitor would publish at `now_ns`."""
    out = {}
    for topic, watch in node.watches.items():
        stream = getattr(watch, 'greenwave', None)
        if stream is not None:
            s = stream.snapshot(now_ns)
            out[topic] = {'publisher_rate_hz': s.publisher_rate_hz, 'received_rate_hz': s.received_rate_hz,
                          'transport_loss_fraction': s.transport_loss_fraction, 'drops': s.drops,
                          'drops_source': s.drop_source, 'count': s.count, 'age_s': s.age_s,
                          'frame_rate_node_hz': s.frame_rate_node_hz,
                          'frame_rate_msg_hz': s.frame_rate_msg_hz,
                          'qos': getattr(watch, 'qos_reliability', '')}
        else:   # a monitor without the greenwave module: arrival rate only
            s = watch.stats.snapshot(now_ns)
            out[topic] = {'publisher_rate_hz': math.nan, 'received_rate_hz': s.rate_hz,
                          'transport_loss_fraction': math.nan, 'drops': s.drops, 'count': s.count}
    return out


def role_monitor(args) -> None:
    """PerfMonitor spun as its main() spins it; writes what it measured at the moment it is stopped."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from isaac_perf.nodes.perf_monitor import PerfMonitor

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    topics = json.loads(Path(args.topics_file).read_text())
    rates = [KINDS[kind_of(t)][0] for t in topics]
    node = PerfMonitor(parameter_overrides=[
        Parameter('watched_topics', value=topics), Parameter('expected_rates_hz', value=rates),
        Parameter('window_s', value=args.window),
        Parameter('ring_capacity', value=int(args.window * 1100) + 64),
        Parameter('watch_depth', value=args.watch_depth)])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    _spin(executor)
    now = time.time_ns()
    report = {'now_ns': now, 'topics': monitor_report(node, now)}
    (Path(args.outdir) / 'monitor.json').write_text(json.dumps(report))
    _exit()


# ---- orchestration ------------------------------------------------------------------------------------

def spawn(role: str, env: dict, **opts) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE), '--role', role]
    for key, value in opts.items():
        cmd += [f'--{key.replace("_", "-")}', str(value)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if p.returncode not in (0, -signal.SIGINT):
            print(f'  child exited {p.returncode}: {err[-2000:]}', file=sys.stderr)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def window_rate(times_ns: np.ndarray, start_ns: int, end_ns: int) -> float:
    t = times_ns[(times_ns > start_ns) & (times_ns <= end_ns)]
    return (t.size - 1) * 1e9 / (t[-1] - t[0]) if t.size > 1 and t[-1] > t[0] else math.nan


def load(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    data = np.load(path)
    return {str(t): data[f't{i}'] for i, t in enumerate(data['topics'])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--role', default='orchestrate',
                        choices=['orchestrate', 'publisher', 'reference', 'naive', 'monitor'])
    parser.add_argument('--kind', choices=list(KINDS))
    parser.add_argument('--count', type=int, default=1)
    parser.add_argument('--max-seconds', type=float, default=120.0)
    parser.add_argument('--outdir')
    parser.add_argument('--topics-file')
    parser.add_argument('--window', type=float, default=20.0)
    parser.add_argument('--imu', type=int, default=4,
                        help='Imu topics at 1 kHz (each reliable + best effort)')
    parser.add_argument('--vga', type=int, default=8, help='640x480 topics at 30 Hz')
    parser.add_argument('--hd', type=int, default=4, help='1920x1080 topics at 30 Hz')
    parser.add_argument('--duration', type=float, default=20.0, help='measuring window (s)')
    parser.add_argument('--warmup', type=float, default=6.0, help='seconds before measuring (discovery)')
    parser.add_argument('--fastdds-profile', default='',
                        help='FASTDDS_DEFAULT_PROFILES_FILE for every process')
    parser.add_argument('--watch-depth', type=int, default=200, help="perf_monitor's watch_depth")
    parser.add_argument('--out', default='results/monitor_accuracy.json')
    args = parser.parse_args()
    roles = {'publisher': role_publisher, 'reference': role_reference, 'naive': role_naive,
             'monitor': role_monitor}
    if args.role != 'orchestrate':
        roles[args.role](args)
        return

    env = bench_env()
    if args.fastdds_profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(Path(args.fastdds_profile).resolve())
    counts = {'imu': args.imu, 'vga': args.vga, 'hd': args.hd}
    counts = {k: n for k, n in counts.items() if n > 0}
    all_topics = [t for k, n in counts.items() for t in topics_of(k, n)]
    naive_topics = [topics_of(k, 1)[0] for k in counts]
    outdir = Path(tempfile.mkdtemp(prefix='monitor_accuracy_'))
    (outdir / 'all.json').write_text(json.dumps(all_topics))
    (outdir / 'naive.json').write_text(json.dumps(naive_topics))
    max_s = args.warmup + args.duration + 60
    print(f'publishers: {counts} x 2 QoS = {len(all_topics)} topics; measuring {args.duration:g} s '
          f'after {args.warmup:g} s; files in {outdir}', flush=True)
    pubs = [spawn('publisher', env, kind=k, count=n, max_seconds=max_s, outdir=outdir)
            for k, n in counts.items()]
    time.sleep(3.0)
    watchers = {
        'monitor': spawn('monitor', env, topics_file=outdir / 'all.json', window=args.duration,
                         outdir=outdir, watch_depth=args.watch_depth),
        'reference': spawn('reference', env, topics_file=outdir / 'all.json', outdir=outdir),
        'naive': spawn('naive', env, topics_file=outdir / 'naive.json', outdir=outdir),
    }
    ps = {name: psutil.Process(p.pid) for name, p in watchers.items()}
    ps.update({f'publisher {k}': psutil.Process(p.pid) for k, p in zip(counts, pubs, strict=True)})
    time.sleep(args.warmup)
    c0 = {n: cpu_seconds(p) for n, p in ps.items()}
    t0 = time.monotonic()
    time.sleep(args.duration)
    cpu = {n: 100.0 * (cpu_seconds(p) - c0[n]) / (time.monotonic() - t0) for n, p in ps.items()}
    stop(list(watchers.values()))
    stop(pubs)

    monitor = json.loads((outdir / 'monitor.json').read_text()) if (outdir / 'monitor.json').exists() else {}
    end_ns = monitor.get('now_ns', time.time_ns())
    start_ns = end_ns - int(args.duration * 1e9)
    truth = {}
    for k in counts:
        truth.update(load(outdir / f'pub_{k}.npz'))
    reference, naive = load(outdir / 'reference.npz'), load(outdir / 'naive.npz')
    rows = []
    for t in all_topics:
        m = monitor.get('topics', {}).get(t, {})
        # The monitor's window holds what it had drained by `end`: shift the truth by its lag (the age of
        # its newest message) so both cover the same publications.
        lag_ns = int(1e9 * m.get('age_s', 0.0)) if math.isfinite(m.get('age_s', math.nan)) else 0
        true = window_rate(truth.get(t, np.zeros(0, np.int64)), start_ns - lag_ns, end_ns - lag_ns)
        pub = m.get('publisher_rate_hz', math.nan)
        rows.append({
            'topic': t, 'true_rate_hz': true, 'monitor_publisher_rate_hz': pub,
            'publisher_rate_error_percent': 100.0 * (pub - true) / true if true == true else math.nan,
            'monitor_received_rate_hz': m.get('received_rate_hz', math.nan),
            'reference_received_rate_hz': window_rate(reference.get(t, np.zeros(0, np.int64)), start_ns,
                                                      end_ns),
            'naive_rate_hz': window_rate(naive[t], start_ns, end_ns) if t in naive else math.nan,
            'monitor_transport_loss_percent': 100.0 * m.get('transport_loss_fraction', math.nan),
            'monitor_drops': m.get('drops', math.nan), 'drops_source': m.get('drops_source', ''),
        })
    print_table(rows, cpu)
    errors = [abs(r['publisher_rate_error_percent']) for r in rows]
    recv = [abs(r['monitor_received_rate_hz'] / r['reference_received_rate_hz'] - 1) * 100 for r in rows
            if r['reference_received_rate_hz'] > 0]
    summary = {
        'max_publisher_rate_error_percent': max(errors) if errors else math.nan,
        'publisher_rate_within_1_percent': all(e <= 1.0 for e in errors),
        'max_received_vs_reference_percent': max(recv) if recv else math.nan,
        'received_within_2_percent_of_reference': bool(recv) and all(e <= 2.0 for e in recv),
        'monitor_cpu_percent': cpu['monitor'], 'naive_cpu_percent': cpu['naive'],
        'monitor_cheaper_than_naive': cpu['monitor'] < cpu['naive'],
        'cpu_percent': cpu,
    }
    print('\n' + json.dumps(summary, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        'benchmark': 'monitor_accuracy', 'date': time.strftime('%Y-%m-%d %H:%M:%S'),
        'command': ' '.join(sys.argv),
        'machine': {'cpus': psutil.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version(), 'load_1m_at_end': os.getloadavg()[0]},
        'fastdds_profile': args.fastdds_profile or 'defaults', 'duration_s': args.duration,
        'counts': counts, 'summary': summary, 'rows': rows}, indent=1, default=float))
    print(f'wrote {out}')


def print_table(rows: list[dict], cpu: dict[str, float]) -> None:
    print(f'\n{"topic":<26}{"true Hz":>9}{"mon pub Hz":>11}{"err %":>8}{"mon recv":>10}{"ref recv":>10}'
          f'{"naive":>8}{"loss %":>8}{"drops":>8}  source')
    for r in rows:
        print(f'{r["topic"]:<26}{r["true_rate_hz"]:>9.2f}{r["monitor_publisher_rate_hz"]:>11.2f}'
              f'{r["publisher_rate_error_percent"]:>8.2f}{r["monitor_received_rate_hz"]:>10.2f}'
              f'{r["reference_received_rate_hz"]:>10.2f}{r["naive_rate_hz"]:>8.2f}'
              f'{r["monitor_transport_loss_percent"]:>8.1f}{r["monitor_drops"]:>8}  {r["drops_source"]}')
    print('\nCPU over the measuring window (% of one core): '
          + ', '.join(f'{n} {v:.1f}' for n, v in cpu.items()))


if __name__ == '__main__':
    main()
