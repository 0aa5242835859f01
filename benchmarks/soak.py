"""Soak: image_source -> inference_node as two processes over DDS for a long time, on the CPU.

Every `--sample-s` seconds: each node's resident memory (psutil) and its /diagnostics counters. At the end
both nodes get SIGINT to their process groups (as a terminal's Ctrl-C), and the report checks that every
frame is accounted for:

    published = received + lost_in_transport          (image_source vs inference_node)
    received  = processed + dropped (by cause) + pending

and gives the RSS growth from the first sample after warm-up to the last, the exit codes and any
traceback or error line. Prints a table and writes JSON.

    python benchmarks/soak.py --minutes 30 --out results/soak.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=30.0)
    parser.add_argument('--sample-s', type=float, default=30.0)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--model', default='detector')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--warmup-s', type=float, default=60.0, help='RSS growth is measured after this')
    parser.add_argument('--out', default='results/soak.json')
    args = parser.parse_args()

    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1'}
    topic = '/soak/camera_0/image_raw'
    source_cmd = [sys.executable, '-m', 'isaac_perf.nodes.image_source', '--ros-args',
                  '-p', f'camera_topics:=["{topic}"]', '-p', f'rate_hz:={args.rate}',
                  '-p', f'width:={args.width}', '-p', f'height:={args.height}',
                  '-p', 'diagnostics_period_s:=1.0']
    infer_cmd = [sys.executable, '-m', 'isaac_perf.nodes.inference', '--ros-args',
                 '-p', f'input_topics:=["{topic}"]', '-p', f'model:={args.model}',
                 '-p', f'backend:={args.backend}', '-p', 'device:=cpu', '-p', 'diagnostics_period_s:=1.0']
    logs: dict[str, list[str]] = {'image_source': [], 'inference_node': []}

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: [logs[name].append(line) for line in proc.stdout],
                         daemon=True).start()
        return proc

    rclpy.init()
    node = rclpy.create_node('soak_observer')
    latest: dict[str, dict[str, str]] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if 'frames_published' in values:
                latest['image_source'] = values
            elif 'frames_received' in values:
                latest['inference_node'] = {**values, '_level': str(status.level), '_message': status.message}

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 50)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)

    infer = start('inference_node', infer_cmd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any('engine ready' in line for line in logs['inference_node']):
        spin_for(0.5)
    source = start('image_source', source_cmd)
    procs = {'image_source': psutil.Process(source.pid), 'inference_node': psutil.Process(infer.pid)}
    started = time.monotonic()
    samples = []
    total_s = args.minutes * 60
    while time.monotonic() - started < total_s:
        spin_for(min(args.sample_s, max(0.0, total_s - (time.monotonic() - started))))
        sample = {'t_s': round(time.monotonic() - started, 1)}
        for name, proc in procs.items():
            try:
                sample[f'{name}_rss_mib'] = round(proc.memory_info().rss / 2**20, 2)
            except psutil.Error:
                sample[f'{name}_rss_mib'] = None
        sample['published'] = int(latest.get('image_source', {}).get('frames_published', -1))
        inf = latest.get('inference_node', {})
        for key in ('frames_received', 'frames_processed', 'total_dropped_frames'):
            sample[key] = int(inf.get(key, -1))
        samples.append(sample)
        print(json.dumps(sample), flush=True)

    # Stop the camera first, let the last frames drain, read the final counters, then stop inference.
    os.killpg(source.pid, signal.SIGINT)
    source_code = source.wait(timeout=30)
    spin_for(4.0)
    final_source = dict(latest.get('image_source', {}))
    final = dict(latest.get('inference_node', {}))
    t0 = time.monotonic()
    os.killpg(infer.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(infer.pid, signal.SIGINT)
    infer_code = infer.wait(timeout=30)
    stop_s = time.monotonic() - t0
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()

    published = int(final_source.get('frames_published', 0))
    received = int(final.get('frames_received', 0))
    processed = int(final.get('frames_processed', 0))
    dropped = {k[len('dropped_'):]: int(v) for k, v in final.items() if k.startswith('dropped_')}
    dropped_total = int(final.get('total_dropped_frames', sum(dropped.values())))
    pending = received - processed - dropped_total
    after = [s for s in samples if s['t_s'] >= args.warmup_s] or samples
    growth = {name: (after[-1][f'{name}_rss_mib'] - after[0][f'{name}_rss_mib'])
              for name in procs if after and after[0][f'{name}_rss_mib'] is not None
              and after[-1][f'{name}_rss_mib'] is not None}
    bad = [line.rstrip() for name in logs for line in logs[name]
           if any(b in line for b in ('Traceback', '[ERROR]', 'terminate called', 'never retrieved'))]
    import platform
    report = {
        'benchmark': 'soak', 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, '
                   f'{os.cpu_count()} cores, no GPU',
        'command': 'python benchmarks/soak.py ' + ' '.join(sys.argv[1:]),
        'config': vars(args), 'duration_s': round(time.monotonic() - started, 1),
        'frames': {'published': published, 'received': received, 'lost_in_transport': published - received,
                   'processed': processed, 'dropped_total': dropped_total, 'dropped_by_cause': dropped,
                   'pending_at_end': pending,
                   'accounted': received == processed + dropped_total + pending and pending >= 0},
        'rss_mib': {'first_after_warmup': {n: after[0][f'{n}_rss_mib'] for n in procs} if after else {},
                    'last': {n: after[-1][f'{n}_rss_mib'] for n in procs} if after else {},
                    'growth': growth},
        'stop': {'image_source_exit': source_code, 'inference_node_exit': infer_code,
                 'inference_stop_s': round(stop_s, 2), 'bad_lines': bad[:20]},
        'last_inference_status': {'level': final.get('_level'), 'message': final.get('_message')},
        'samples': samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + '\n')
    f = report['frames']
    print(f"\nsoak {report['duration_s'] / 60:.1f} min, {args.width}x{args.height} at {args.rate:g} Hz, "
          f"{args.model} on {args.backend}")
    print(f"  frames    published {published}, received {received}, lost in transport {published - received}")
    print(f"            processed {processed}, dropped {dropped_total} {dropped}, pending {pending}: "
          f"{'all accounted' if f['accounted'] else 'NOT ACCOUNTED'}")
    for name in procs:
        print(f"  RSS       {name}: {report['rss_mib']['first_after_warmup'].get(name)} -> "
              f"{report['rss_mib']['last'].get(name)} MiB (growth {growth.get(name, float('nan')):+.2f} MiB)")
    print(f"  stop      exits {source_code}/{infer_code}, inference stopped in {stop_s:.2f} s, "
          f"{len(bad)} bad line(s)")
    return 0 if f['accounted'] and not bad and source_code == 0 and infer_code == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
