"""Comparing two benchmark results: Welch t-test, bootstrap intervals, verdicts and metadata differences.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from isaac_perf.core.bench.metrics import COMPARED_METRICS, HIGHER_IS_BETTER, _metrics_of


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
