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
