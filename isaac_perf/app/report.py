"""`isaac-perf report PROFILE.json --out DIR`: JSON, Markdown and PNG plots from a profile.

The input is a profile (`StageProfiler.to_dict()`, schema isaac_perf.profile/1), or an `isaac-perf bench`
result file, whose embedded profile (built from the graph's stage_times reports) is used. `--py-spy PID`
samples a running node's Python stacks first and adds its hot functions to the report.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from isaac_perf.app.args import number, writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('profile', help='profile JSON (isaac_perf.profile/1) or bench result JSON')
    parser.add_argument('--out', type=writable('dir'), default='results/report',
                        help='output directory (default results/report)')
    parser.add_argument('--title', default='', help='report title (default: from the file name)')
    parser.add_argument('--share', type=number(above=0, maximum=1), default=0.20,
                        help='a stage above this fraction of the frame is a bottleneck (default 0.20)')
    parser.add_argument('--cv', type=number(above=0), default=0.25,
                        help='a stage whose coefficient of variation is above this is high-variance')
    parser.add_argument('--alloc-mib', type=number(minimum=0), default=1.0,
                        help='a stage allocating more than this per call is an allocation hot spot')
    parser.add_argument('--py-spy', type=number(int, minimum=0), default=0, metavar='PID',
                        help='sample this process with py-spy and add its hot functions')
    parser.add_argument('--py-spy-seconds', type=number(above=0, maximum=3600, unit='s'), default=5.0,
                        help='py-spy sampling duration')
    parser.add_argument('--no-plots', action='store_true', help='skip the PNG plots')


def load_profile(path: str | Path) -> dict[str, Any]:
    """A profile from a profile file or a bench result; raises ValueError saying what is wrong."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f'cannot read {path}: {exc.strerror or exc}') from exc
    except UnicodeDecodeError:
        raise ValueError(f'{path} is not a text file (binary?): give a profile or bench result '
                         'JSON') from None
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path} is not JSON ({exc})') from exc
    if isinstance(doc, dict) and doc.get('schema') == 'isaac_perf.bench/1':
        profile = doc.get('profile')
        if not profile:
            raise ValueError(f'{path} is a bench result without a profile: the graph sent no stage_times '
                             'reports (run the bench with a graph that publishes ~/stage_times)')
        profile = dict(profile)
        meta = dict(profile.get('metadata') or {})
        bench_meta = doc.get('metadata') or {}
        meta.update({k: bench_meta[k] for k in ('name', 'host', 'cpu', 'datetime', 'input_hash')
                     if k in bench_meta})
        profile['metadata'] = meta
        return profile
    return doc


def _check_numbers(profile: dict[str, Any]) -> None:
    """Every sample list holds numbers (null/NaN allowed): a string or a map there is refused by name."""
    lists = [(f'stage {name!r} wall_ms', data.get('wall_ms')) for name, data in profile['stages'].items()]
    lists.append(('frames wall_ms', (profile.get('frames') or {}).get('wall_ms')))
    for what, values in lists:
        if values is None:
            continue
        if not isinstance(values, list):
            raise ValueError(f'{what} is a {type(values).__name__}, not a list of numbers')
        for i, v in enumerate(values):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f'{what}[{i}] is {v!r:.40}, not a number: regenerate the file with the '
                                 'profiler')


def main(args: argparse.Namespace) -> int:
    from isaac_perf.core.profiling import report as report_mod
    from isaac_perf.core.profiling.sampling import sample_pid
    try:
        profile = load_profile(args.profile)
        report_mod.validate_profile(profile)
        _check_numbers(profile)
    except ValueError as exc:
        print(f'isaac-perf report: {exc}', file=sys.stderr)
        return 2
    if args.py_spy:
        try:
            sampled = sample_pid(args.py_spy, duration_s=args.py_spy_seconds)
            profile['hot_functions'] = sampled.to_dict()
        except RuntimeError as exc:
            print(f'isaac-perf report: warning: {exc}', file=sys.stderr)
    title = args.title or f'Profile report: {Path(args.profile).stem}'
    try:
        report, paths = report_mod.write_report(
            profile, args.out, plots=not args.no_plots, title=title, share_threshold=args.share,
            cv_threshold=args.cv, alloc_threshold_bytes=args.alloc_mib * (1 << 20))
    except OSError as exc:
        print(f'isaac-perf report: cannot write the report to {args.out}: {exc.strerror or exc}; choose '
              'another --out', file=sys.stderr)
        return 1
    f = report.frame
    print(f"frame mean {f['mean_ms']:.3f} ms ({f['fps']:.1f} fps) over {f['samples']} frames")
    for s in report.stages:
        print(f'  {s.name:<14} mean {s.mean_ms:8.3f} ms  p50 {s.p50_ms:8.3f}  p99 {s.p99_ms:8.3f}  '
              f'{100 * s.share:5.1f}%  CV {s.cv:.2f}')
    top = report.top_bottlenecks()
    print('top bottlenecks: ' + (', '.join(top) if top else 'none'))
    for r in report.recommendations[:5]:
        print(f'  {r.where}: {r.practice} ({r.cause})')
    print('wrote ' + ', '.join(paths.values()))
    return 0
