"""ros2_benchmark's method as plain logic: fixed-rate runs, peak-throughput search, iterations, compare.

Metric names are ros2_benchmark's (`BasicPerformanceMetrics`, `ResourceMetrics`: same names, same
definitions, so numbers line up with its published results), plus latency percentiles and a frame count
that it does not report (`EXTRA_METRICS`). A run is described by two maps: message key -> send time (ns)
and message key -> receive time (ns); the key is the frame's header stamp, so latency is per frame.

- `performance_metrics(sent, received)`: one run's metrics.
- `find_peak_rate(run_at, ...)`: ros2_benchmark's two-phase search over a `run_at(rate_hz) -> metrics`
  callable: binary search until the window is `terminal_width` Hz wide, then a linear scan upwards in
  `step` Hz. A rate is sustainable when at most ceil(5% of frames sent) are missed and the received rate is
  within `rate_drop_hz` of the playback rate.
- `conclude(iterations)`: ros2_benchmark's summary of repeated runs (drop the best and the worst, then the
  mean / max / min per metric), and `stability(iterations)`: coefficient of variation per metric.
- `compare(a, b)`: what changed between two result files, and whether it is beyond the iterations' noise
  (Welch's t-test on per-iteration values, or a bootstrap over per-frame latencies for single runs).
- `simulate_fixed_rate(...)`: a deterministic single-server graph with a KEEP_LAST queue, so the search can
  be tested against a known capacity.
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
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

RESULT_SCHEMA = 'isaac_perf.bench/1'
NS_PER_MS = 1_000_000

# ros2_benchmark BasicPerformanceMetrics, in its order (ros2_benchmark/basic_performance_calculator.py).
BASIC_METRICS: dict[str, str] = {
    'RECEIVED_DURATION': 'Delta between First & Last Received Frames (ms)',
    'MEAN_PLAYBACK_FRAME_RATE': 'Mean Playback Frame Rate (fps)',
    'MEAN_FRAME_RATE': 'Mean Frame Rate (fps)',
    'NUM_MISSED_FRAMES': '# of Missed Frames',
    'NUM_FRAMES_SENT': '# of Frames Sent',
    'FIRST_SENT_RECEIVED_LATENCY': 'First Sent to First Received Latency (ms)',
    'LAST_SENT_RECEIVED_LATENCY': 'Last Sent to Last Received Latency (ms)',
    'FIRST_INPUT_LATENCY': 'First Frame End-to-end Latency (ms)',
    'LAST_INPUT_LATENCY': 'Last Frame End-to-end Latency (ms)',
    'MAX_LATENCY': 'Max. End-to-End Latency (ms)',
    'MIN_LATENCY': 'Min. End-to-End Latency (ms)',
    'MEAN_LATENCY': 'Mean End-to-End Latency (ms)',
    'MAX_JITTER': 'Max. Frame-to-Frame Jitter (ms)',
    'MIN_JITTER': 'Min. Frame-to-Frame Jitter (ms)',
    'MEAN_JITTER': 'Mean Frame-to-Frame Jitter (ms)',
    'STD_DEV_JITTER': 'Frame-to-Frame Jitter Std. Deviation (ms)',
}
# Ours: what ros2_benchmark does not report.
EXTRA_METRICS: dict[str, str] = {
    'NUM_FRAMES_RECEIVED': '# of Frames Received',
    'P50_LATENCY': 'Median End-to-End Latency (ms)',
    'P90_LATENCY': '90th Percentile End-to-End Latency (ms)',
    'P99_LATENCY': '99th Percentile End-to-End Latency (ms)',
    'STD_DEV_LATENCY': 'End-to-End Latency Std. Deviation (ms)',
}
# ros2_benchmark ResourceMetrics (utils/resource_metrics.py): <STAT>_<RESOURCE>.
RESOURCE_KINDS = ('OVERALL_CPU_UTILIZATION', 'HOST_MEMORY_UTILIZATION', 'DEVICE_UTILIZATION',
                  'DEVICE_MEMORY_UTILIZATION')
RESOURCE_STATS = ('BASELINE', 'MAX', 'MIN', 'MEAN', 'STDDEV')

# How ros2_benchmark concludes repeated runs (after dropping the best and the worst).
_MEAN_METRICS = {'NUM_FRAMES_SENT', 'FIRST_INPUT_LATENCY', 'LAST_INPUT_LATENCY',
                 'FIRST_SENT_RECEIVED_LATENCY', 'LAST_SENT_RECEIVED_LATENCY', 'MEAN_LATENCY',
                 'NUM_MISSED_FRAMES', 'RECEIVED_DURATION',
                 'MEAN_FRAME_RATE', 'STD_DEV_JITTER', 'MEAN_PLAYBACK_FRAME_RATE',
                 'NUM_FRAMES_RECEIVED', 'P50_LATENCY', 'P90_LATENCY', 'P99_LATENCY', 'STD_DEV_LATENCY'}
_MAX_METRICS = {'MAX_LATENCY', 'MAX_JITTER', 'MEAN_JITTER'}
_MIN_METRICS = {'MIN_LATENCY', 'MIN_JITTER'}

# For compare: which direction is better.
HIGHER_IS_BETTER = {'MEAN_FRAME_RATE', 'NUM_FRAMES_RECEIVED', 'MEAN_PLAYBACK_FRAME_RATE', 'PEAK_FRAME_RATE'}
COMPARED_METRICS = ('MEAN_FRAME_RATE', 'NUM_MISSED_FRAMES', 'MEAN_LATENCY', 'P50_LATENCY', 'P90_LATENCY',
                    'P99_LATENCY', 'MAX_LATENCY', 'MEAN_JITTER', 'MEAN_OVERALL_CPU_UTILIZATION',
                    'MEAN_DEVICE_UTILIZATION')
MAX_LATENCY_SAMPLES = 20000  # per-frame latencies kept per iteration (bounded result files)


def metric_description(name: str) -> str:
    if name in BASIC_METRICS:
        return BASIC_METRICS[name]
    if name in EXTRA_METRICS:
        return EXTRA_METRICS[name]
    for kind in RESOURCE_KINDS:
        if name.endswith(kind):
            return f"{name[:-len(kind) - 1].title()} {kind.replace('_', ' ').title()} (%)"
    return name


# --- one run -------------------------------------------------------------------------------------------
def performance_metrics(sent_ns: Mapping[Hashable, int],
                        received_ns: Mapping[Hashable, int]) -> dict[str, float]:
    """ros2_benchmark's BasicPerformanceMetrics (+ EXTRA_METRICS) for one run.

    `sent_ns`: key -> send time in send order; `received_ns`: key -> receive time. Received keys that were
    not sent in this run (leftovers of an earlier run) are ignored. Definitions follow ros2_benchmark:
    MEAN_FRAME_RATE = frames received / (last - first receive time); jitter = |second difference| of the
    receive times; a missed frame is one sent but never received. Missing quantities are NaN.
    """
    nan = math.nan
    sent_keys = list(sent_ns)
    sent_t = np.array([sent_ns[k] for k in sent_keys], dtype=np.int64)
    got = {k: t for k, t in received_ns.items() if k in sent_ns}
    recv_t = np.sort(np.fromiter(got.values(), dtype=np.int64, count=len(got)))
    m: dict[str, float] = dict.fromkeys(list(BASIC_METRICS) + list(EXTRA_METRICS), nan)
    m['NUM_FRAMES_SENT'] = float(len(sent_keys))
    m['NUM_FRAMES_RECEIVED'] = float(len(got))
    m['NUM_MISSED_FRAMES'] = float(len(sent_keys) - len(got))
    if len(sent_t) > 1:
        sent_span_ms = float(sent_t[-1] - sent_t[0]) / NS_PER_MS
        if sent_span_ms > 0:
            m['MEAN_PLAYBACK_FRAME_RATE'] = len(sent_t) / (sent_span_ms / 1000.0)
    if len(recv_t) == 0:
        m['MEAN_FRAME_RATE'] = 0.0
        return m
    m['RECEIVED_DURATION'] = float(recv_t[-1] - recv_t[0]) / NS_PER_MS
    if m['RECEIVED_DURATION'] > 0:
        m['MEAN_FRAME_RATE'] = len(recv_t) / (m['RECEIVED_DURATION'] / 1000.0)
    m['FIRST_SENT_RECEIVED_LATENCY'] = float(recv_t[0] - sent_t[0]) / NS_PER_MS
    m['LAST_SENT_RECEIVED_LATENCY'] = float(recv_t[-1] - sent_t[-1]) / NS_PER_MS
    latencies = frame_latencies_ms(sent_ns, got)
    if latencies.size:
        m['FIRST_INPUT_LATENCY'] = float(latencies[0])
        m['LAST_INPUT_LATENCY'] = float(latencies[-1])
        m['MAX_LATENCY'] = float(latencies.max())
        m['MIN_LATENCY'] = float(latencies.min())
        m['MEAN_LATENCY'] = float(latencies.mean())
        m['P50_LATENCY'], m['P90_LATENCY'], m['P99_LATENCY'] = (
            float(v) for v in np.percentile(latencies, [50, 90, 99]))
        m['STD_DEV_LATENCY'] = float(latencies.std())
    if len(recv_t) > 2:
        jitter = np.abs(np.diff(np.diff(recv_t))) / NS_PER_MS
        m['MAX_JITTER'] = float(jitter.max())
        m['MIN_JITTER'] = float(jitter.min())
        m['MEAN_JITTER'] = float(jitter.mean())
        m['STD_DEV_JITTER'] = float(jitter.std())
    return m


def frame_latencies_ms(sent_ns: Mapping[Hashable, int], received_ns: Mapping[Hashable, int]) -> np.ndarray:
    """Per-frame end-to-end latency (ms) for frames received, in send order."""
    return np.array([(received_ns[k] - t) / NS_PER_MS for k, t in sent_ns.items() if k in received_ns],
                    dtype=np.float64)


def resource_metrics(samples: Mapping[str, Sequence[float]],
                     baseline: Mapping[str, float] | None = None) -> dict[str, float]:
    """ros2_benchmark ResourceMetrics from utilisation samples (percent) taken during a run.

    `samples` keys are RESOURCE_KINDS (e.g. 'OVERALL_CPU_UTILIZATION'); `baseline` holds the idle value
    of each kind measured before the run. Kinds without samples (no GPU) are left out.
    """
    out: dict[str, float] = {}
    for kind in RESOURCE_KINDS:
        values = np.asarray([v for v in samples.get(kind, ()) if v is not None and math.isfinite(v)],
                            dtype=np.float64)
        if not values.size:
            continue
        if baseline and kind in baseline and math.isfinite(baseline[kind]):
            out[f'BASELINE_{kind}'] = float(baseline[kind])
        out[f'MAX_{kind}'] = float(values.max())
        out[f'MIN_{kind}'] = float(values.min())
        out[f'MEAN_{kind}'] = float(values.mean())
        out[f'STDDEV_{kind}'] = float(values.std())
    return out


@dataclass
class RunResult:
    """One fixed-rate run (one iteration at one rate)."""
    rate_hz: float
    duration_s: float
    metrics: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean per stage, from stage_times reports

    @classmethod
    def from_times(cls, rate_hz: float, duration_s: float, sent_ns: Mapping[Hashable, int],
                   received_ns: Mapping[Hashable, int], **extra: Any) -> RunResult:
        latencies = frame_latencies_ms(sent_ns, received_ns)
        if latencies.size > MAX_LATENCY_SAMPLES:  # keep an even subsample, in order
            latencies = latencies[np.linspace(0, latencies.size - 1, MAX_LATENCY_SAMPLES).astype(int)]
        return cls(rate_hz, duration_s, performance_metrics(sent_ns, received_ns),
                   [round(float(v), 4) for v in latencies], **extra)

    def all_metrics(self) -> dict[str, float]:
        return {**self.metrics, **self.resources}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metrics_of(result: Any) -> Mapping[str, float]:
    if isinstance(result, RunResult):
        return result.all_metrics()
    if isinstance(result, Mapping) and 'metrics' in result and isinstance(result['metrics'], Mapping):
        return {**result['metrics'], **(result.get('resources') or {})}
    return result


# --- peak search ---------------------------------------------------------------------------------------
def sustainable(metrics: Mapping[str, float], loss_fraction: float = 0.05,
                rate_drop_hz: float = 10.0) -> bool:
    """ros2_benchmark's test: received rate within `rate_drop_hz` of playback, misses <= ceil(5% sent)."""
    rate = metrics.get('MEAN_FRAME_RATE', 0.0)
    playback = metrics.get('MEAN_PLAYBACK_FRAME_RATE', math.nan)
    rate = 0.0 if rate is None or not math.isfinite(rate) else rate
    if playback is None or not math.isfinite(playback):
        return False
    missed = metrics.get('NUM_MISSED_FRAMES', math.inf)
    allowed = math.ceil(metrics.get('NUM_FRAMES_SENT', 0) * loss_fraction)
    return rate >= playback - rate_drop_hz and missed <= allowed


@dataclass
class Probe:
    rate_hz: float
    phase: str  # 'trial', 'binary', 'linear'
    sustainable: bool
    mean_frame_rate: float
    playback_rate: float
    missed: float
    sent: float


@dataclass
class PeakSearch:
    peak_hz: float
    probes: list[Probe]
    lower_hz: float
    upper_hz: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_peak_rate(run_at: Callable[[float], Any], lower_hz: float = 10.0, upper_hz: float = 100.0, *,
                   terminal_width_hz: float = 10.0, step_hz: float = 5.0, loss_fraction: float = 0.05,
                   binary_rate_drop_hz: float = 10.0, linear_rate_drop_hz: float = 5.0,
                   trial_probe: bool = True, log: Callable[[str], None] | None = None) -> PeakSearch:
    """The highest sustainable publishing rate, by ros2_benchmark's binary search + linear scan.

    `run_at(rate_hz)` runs the graph at that rate and returns its metrics (a mapping, or a RunResult).
    Defaults are ros2_benchmark's (window 10-100 Hz, stop the bisection at 10 Hz, scan in 5 Hz steps,
    5% acceptable loss, 10 Hz / 5 Hz acceptable rate drop). The trial probe at the window's middle warms
    the graph up and does not count, as in ros2_benchmark.
    """
    if not 0 < lower_hz < upper_hz:
        raise ValueError(f'search window {lower_hz}..{upper_hz} Hz: need 0 < lower < upper')
    if terminal_width_hz <= 0 or step_hz <= 0:
        raise ValueError('terminal_width_hz and step_hz must be positive')
    say = log or (lambda _msg: None)
    probes: list[Probe] = []

    def probe(rate: float, phase: str, drop_hz: float) -> bool:
        metrics = _metrics_of(run_at(rate))
        ok = sustainable(metrics, loss_fraction, drop_hz)
        probes.append(Probe(rate, phase, ok, float(metrics.get('MEAN_FRAME_RATE', math.nan)),
                            float(metrics.get('MEAN_PLAYBACK_FRAME_RATE', math.nan)),
                            float(metrics.get('NUM_MISSED_FRAMES', math.nan)),
                            float(metrics.get('NUM_FRAMES_SENT', math.nan))))
        say(f'{phase} probe {rate:.2f} Hz: {"sustainable" if ok else "not sustainable"} '
            f'(received {probes[-1].mean_frame_rate:.1f} fps, missed {probes[-1].missed:.0f}'
            f'/{probes[-1].sent:.0f})')
        return ok

    lo, hi = float(lower_hz), float(upper_hz)
    if trial_probe:
        probe((lo + hi) / 2, 'trial', binary_rate_drop_hz)
    while hi - lo > terminal_width_hz:
        mid = (lo + hi) / 2
        if probe(mid, 'binary', binary_rate_drop_hz):
            lo = mid
        else:
            hi = mid
    target = lo
    while target + step_hz <= upper_hz:
        if probe(target + step_hz, 'linear', linear_rate_drop_hz):
            target += step_hz
        else:
            break
    result = PeakSearch(target, probes, float(lower_hz), float(upper_hz))
    edge = 5.0  # Hz, ros2_benchmark's BOUNDARY_LIMIT_EPSILON
    if target >= upper_hz - edge:
        result.warnings.append(f'peak {target:.1f} Hz is at the top of the search window ({upper_hz} Hz): '
                               'raise the upper bound (--peak-max)')
    elif target <= lower_hz + edge:
        result.warnings.append(f'peak {target:.1f} Hz is at the bottom of the search window ({lower_hz} Hz): '
                               'lower the lower bound (--peak-min); the graph may not sustain even that')
    return result


# --- iterations ----------------------------------------------------------------------------------------
def conclude(iterations: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """ros2_benchmark's conclusion of repeated runs: drop the best and worst value of each metric
    (with 3+ runs), then mean (most metrics), max (MAX_*, MEAN_JITTER) or min (MIN_*)."""
    out: dict[str, float] = {}
    if not iterations:
        return out
    names = [k for k in iterations[0] if all(k in it for it in iterations)]
    for name in names:
        values = [it[name] for it in iterations]
        if not all(isinstance(v, (int, float)) and v is not None and math.isfinite(v) for v in values):
            continue
        values = sorted(float(v) for v in values)
        if len(values) >= 3:
            values = values[1:-1]
        if name in _MAX_METRICS or name.startswith('MAX_'):
            out[name] = max(values)
        elif name in _MIN_METRICS or name.startswith('MIN_'):
            out[name] = min(values)
        else:
            out[name] = sum(values) / len(values)
    return out


def stability(iterations: Sequence[Mapping[str, float]],
              metrics: Sequence[str] = ('MEAN_FRAME_RATE', 'MEAN_LATENCY', 'P99_LATENCY'),
              max_cv: float = 0.05) -> dict[str, Any]:
    """Coefficient of variation (sample std / mean) of each metric across iterations; stable if all
    are at most `max_cv`. With fewer than 2 iterations stability is unknown (None)."""
    rows: dict[str, Any] = {}
    verdicts = []
    for name in metrics:
        values = np.asarray([it.get(name, math.nan) for it in iterations], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size < 2:
            rows[name] = {'n': int(values.size), 'mean': float(values.mean()) if values.size else None,
                          'std': None, 'cv': None, 'stable': None}
            continue
        mean = float(values.mean())
        std = float(values.std(ddof=1))
        cv = std / abs(mean) if mean != 0 else (0.0 if std == 0 else math.inf)
        ok = cv <= max_cv
        verdicts.append(ok)
        rows[name] = {'n': int(values.size), 'mean': mean, 'std': std, 'cv': cv, 'stable': ok}
    return {'max_cv': max_cv, 'metrics': rows, 'stable': (all(verdicts) if verdicts else None)}


# --- a simulated graph with known capacity -------------------------------------------------------------
def simulate_fixed_rate(rate_hz: float, duration_s: float, service_ms: float, queue_depth: int = 1,
                        transport_ms: float = 0.0) -> tuple[dict[int, int], dict[int, int]]:
    """A single-server graph fed at `rate_hz` for `duration_s`: each frame takes `service_ms`; frames that
    arrive while it is busy wait in a KEEP_LAST queue of `queue_depth` (a newer frame evicts the oldest
    waiting one, as a ROS keep-last subscription does). Capacity = 1000 / service_ms Hz.

    Returns (sent_ns, received_ns) keyed by frame index; exact integer nanoseconds.
    """
    period_ns = round(1e9 / rate_hz)
    service_ns = round(service_ms * NS_PER_MS)
    transport_ns = round(transport_ms * NS_PER_MS)
    n = int(round(rate_hz * duration_s))
    sent = {i: i * period_ns for i in range(n)}
    received: dict[int, int] = {}
    queue: deque[int] = deque()
    free_at = 0

    def serve(key: int, start: int) -> None:
        nonlocal free_at
        free_at = start + service_ns
        received[key] = free_at + transport_ns

    for i in range(n):
        t = sent[i]
        while queue and free_at <= t:
            key = queue.popleft()
            serve(key, max(free_at, sent[key]))
        if free_at <= t and not queue:
            serve(i, t)
        else:
            queue.append(i)
            if len(queue) > queue_depth:
                queue.popleft()  # dropped
    while queue:
        key = queue.popleft()
        serve(key, max(free_at, sent[key]))
    return sent, received


# --- statistics for compare ----------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test: (t, degrees of freedom, two-sided p). Needs 2+ values each."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise ValueError('Welch t-test needs at least 2 values on each side: run more --iterations')
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(y.mean() - x.mean())
    if vx + vy == 0.0:
        return (0.0 if diff == 0 else math.copysign(math.inf, diff)), float(x.size + y.size - 2), \
            (1.0 if diff == 0 else 0.0)
    t = diff / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    return t, df, t_two_sided_p(t, df)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], statistic: Callable[[np.ndarray], float],
                 n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(b) - statistic(a), resampling each side (seeded)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        resample_b = y[rng.integers(0, y.size, y.size)]
        resample_a = x[rng.integers(0, x.size, x.size)]
        diffs[i] = statistic(resample_b) - statistic(resample_a)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


_LATENCY_STATISTIC: dict[str, Callable[[np.ndarray], float]] = {
    'MEAN_LATENCY': lambda v: float(v.mean()),
    'P50_LATENCY': lambda v: float(np.percentile(v, 50)),
    'P90_LATENCY': lambda v: float(np.percentile(v, 90)),
    'P99_LATENCY': lambda v: float(np.percentile(v, 99)),
}


@dataclass
class Change:
    run: str  # e.g. '30.0fps' or 'peak'
    metric: str
    a: float
    b: float
    delta: float
    ratio: float  # b / a
    method: str  # 'welch-t', 'bootstrap', 'single-run'
    p_value: float | None
    significant: bool | None  # None: noise unknown
    verdict: str  # 'better', 'worse', 'no significant change', 'changed (noise unknown)', 'same'


def _verdict(metric: str, delta: float, significant: bool | None) -> str:
    if delta == 0:
        return 'same'
    if significant is None:
        return 'changed (noise unknown)'
    if not significant:
        return 'no significant change'
    better = delta > 0 if metric in HIGHER_IS_BETTER else delta < 0
    return 'better' if better else 'worse'


def _iteration_values(run: Mapping[str, Any], metric: str) -> list[float]:
    values = []
    for it in run.get('iterations', []):
        v = _metrics_of(it).get(metric)
        if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
            values.append(float(v))
    return values


def _pooled_latencies(run: Mapping[str, Any]) -> np.ndarray:
    parts = [np.asarray(it.get('latencies_ms') or [], dtype=np.float64) for it in run.get('iterations', [])]
    return np.concatenate(parts) if parts else np.zeros(0)


def compare(a: Mapping[str, Any], b: Mapping[str, Any], *, alpha: float = 0.05,
            metrics: Sequence[str] = COMPARED_METRICS, n_boot: int = 2000) -> dict[str, Any]:
    """What changed from result file `a` to `b`, and whether each change is beyond noise.

    Per run present in both (same rate key) and per metric: with 2+ iterations on both sides, Welch's
    t-test on the per-iteration values (significant if p < alpha); with single runs, latency metrics are
    judged by a bootstrap interval over per-frame latencies (significant if it excludes 0); other single-run
    metrics have unknown noise. Also lists the metadata that differs (config, host, GPU, input, versions).
    """
    changes: list[Change] = []
    runs_a, runs_b = a.get('runs', {}), b.get('runs', {})
    common = [k for k in runs_a if k in runs_b]
    for key in common:
        ra, rb = runs_a[key], runs_b[key]
        ca, cb = ra.get('concluded', {}), rb.get('concluded', {})
        for metric in metrics:
            va, vb = ca.get(metric), cb.get(metric)
            if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
                continue
            delta = vb - va
            ratio = vb / va if va else math.nan
            xs, ys = _iteration_values(ra, metric), _iteration_values(rb, metric)
            p_value: float | None = None
            significant: bool | None = None
            if len(xs) >= 2 and len(ys) >= 2:
                method = 'welch-t'
                _, _, p_value = welch_t_test(xs, ys)
                significant = p_value < alpha
            elif metric in _LATENCY_STATISTIC:
                la, lb = _pooled_latencies(ra), _pooled_latencies(rb)
                if la.size >= 10 and lb.size >= 10:
                    method = 'bootstrap'
                    lo, hi = bootstrap_ci(la, lb, _LATENCY_STATISTIC[metric], n_boot, 1 - alpha)
                    significant = lo > 0 or hi < 0
                else:
                    method = 'single-run'
            else:
                method = 'single-run'
            changes.append(Change(key, metric, va, vb, delta, ratio, method, p_value, significant,
                                  _verdict(metric, delta, significant)))
    pa, pb = (a.get('peak') or {}).get('peak_hz'), (b.get('peak') or {}).get('peak_hz')
    if pa is not None and pb is not None:
        delta = pb - pa
        changes.append(Change('peak', 'PEAK_FRAME_RATE', pa, pb, delta, pb / pa if pa else math.nan,
                              'single-run', None, None, _verdict('PEAK_FRAME_RATE', delta, None)))
    return {'changes': [asdict(c) for c in changes], 'metadata_diff': metadata_diff(a, b),
            'only_in_a': [k for k in runs_a if k not in runs_b],
            'only_in_b': [k for k in runs_b if k not in runs_a], 'alpha': alpha}


def _flatten(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + '.'))
        else:
            out[key] = v
    return out


def metadata_diff(a: Mapping[str, Any], b: Mapping[str, Any],
                  ignore: Iterable[str] = ('datetime', 'duration_total_s')) -> dict[str, list[Any]]:
    """Metadata keys whose values differ between two result files: key -> [a, b]."""
    fa, fb = _flatten(a.get('metadata') or {}), _flatten(b.get('metadata') or {})
    skip = set(ignore)
    return {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb))
            if k.split('.')[-1] not in skip and fa.get(k) != fb.get(k)}


def format_comparison(result: Mapping[str, Any]) -> str:
    """A plain-text table of a `compare` result."""
    lines = [f"{'run':>10} {'metric':<30} {'A':>10} {'B':>10} {'B/A':>7} {'p':>7}  verdict"]
    for c in result['changes']:
        p = '-' if c['p_value'] is None else f"{c['p_value']:.3f}"
        ratio = '-' if not math.isfinite(c['ratio']) else f"{c['ratio']:.3f}"
        lines.append(f"{c['run']:>10} {c['metric']:<30} {c['a']:>10.3f} {c['b']:>10.3f} {ratio:>7} {p:>7}  "
                     f"{c['verdict']} ({c['method']})")
    if result['metadata_diff']:
        lines.append('what differs between the runs:')
        for k, (va, vb) in result['metadata_diff'].items():
            lines.append(f'  {k}: {va!r} -> {vb!r}')
    for side in ('only_in_a', 'only_in_b'):
        if result[side]:
            lines.append(f"{side.replace('_', ' ')}: {', '.join(result[side])}")
    return '\n'.join(lines)


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
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver: a CPU host
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append({'index': i, 'name': name.decode() if isinstance(name, bytes) else name,
                         'memory_mib': int(mem.total) // (1 << 20),
                         'driver': driver.decode() if isinstance(driver, bytes) else driver})
    except Exception:  # noqa: BLE001
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return gpus


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
