"""Every matplotlib figure the package draws, in one place (matplotlib is optional and imported lazily).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from isaac_perf.core.bench.compare import _pooled_latencies


# --- plots ---------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_results(doc: Mapping[str, Any], out_dir: str | Path) -> list[str]:
    """latency.png (histogram + CDF per run) and throughput.png (received vs offered rate)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    pooled = {key: _pooled_latencies(run) for key, run in doc['runs'].items()}
    every = np.concatenate([v for v in pooled.values() if v.size] or [np.zeros(1)])
    bins = np.histogram_bin_edges(every, bins=50)  # shared bins so the runs compare bar for bar
    for key, lat in pooled.items():
        if not lat.size:
            continue
        ax_h.hist(lat, bins=bins, alpha=0.5, label=key)
        xs = np.sort(lat)
        ax_c.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=key)
    ax_h.set_xlabel('end-to-end latency (ms)')
    ax_h.set_ylabel('frames')
    ax_h.set_title('Latency histogram')
    ax_c.set_xlabel('end-to-end latency (ms)')
    ax_c.set_ylabel('fraction of frames')
    ax_c.set_title('Latency CDF')
    for q in (0.5, 0.9, 0.99):
        ax_c.axhline(q, color='grey', lw=0.5, ls=':')
    if doc['runs']:
        ax_h.legend(fontsize=8)
        ax_c.legend(fontsize=8)
    fig.tight_layout()
    paths.append(str(out / 'latency.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    offered, received = [], []
    for run in doc['runs'].values():
        c = run['concluded']
        if c.get('MEAN_PLAYBACK_FRAME_RATE') is not None and c.get('MEAN_FRAME_RATE') is not None:
            offered.append(c['MEAN_PLAYBACK_FRAME_RATE'])
            received.append(c['MEAN_FRAME_RATE'])
    ax.plot(offered, received, 'o', label='fixed-rate runs')
    peak = doc.get('peak')
    if peak:
        probes = peak['probes']
        ok = [p for p in probes if p['sustainable'] and p['mean_frame_rate'] is not None]
        bad = [p for p in probes if not p['sustainable'] and p['mean_frame_rate'] is not None]
        ax.plot([p['playback_rate'] for p in ok], [p['mean_frame_rate'] for p in ok], 'g^',
                label='search: sustainable')
        ax.plot([p['playback_rate'] for p in bad], [p['mean_frame_rate'] for p in bad], 'rv',
                label='search: not sustainable')
        ax.axvline(peak['peak_hz'], color='green', ls='--', lw=1, label=f"peak {peak['peak_hz']:.1f} Hz")
    probed = [p['playback_rate'] or 0.0 for p in peak['probes']] if peak else []
    top = max([1.0] + offered + received + probed)
    ax.plot([0, top], [0, top], color='grey', lw=0.8, ls=':', label='received = offered')
    ax.set_xlabel('offered (playback) rate, fps')
    ax.set_ylabel('received rate, fps')
    ax.set_title('Throughput vs rate')
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(str(out / 'throughput.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def plot_comparison(a: Mapping[str, Any], b: Mapping[str, Any], out_dir: str | Path,
                    labels: tuple[str, str] = ('A', 'B')) -> list[str]:
    """compare_latency_cdf.png: A's and B's latency CDFs for each run they share."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = [k for k in a.get('runs', {}) if k in b.get('runs', {})]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in common:
        for doc, label, style in ((a, labels[0], '--'), (b, labels[1], '-')):
            lat = np.sort(_pooled_latencies(doc['runs'][key]))
            if lat.size:
                ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, style, label=f'{label} {key}')
    ax.set_xlabel('end-to-end latency (ms)')
    ax.set_ylabel('fraction of frames')
    ax.set_title('Latency CDF: A (dashed) vs B (solid)')
    if common:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = str(out / 'compare_latency_cdf.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_tuning_trajectory(doc: Mapping[str, Any], path: str | Path) -> str:
    """benchmarks/tuning_ros.py's trajectory: throughput, p99 and the knobs over time, with the sweep's best,
    the budget and the load changes marked. `doc` is that benchmark's JSON."""
    plt = _pyplot()
    bins = doc['trajectory']
    t = np.asarray([b['t_s'] for b in bins], dtype=float)
    fps = np.asarray([b['fps'] for b in bins], dtype=float)
    p99 = np.asarray([np.nan if b['p99_ms'] is None else b['p99_ms'] for b in bins], dtype=float)
    budget = float(doc['budget_ms'])
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    ax1.plot(t, fps, '-', color='g', label='delivered FPS (1 s bins, outside observer)')
    offered = [b.get('offered_fps') for b in bins]
    if any(o is not None for o in offered):
        ax1.plot(t, [np.nan if o is None else o for o in offered], ':', color='grey', label='offered FPS')
    best = (doc.get('sweep') or {}).get('best')
    if best:
        ax1.axhline(best['fps'], color='k', ls='--', lw=0.8, label=f"sweep best {best['fps']:.0f} FPS")
        ax1.axhline(0.9 * best['fps'], color='k', ls=':', lw=0.8, label='90 % of sweep best')
    ax1.set_ylabel('frames / s')
    ax1.legend(loc='lower right', fontsize=7)
    ax2.semilogy(t, np.clip(p99, 0.1, None), '-', color='b', label='p99 latency (1 s bins)')
    ax2.axhline(budget, color='r', ls='--', label=f'budget {budget:g} ms')
    ax2.set_ylabel('p99 (ms)')
    ax2.legend(loc='upper right', fontsize=7)
    for knob in ('max_batch_size', 'num_streams', 'queue_depth', 'max_queue_delay_ms'):
        values = [b['knobs'].get(knob) for b in bins]
        if any(v is not None for v in values):
            ax3.step(t, [np.nan if v is None else float(v) for v in values], where='post', label=knob)
    ax3.set_yscale('symlog', linthresh=1.0)
    ax3.set_ylabel('knob value')
    ax3.set_xlabel(f"seconds since the tuner started ({doc.get('t0', 'qos_tuner process start')})")
    ax3.legend(loc='upper right', fontsize=7)
    for event in doc.get('load_changes', []):
        for ax in (ax1, ax2, ax3):
            ax.axvline(event['t_s'], color='purple', alpha=0.4)
        ax1.annotate(f"{event['cameras']} cams", (event['t_s'], ax1.get_ylim()[1] * 0.95), fontsize=7,
                     color='purple')
    for ax in (ax1, ax2, ax3):
        ax.axvline(30.0, color='orange', ls='--', alpha=0.6)
    fig.suptitle(doc.get('title', 'qos_tuner trajectory'), fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
