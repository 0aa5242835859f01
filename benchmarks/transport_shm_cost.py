"""What the host shared-memory transport costs per frame, beside the copies it replaces.

    python benchmarks/transport_shm_cost.py [--shape 1080,1920,3] [--frames 300] [--root /dev/shm]
        [--out PATH]

Rows (median and p99 over `--frames`, one process; the reader is a separate ShmReader, so the OFD locks
are taken exactly as across processes):
- write: ShmWriter.write of one frame (claim a slot, the one memcpy, commit);
- open: ShmReader.open (stat, validate, read lock, generation check, view + finalizer);
- open+release: open and drop the view (the unlock runs in the finalizer);
- floor: np.copyto of the frame into one of 4 preallocated arrays in turn (the memcpy write cannot avoid);
- naive: frame.tobytes() (what a plain sensor_msgs/Image publish pays before DDS even starts).

Prints a table and writes JSON (default results/transport_shm_cost.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from isaac_perf.core.transport.shm_ring import ShmReader, ShmWriter  # noqa: E402


def timed(fn, frames: int) -> dict[str, float]:
    samples = []
    for _ in range(frames):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    samples.sort()
    return {'median_us': statistics.median(samples), 'p99_us': samples[int(0.99 * (len(samples) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', default='1080,1920,3')
    ap.add_argument('--frames', type=int, default=300)
    ap.add_argument('--root', default='/dev/shm')
    ap.add_argument('--out', default='results/transport_shm_cost.json')
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(','))
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    floor_dst = [np.ones_like(frame) for _ in range(4)]  # rotating like the ring's 4 slots, pages touched
    turn = iter(range(10**9))
    with tempfile.TemporaryDirectory(dir=args.root) as root:
        writer, reader = ShmWriter('/bench', 4, frame.nbytes, root=root), ShmReader(root=root)
        held = []
        rows = {'write': timed(lambda: writer.write(frame), args.frames)}
        d = writer.write(frame)
        rows['open'] = timed(lambda: held.append(reader.open(d)), args.frames)
        held.clear()
        d = writer.write(frame)
        rows['open+release'] = timed(lambda: reader.open(d), args.frames)
        rows['floor (np.copyto)'] = timed(lambda: np.copyto(floor_dst[next(turn) % 4], frame), args.frames)
        rows['naive (tobytes)'] = timed(frame.tobytes, args.frames)
        writer.close()
        reader.close()
    print(f'{"frame " + "x".join(map(str, shape)):<22}{"median us":>12}{"p99 us":>12}')
    for name, row in rows.items():
        print(f'{name:<22}{row["median_us"]:>12.1f}{row["p99_us"]:>12.1f}')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'shape': shape, 'frames': args.frames, 'root': args.root, 'rows': rows,
                               'machine': platform.node(), 'python': platform.python_version(),
                               'date': time.strftime('%Y-%m-%d')}, indent=2))


if __name__ == '__main__':
    main()
