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

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
