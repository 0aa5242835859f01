"""What a benchmark result records about where it ran (machine, versions, commit) and its JSON document.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from isaac_perf.core.bench.metrics import RESULT_SCHEMA, RunResult
from isaac_perf.core.bench.peak import PeakSearch, conclude, stability


# --- metadata and files --------------------------------------------------------------------------------
def input_hash(frames: Iterable[Any]) -> str:
    """sha256 over the frames played (their bytes, shape and dtype), so results name their input."""
    h = hashlib.sha256()
    for frame in frames:
        arr = np.ascontiguousarray(frame)
        h.update(f'{arr.shape}{arr.dtype}'.encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[dict[str, Any]]:
    """GPU names, memory and driver from NVML; [] without a GPU or NVML (never raises)."""
    from isaac_perf.core.telemetry.gpu import gpu_inventory
    return gpu_inventory()


_VERSIONED = ('numpy', 'onnxruntime', 'onnxruntime-gpu', 'torch', 'tensorrt', 'ros-rclpy', 'psutil', 'cupy',
              'cuda-python', 'isaac_perf')


def _versions() -> dict[str, str]:
    out = {'python': platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    ros = os.environ.get('ROS_DISTRO')
    if ros:
        out['ROS_DISTRO'] = ros
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / '.git').exists():
        return None
    try:
        proc = subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, timeout=5)
        return proc.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def collect_metadata(name: str, config: Mapping[str, Any], input_digest: str = '',
                     now: datetime | None = None) -> dict[str, Any]:
    """Where and how a benchmark ran: host, CPU, GPU, versions, config and input hash."""
    when = (now or datetime.now(timezone.utc)).strftime('%Y-%m-%dT%H:%M:%SZ')
    return {
        'name': name, 'datetime': when, 'host': socket.gethostname(), 'arch': platform.machine(),
        'os': f'{platform.system()} {platform.release()}', 'cpu': _cpu_model(), 'cpu_count': os.cpu_count(),
        'gpus': _gpus(), 'versions': _versions(), 'git_commit': _git_commit(), 'argv': ' '.join(sys.argv),
        'config': dict(config), 'input_hash': input_digest,
    }


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def results_document(metadata: Mapping[str, Any], runs: Mapping[str, Sequence[RunResult]],
                     peak: PeakSearch | None = None, peak_runs: Sequence[RunResult] = (),
                     max_cv: float = 0.05, profile: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result file: metadata, per-rate iterations with their conclusion and stability, the peak."""
    doc: dict[str, Any] = {'schema': RESULT_SCHEMA, 'metadata': dict(metadata), 'runs': {}}
    for key, iterations in runs.items():
        its = list(iterations)
        metrics = [r.all_metrics() for r in its]
        doc['runs'][key] = {'rate_hz': its[0].rate_hz if its else None,
                            'iterations': [r.to_dict() for r in its],
                            'concluded': conclude(metrics), 'stability': stability(metrics, max_cv=max_cv)}
    if peak is not None:
        doc['peak'] = peak.to_dict()
        if peak_runs:
            metrics = [r.all_metrics() for r in peak_runs]
            doc['runs'][f'{peak.peak_hz:.1f}fps (peak)'] = {
                'rate_hz': peak.peak_hz, 'iterations': [r.to_dict() for r in peak_runs],
                'concluded': conclude(metrics), 'stability': stability(metrics, max_cv=max_cv)}
    if profile is not None:
        doc['profile'] = dict(profile)
    return _clean(doc)


def run_key(rate_hz: float) -> str:
    """ros2_benchmark's key for a fixed-rate run: '30.0fps'."""
    return f'{float(rate_hz):.1f}fps'


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a result file; raises ValueError saying what is wrong when it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f'{path}: cannot read a benchmark result ({exc})') from exc
    if not isinstance(doc, dict) or doc.get('schema') != RESULT_SCHEMA:
        raise ValueError(f"{path}: not an isaac-perf bench result (schema {RESULT_SCHEMA!r} expected)")
    return doc


def summary_table(doc: Mapping[str, Any]) -> str:
    """Plain-text table of the concluded metrics per run."""
    cols = ('MEAN_PLAYBACK_FRAME_RATE', 'MEAN_FRAME_RATE', 'NUM_MISSED_FRAMES', 'MEAN_LATENCY', 'P50_LATENCY',
            'P99_LATENCY', 'MAX_LATENCY', 'MEAN_JITTER', 'MEAN_OVERALL_CPU_UTILIZATION')
    short = ('playback', 'fps', 'missed', 'lat_mean', 'lat_p50', 'lat_p99', 'lat_max', 'jitter', 'cpu%')
    lines = [f"{'run':>16} " + ' '.join(f'{s:>9}' for s in short) + '  stable']
    for key, run in doc['runs'].items():
        c = run['concluded']
        cells = []
        for col in cols:
            v = c.get(col)
            cells.append(f'{v:>9.2f}' if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>9}")
        stable = run['stability']['stable']
        lines.append(f'{key:>16} ' + ' '.join(cells) + f"  {'-' if stable is None else stable}")
    peak = doc.get('peak')
    if peak:
        lines.append(f"peak sustainable rate: {peak['peak_hz']:.1f} Hz (window {peak['lower_hz']:.0f}-"
                     f"{peak['upper_hz']:.0f} Hz, {len(peak['probes'])} probes)")
        lines += [f'  warning: {w}' for w in peak.get('warnings', [])]
    return '\n'.join(lines)
