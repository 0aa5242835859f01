"""What StageProfiler costs per stage and per frame, enabled and disabled.

    python benchmarks/profiler_overhead.py [--stages 5] [--frames 20000] [--repeats 7] [--out PATH]

Each variant runs the same loop: `--frames` frames of `--stages` empty stages; the cost of a variant is its
time minus the bare loop's, divided by the number of stages (median of `--repeats`). Variants:

- floor: two perf_counter_ns() calls per stage, the least any wall-clock stage timer can cost;
- disabled: StageProfiler(enabled=False) left in the code;
- enabled: wall time into the bounded rings (no NVTX);
- enabled+nvtx: plus an NVTX push/pop per stage (no tool attached: what production pays);
- enabled+cuda-events: plus two CUDA events per stage (only with torch + CUDA);
- naive (the seed chapter's `profile_pipeline_stage`): a cProfile.Profile enabled around each stage and a
  pstats summary per call.

Prints a table and writes JSON (default results/profiler_overhead.json).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isaac_perf.core.profiling.profiler import StageProfiler  # noqa: E402

NAMES = ('convert', 'pre', 'infer', 'post', 'publish', 's5', 's6', 's7', 's8', 's9')


def loop_bare(frames: int, names: tuple[str, ...]) -> None:
    for _ in range(frames):
        for _name in names:
            pass


def loop_floor(frames: int, names: tuple[str, ...]) -> None:
    clock = time.perf_counter_ns
    sink = 0
    for _ in range(frames):
        for _name in names:
            t0 = clock()
            sink += clock() - t0


def loop_profiler(profiler: StageProfiler, frames: int, names: tuple[str, ...]) -> None:
    stage = profiler.stage
    for _ in range(frames):
        with profiler.frame():
            for name in names:
                with stage(name):
                    pass


def loop_naive(frames: int, names: tuple[str, ...]) -> None:
    """The seed chapter's profile_pipeline_stage: cProfile + pstats around every stage call."""
    data = {}
    for _ in range(frames):
        for name in names:
            start = time.time()
            pr = cProfile.Profile()
            pr.enable()
            pr.disable()
            end = time.time()
            ps = pstats.Stats(pr, stream=io.StringIO())
            ps.sort_stats('cumulative')
            data[name] = {'execution_time': end - start, 'call_count': len(ps.stats)}


def timed(fn, *args) -> float:
    t0 = time.perf_counter_ns()
    fn(*args)
    return float(time.perf_counter_ns() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stages', type=int, default=5)
    parser.add_argument('--frames', type=int, default=20000)
    parser.add_argument('--naive-frames', type=int, default=500, help='frames for the slow cProfile variant')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--out', default='results/profiler_overhead.json')
    args = parser.parse_args()
    names = NAMES[:max(1, min(args.stages, len(NAMES)))]
    calls = args.frames * len(names)

    variants: dict[str, tuple] = {
        'floor (2x perf_counter_ns)': (loop_floor, args.frames, names),
        'disabled': (lambda f, n: loop_profiler(StageProfiler(enabled=False), f, n), args.frames, names),
        'enabled': (lambda f, n: loop_profiler(StageProfiler(nvtx_ranges=False, gpu='off'), f, n),
                    args.frames, names),
        'enabled+nvtx': (lambda f, n: loop_profiler(StageProfiler(gpu='off', capacity=4096), f, n),
                         args.frames, names),
    }
    gpu_name = ''
    try:
        import torch
        if torch.cuda.is_available():
            gpu_name = torch.cuda.get_device_name(0)
            torch.zeros(1, device='cuda')  # create the context outside the timing

            def cuda_variant(f, n):
                prof = StageProfiler(gpu='torch', capacity=4096)
                loop_profiler(prof, f, n)
                prof.sync()

            variants['enabled+nvtx+cuda-events'] = (cuda_variant, args.frames, names)
    except ImportError:
        pass
    variants['naive: cProfile per stage (seed)'] = (loop_naive, args.naive_frames, names)

    rows = []
    for label, (fn, frames, stage_names) in variants.items():
        bare = [timed(loop_bare, frames, stage_names) for _ in range(args.repeats)]
        runs = [timed(fn, frames, stage_names) for _ in range(args.repeats)]
        per_stage = max(0.0, statistics.median(runs) - statistics.median(bare)) / (frames * len(stage_names))
        rows.append({'variant': label, 'ns_per_stage': per_stage,
                     'us_per_frame': per_stage * len(stage_names) / 1e3, 'frames': frames})
    floor = rows[0]['ns_per_stage'] or 1.0
    enabled = next(r for r in rows if r['variant'] == 'enabled+nvtx')['ns_per_stage'] or 1.0
    print(f"StageProfiler overhead: {len(names)} stages x {args.frames} frames, median of {args.repeats} "
          f"({platform.processor() or platform.machine()}, Python {platform.python_version()}"
          f"{', ' + gpu_name if gpu_name else ''})")
    print(f"{'variant':<36} {'ns/stage':>10} {'us/frame':>10} {'x floor':>8} {'x enabled':>10}")
    for r in rows:
        r['x_floor'] = r['ns_per_stage'] / floor
        r['x_enabled_nvtx'] = r['ns_per_stage'] / enabled
        print(f"{r['variant']:<36} {r['ns_per_stage']:>10.0f} {r['us_per_frame']:>10.2f} "
              f"{r['x_floor']:>8.1f} {r['x_enabled_nvtx']:>10.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'benchmark': 'profiler_overhead', 'stages': len(names), 'calls': calls,
                               'python': platform.python_version(), 'machine': platform.machine(),
                               'gpu': gpu_name, 'rows': rows}, indent=1))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
