"""ros2_benchmark's peak-throughput search, iterations and their conclusion, and a fixed-rate queue simulator.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from isaac_perf.core.bench.metrics import _MAX_METRICS, _MIN_METRICS, NS_PER_MS, _metrics_of


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
