"""CPU cost of perf_monitor watching fast topics, beside a naive `ros2 topic hz`-style watcher, same run.

Every watcher runs in its own process while one publisher process sends the traffic; the number is the
watcher process's CPU time (user + system, psutil) over a fixed measuring window after a warm-up, so
discovery and imports are not counted. Watchers, one at a time against the same publisher:

- idle:            an rclpy node that subscribes to nothing (the floor: what a spinning process costs);
- monitor poll:    PerfMonitor (default 'poll' mode: raw subscriptions drained on a timer), all topics;
- monitor callback: PerfMonitor in 'callback' mode (one raw callback per message), all topics;
- naive x1 / x4:   a typed subscription that deserializes every message and keeps arrival times in a list
                   trimmed with pop(0), as `ros2 topic hz` does, on one topic / on every topic.

Scenarios: 4 topics of sensor_msgs/Imu at 1 kHz each; then one 640x480 rgb8 sensor_msgs/Image topic at
30 Hz (deserialization cost grows with message size). Target: the monitor on all 4 fast topics costs less
CPU than the naive watcher on ONE.

    .venv/bin/python benchmarks/monitor_overhead.py [--duration 10] [--out results/monitor_overhead.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve()


# ---- child roles --------------------------------------------------------------------------------------

def _spin_until_signal(executor) -> None:
    from rclpy.executors import ExternalShutdownException
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def role_publisher(args) -> None:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, Imu

    rclpy.init()
    node = Node('bench_publisher')
    topics = [f'/bench/t{i}' for i in range(args.topics)]
    if args.kind == 'imu':
        pubs = [node.create_publisher(Imu, t, QoSProfile(depth=100)) for t in topics]
        msg = Imu()
        msg.linear_acceleration.z = 9.81
    else:
        pubs = [node.create_publisher(Image, t, QoSProfile(depth=5)) for t in topics]
        msg = Image(height=480, width=640, encoding='rgb8', step=640 * 3)
        msg.data = np.random.default_rng(0).integers(0, 255, 640 * 480 * 3, dtype=np.uint8).tobytes()
    count = [0]
    clock = node.get_clock()

    def tick():
        msg.header.stamp = clock.now().to_msg()
        for pub in pubs:
            pub.publish(msg)
        count[0] += 1
    node.create_timer(1.0 / args.rate, tick)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    _spin_until_signal(executor)
    print(json.dumps({'published_per_topic': count[0]}), flush=True)
    rclpy.try_shutdown()


def bench_env() -> dict:
    """The children's environment: one DDS domain for the run, discovery on this host, this tree first."""
    env = dict(os.environ)
    env.setdefault('ROS_DOMAIN_ID', str(random.randint(150, 230)))
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['PYTHONPATH'] = str(HERE.parents[1]) + os.pathsep + env.get('PYTHONPATH', '')
    return env


def hz_report(time_lists) -> None:
    """What `ros2 topic hz` computes once a second: mean rate and std over its window (shown, not kept)."""
    for t in time_lists:
        if len(t) > 1:
            deltas = [b - a for a, b in zip(t[:-1], t[1:], strict=True)]
            mean = sum(deltas) / len(deltas)
            _ = (1.0 / mean, (sum((d - mean) ** 2 for d in deltas) / len(deltas)) ** 0.5)


def role_naive(args) -> None:
    """What `ros2 topic hz` does: deserialize every message, list of times trimmed with pop(0)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, Imu

    rclpy.init()
    node = Node('bench_naive')
    msg_type = Imu if args.kind == 'imu' else Image
    window = 10000
    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    def make_callback(topic):
        times[topic], counts[topic] = [], 0

        def callback(_msg):
            counts[topic] += 1
            t = times[topic]
            t.append(time.monotonic())
            if len(t) > window:
                t.pop(0)
        return callback
    for i in range(args.topics):
        topic = f'/bench/t{i}'
        node.create_subscription(msg_type, topic, make_callback(topic), QoSProfile(depth=100))

    node.create_timer(1.0, lambda: hz_report(times.values()))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    _spin_until_signal(executor)
    end = time.monotonic()
    # Arrival rate over the last `window` seconds (the orchestrator's measuring window).
    rates = {}
    for topic, t in times.items():
        recent = [x for x in t if x > end - args.window]
        rates[topic] = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
    print(json.dumps({'received': counts, 'rate_hz': rates}), flush=True)
    rclpy.try_shutdown()


def role_idle(args) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    rclpy.init()
    node = Node('bench_idle')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    _spin_until_signal(executor)
    print(json.dumps({'received': {}}), flush=True)
    rclpy.try_shutdown()


def role_monitor(args) -> None:
    """PerfMonitor spun exactly as its main() does; prints what each watch counted on exit."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from isaac_perf.nodes.perf_monitor import PerfMonitor

    rclpy.init()
    topics = [f'/bench/t{i}' for i in range(args.topics)]
    node = PerfMonitor(parameter_overrides=[
        Parameter('watched_topics', value=topics), Parameter('watch_mode', value=args.mode),
        Parameter('watch_depth', value=200), Parameter('window_s', value=args.window),
        Parameter('ring_capacity', value=int(args.window * 2000) + 16)])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    _spin_until_signal(executor)
    now = time.time_ns()
    out = {t: w.stats.snapshot(now) for t, w in node.watches.items()}
    print(json.dumps({'received': {t: s.count for t, s in out.items()},
                      'drops': {t: s.drops for t, s in out.items()},
                      'rate_hz': {t: s.rate_hz for t, s in out.items()},
                      'latency_ms_p50': {t: s.latency_ms.p50 for t, s in out.items()}}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


# ---- orchestration ------------------------------------------------------------------------------------

def spawn(role: str, env: dict, **opts) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE), '--role', role]
    for key, value in opts.items():
        cmd += [f'--{key}', str(value)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def stop(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    for line in reversed(out.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(name: str, role: str, env: dict, warmup_s: float, duration_s: float, **opts) -> dict:
    proc = spawn(role, env, window=duration_s, **opts)
    ps = psutil.Process(proc.pid)
    time.sleep(warmup_s)
    c0, t0 = cpu_seconds(ps), time.monotonic()
    time.sleep(duration_s)
    c1, t1 = cpu_seconds(ps), time.monotonic()
    rss_mib = ps.memory_info().rss / 2**20
    result = stop(proc)
    rate = sum(v for v in result.get('rate_hz', {}).values() if v == v)   # NaN-safe sum
    row = {'watcher': name, 'topics': opts.get('topics', 0), 'cpu_s': c1 - c0, 'wall_s': t1 - t0,
           'cpu_percent': 100.0 * (c1 - c0) / (t1 - t0), 'rss_mib': rss_mib,
           'received_msgs_per_s': rate, 'details': result}
    print(f'  {name:<22} cpu {row["cpu_percent"]:6.1f} % of a core, receiving {rate:.0f} msgs/s', flush=True)
    return row


def scenario(title: str, kind: str, rate: float, topics: int, watchers: list, env: dict,
             warmup_s: float, duration_s: float) -> dict:
    print(f'{title}: publisher {topics} x {kind} at {rate:g} Hz', flush=True)
    pub = spawn('publisher', env, kind=kind, rate=rate, topics=topics)
    time.sleep(2.0)
    rows = []
    try:
        for name, role, opts in watchers:
            rows.append(measure(name, role, env, warmup_s, duration_s, kind=kind, **opts))
    finally:
        published = stop(pub).get('published_per_topic', 0)
    return {'title': title, 'kind': kind, 'rate_hz': rate, 'topics': topics,
            'published_per_topic': published, 'rows': rows}


def cpu_per_message_us(row: dict) -> float:
    rate = row['received_msgs_per_s']
    return 1e6 * row['cpu_s'] / (rate * row['wall_s']) if rate > 0 else float('nan')


def print_table(result: dict) -> None:
    rows = {r['watcher']: r for r in result['rows']}
    naive1 = rows.get('naive x1')
    print(f'\n{result["title"]}')
    print(f'{"watcher":<22}{"topics":>7}{"CPU % core":>12}{"vs naive x1":>13}{"msgs/s":>10}'
          f'{"CPU us/msg":>12}{"RSS MiB":>9}')
    for r in result['rows']:
        ratio = r['cpu_s'] / naive1['cpu_s'] if naive1 and naive1['cpu_s'] > 0 else float('nan')
        rate = r['received_msgs_per_s']
        print(f'{r["watcher"]:<22}{r["topics"]:>7}{r["cpu_percent"]:>12.1f}{ratio:>12.2f}x'
              f'{rate:>10.0f}{cpu_per_message_us(r):>12.1f}{r["rss_mib"]:>9.0f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--role', default='orchestrate',
                        choices=['orchestrate', 'publisher', 'naive', 'idle', 'monitor'])
    parser.add_argument('--kind', default='imu', choices=['imu', 'image'])
    parser.add_argument('--rate', type=float, default=1000.0)
    parser.add_argument('--topics', type=int, default=4)
    parser.add_argument('--mode', default='poll')
    parser.add_argument('--window', type=float, default=10.0, help='(child) seconds the reported rate covers')
    parser.add_argument('--duration', type=float, default=10.0, help='measuring window per watcher (s)')
    parser.add_argument('--warmup', type=float, default=4.0, help='seconds before measuring (discovery)')
    parser.add_argument('--skip-image', action='store_true')
    parser.add_argument('--out', default='results/monitor_overhead.json')
    args = parser.parse_args()
    roles = {'publisher': role_publisher, 'naive': role_naive, 'idle': role_idle, 'monitor': role_monitor}
    if args.role != 'orchestrate':
        roles[args.role](args)
        return

    env = bench_env()
    fast = [('idle', 'idle', {'topics': 0}),
            ('monitor poll', 'monitor', {'topics': 4, 'mode': 'poll'}),
            ('monitor callback', 'monitor', {'topics': 4, 'mode': 'callback'}),
            ('naive x1', 'naive', {'topics': 1}),
            ('naive x4', 'naive', {'topics': 4})]
    results = [scenario('4 x sensor_msgs/Imu at 1 kHz', 'imu', 1000.0, 4, fast, env, args.warmup,
                        args.duration)]
    if not args.skip_image:
        image = [('monitor poll', 'monitor', {'topics': 1, 'mode': 'poll'}),
                 ('naive x1', 'naive', {'topics': 1})]
        results.append(scenario('1 x 640x480 rgb8 Image at 30 Hz', 'image', 30.0, 1, image, env,
                                args.warmup, args.duration))
    for result in results:
        print_table(result)
    rows = {r['watcher']: r for r in results[0]['rows']}
    summary = {
        'monitor_poll_4_topics_vs_naive_1_topic': rows['monitor poll']['cpu_s'] / rows['naive x1']['cpu_s'],
        'monitor_callback_4_topics_vs_naive_1_topic':
            rows['monitor callback']['cpu_s'] / rows['naive x1']['cpu_s'],
        'monitor_poll_vs_naive_4_topics': rows['monitor poll']['cpu_s'] / rows['naive x4']['cpu_s'],
        'target_met': rows['monitor poll']['cpu_s'] < rows['naive x1']['cpu_s'],
        'cpu_us_per_msg': {name: cpu_per_message_us(r) for name, r in rows.items() if name != 'idle'},
    }
    if len(results) > 1:
        image = {r['watcher']: r for r in results[1]['rows']}
        summary['image_monitor_vs_naive'] = image['monitor poll']['cpu_s'] / image['naive x1']['cpu_s']
    print('\n' + json.dumps(summary, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        'benchmark': 'monitor_overhead', 'date': time.strftime('%Y-%m-%d %H:%M:%S'),
        'machine': {'cpus': psutil.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version()},
        'duration_s': args.duration, 'summary': summary, 'scenarios': results}, indent=1))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
