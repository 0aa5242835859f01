"""Profile report: per-stage statistics, bottlenecks and recommendations tied to what was measured.

Input: a profile dict (`StageProfiler.to_dict()` or `profile_from_stage_times`, schema
`isaac_perf.profile/1`). Output: a `Report` that renders to JSON, Markdown and PNG plots.

Rules (each threshold is an argument of `analyze`):
- time share: a stage whose mean is above `share_threshold` (20%, the seed's rule) of the mean frame time.
  The frame time is the measured frame wall time when the profile has frames, else the sum of stage means.
- high variance: a stage whose coefficient of variation (population std / mean) is above `cv_threshold`
  and that matters (share at least `min_share_for_variance`), so a 0.01 ms stage's noise is not flagged.
- allocation hot spot: a stage allocating more than `alloc_threshold_bytes` per call on average (transient
  peak, tracked with `allocations='python'|'cuda'`), and retained-growth sites from tracemalloc.
- host overhead: a stage that did GPU work (at least `min_gpu_ms` between its CUDA events) whose wall
  time is over `host_overhead_ratio` times its GPU time (the CPU launches, copies or waits while the GPU
  idles). CPU-only stages, whose events measure microseconds, are left to the other rules.
- hot function: a sampled Python function with more than `share_threshold` of the busy samples on top.

Bottlenecks are ranked by `impact_ms`, the frame time at stake (the stage mean for time share, the
standard deviation for variance, wall - GPU for host overhead, the sampled share of the frame for a hot
function). Recommendations use the vocabulary of the seed chapter's
best-practice catalogue (`BEST_PRACTICES`), each with the evidence that triggered it and the isaac_perf
knob that applies it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isaac_perf.core.profiling.practices import (
    ACTIONS,
    BEST_PRACTICES,
    KIND_ACTIONS,
    TIME_SHARE_PRACTICES,
)
from isaac_perf.core.telemetry.gpm import GPM_FIELDS, GpmSample, headroom_findings
from isaac_perf.core.telemetry.stats import percentile, summarize

REPORT_SCHEMA = 'isaac_perf.report/1'
MIN_GPU_MS = 0.05  # a stage whose CUDA-event time is below this did no GPU work worth the name

# Stage kinds by name keyword, checked in this order (so 'postprocess' is not taken for 'preprocess').
_STAGE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('transfer', ('h2d', 'd2h', 'upload', 'download', 'transfer', 'copy')),
    ('postprocess', ('post', 'nms', 'decode_box', 'detection')),
    ('preprocess', ('pre', 'resize', 'normal', 'letterbox')),
    ('inference', ('infer', 'engine', 'model', 'forward', 'execute')),
    ('conversion', ('convert', 'conversion', 'decode', 'deserial', 'from_msg', 'to_msg', 'bridge')),
    ('publish', ('publish', 'serial', 'send', 'transport')),
    ('batching', ('batch', 'queue', 'wait')),
)


def stage_kind(name: str) -> str:
    """What kind of work a stage name suggests ('inference', 'preprocess', ...; 'other' if unknown)."""
    lowered = name.lower()
    for kind, words in _STAGE_KINDS:
        if any(w in lowered for w in words):
            return kind
    return 'other'


@dataclass
class StageStats:
    name: str
    kind: str
    samples: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    cv: float  # population std / mean
    share: float  # mean / mean frame time
    gpu_mean_ms: float | None = None
    gpu_p50_ms: float | None = None
    gpu_p99_ms: float | None = None
    alloc_mean_bytes: float | None = None


@dataclass
class Bottleneck:
    where: str  # a stage name, or a function for cause 'hot_function'
    cause: str  # 'time_share', 'high_variance', 'allocation', 'host_overhead', 'hot_function'
    value: float  # the measured quantity the threshold applies to
    threshold: float
    impact_ms: float  # frame time at stake (ranking key)
    evidence: str


@dataclass
class Recommendation:
    where: str
    cause: str
    practice: str  # a key of BEST_PRACTICES
    category: str
    description: str
    action: str
    evidence: str


@dataclass
class Report:
    frame: dict[str, Any]
    stages: list[StageStats]
    bottlenecks: list[Bottleneck]
    recommendations: list[Recommendation]
    thresholds: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)
    hot_functions: dict[str, Any] | None = None
    allocation_sites: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def top_bottlenecks(self, n: int = 3, functions: bool = False) -> list[str]:
        """The `n` stages with the most frame time at stake, each named once (ranking order); with
        `functions`, sampled hot functions compete too."""
        seen: list[str] = []
        for b in self.bottlenecks:
            if b.cause == 'hot_function' and not functions:
                continue
            if b.where not in seen:
                seen.append(b.where)
        return seen[:n]

    def stage(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f'no stage {name!r} in this report: stages are {[s.name for s in self.stages]}')

    def to_dict(self) -> dict[str, Any]:
        return {'schema': REPORT_SCHEMA, 'metadata': self.metadata, 'frame': self.frame,
                'thresholds': self.thresholds, 'stages': [asdict(s) for s in self.stages],
                'bottlenecks': [asdict(b) for b in self.bottlenecks],
                'top_bottlenecks': self.top_bottlenecks(),
                'recommendations': [asdict(r) for r in self.recommendations],
                'hot_functions': self.hot_functions, 'allocation_sites': self.allocation_sites,
                'warnings': self.warnings}


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values if values is not None else [], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _stage_stats(name: str, data: dict[str, Any], mean: float, frame_mean: float) -> StageStats:
    """One stage's distribution (core telemetry's `summarize`: one percentile definition) and share."""
    wall = summarize(_finite(data['wall_ms']))
    gpu = summarize(_finite(data.get('gpu_ms')))
    alloc = _finite(data.get('alloc_bytes'))
    return StageStats(
        name=name, kind=stage_kind(name), samples=wall.count, mean_ms=mean, p50_ms=wall.p50,
        p90_ms=wall.p90, p99_ms=wall.p99, max_ms=wall.max, std_ms=wall.std,
        cv=wall.std / mean if mean > 0 else math.nan,
        share=mean / frame_mean if frame_mean > 0 else math.nan,
        gpu_mean_ms=gpu.mean if gpu.count else None,
        gpu_p50_ms=gpu.p50 if gpu.count else None, gpu_p99_ms=gpu.p99 if gpu.count else None,
        alloc_mean_bytes=float(alloc.mean()) if alloc.size else None)


def validate_profile(profile: dict[str, Any]) -> None:
    """Raise ValueError saying what is wrong when `profile` is not a usable profile."""
    if not isinstance(profile, dict):
        raise ValueError('a profile is a JSON object (dict); got ' + type(profile).__name__)
    stages = profile.get('stages')
    if not isinstance(stages, dict) or not stages:
        raise ValueError("profile has no 'stages': record at least one stage "
                         "(StageProfiler.stage('name')) or pass a stage_times recording")
    for name, data in stages.items():
        if not isinstance(data, dict) or not isinstance(data.get('wall_ms'), list):
            raise ValueError(f"stage {name!r} lacks a 'wall_ms' list of samples")


def analyze(profile: dict[str, Any], *, share_threshold: float = 0.20, cv_threshold: float = 0.25,
            min_share_for_variance: float = 0.05, alloc_threshold_bytes: float = 1 << 20,
            host_overhead_ratio: float = 2.0, min_gpu_ms: float = MIN_GPU_MS) -> Report:
    """Statistics, ranked bottlenecks and recommendations for one profile."""
    validate_profile(profile)
    thresholds = {'share': share_threshold, 'cv': cv_threshold,
                  'min_share_for_variance': min_share_for_variance,
                  'alloc_bytes': float(alloc_threshold_bytes), 'host_overhead_ratio': host_overhead_ratio,
                  'min_gpu_ms': min_gpu_ms}
    stage_data = profile['stages']
    order = [n for n in profile.get('stage_order', []) if n in stage_data]
    order += [n for n in stage_data if n not in order]
    warnings = list(profile.get('warnings') or [])

    means = {}
    for name in order:
        wall = _finite(stage_data[name]['wall_ms'])
        means[name] = float(wall.mean()) if wall.size else 0.0
    frames = _finite((profile.get('frames') or {}).get('wall_ms'))
    if frames.size:
        frame_mean = float(frames.mean())
        frame = {'source': 'frames', 'samples': int(frames.size), 'mean_ms': frame_mean,
                 'p50_ms': percentile(frames, 50), 'p99_ms': percentile(frames, 99),
                 'max_ms': float(frames.max())}
    else:
        frame_mean = float(sum(means.values()))
        frame = {'source': 'sum_of_stage_means', 'samples': 0, 'mean_ms': frame_mean,
                 'p50_ms': math.nan, 'p99_ms': math.nan, 'max_ms': math.nan}
    frame['fps'] = 1000.0 / frame_mean if frame_mean > 0 else math.nan
    covered = sum(means.values())
    frame['stage_coverage'] = covered / frame_mean if frame_mean > 0 else math.nan
    if frames.size and frame_mean > 0 and covered < 0.8 * frame_mean:
        warnings.append(f'stages cover {100 * covered / frame_mean:.0f}% of the frame time: the rest is '
                        'untimed work; add stages around it')

    stats = [_stage_stats(name, stage_data[name], means[name], frame_mean) for name in order]

    bottlenecks: list[Bottleneck] = []
    for s in stats:
        if s.share > share_threshold:
            bottlenecks.append(Bottleneck(
                s.name, 'time_share', s.share, share_threshold, s.mean_ms,
                f'{s.name} takes {100 * s.share:.1f}% of the frame (mean {s.mean_ms:.3f} ms of '
                f'{frame_mean:.3f} ms; above {100 * share_threshold:.0f}%)'))
        if s.cv > cv_threshold and s.share >= min_share_for_variance:
            bottlenecks.append(Bottleneck(
                s.name, 'high_variance', s.cv, cv_threshold, s.std_ms,
                f'{s.name} varies: CV {s.cv:.2f} (std {s.std_ms:.3f} ms on mean {s.mean_ms:.3f} ms), '
                f'p50 {s.p50_ms:.3f} ms vs p99 {s.p99_ms:.3f} ms'))
        if s.alloc_mean_bytes is not None and s.alloc_mean_bytes > alloc_threshold_bytes:
            bottlenecks.append(Bottleneck(
                s.name, 'allocation', s.alloc_mean_bytes, float(alloc_threshold_bytes), s.mean_ms,
                f'{s.name} allocates {s.alloc_mean_bytes / 1048576:.2f} MiB per call on average '
                f'(above {alloc_threshold_bytes / 1048576:.2f} MiB)'))
        gpu_ms = s.gpu_mean_ms
        if _uses_gpu(s, min_gpu_ms) and s.mean_ms > host_overhead_ratio * gpu_ms:
            bottlenecks.append(Bottleneck(
                s.name, 'host_overhead', s.mean_ms / s.gpu_mean_ms, host_overhead_ratio,
                s.mean_ms - s.gpu_mean_ms,
                f'{s.name}: wall {s.mean_ms:.3f} ms but GPU busy only {s.gpu_mean_ms:.3f} ms '
                f'({s.mean_ms / s.gpu_mean_ms:.1f}x): the CPU side (launches, copies, waits) dominates'))
    hot = profile.get('hot_functions') or None
    if hot:
        for fn in hot.get('functions', []):
            if fn['self_fraction'] > share_threshold:
                bottlenecks.append(Bottleneck(
                    fn['function'], 'hot_function', fn['self_fraction'], share_threshold,
                    fn['self_fraction'] * frame_mean,
                    f"{fn['function']} is on top of {100 * fn['self_fraction']:.1f}% of the busy samples "
                    f"({hot.get('source', '?')})"))
    bottlenecks += gpu_headroom_bottlenecks(profile.get('gpu_headroom') or {})
    # Most frame time at stake first; ties keep the stage order (stable sort).
    bottlenecks.sort(key=lambda b: -b.impact_ms)

    by_name = {s.name: s for s in stats}
    recommendations: list[Recommendation] = []
    given: set[tuple[str, str]] = set()
    for b in bottlenecks:
        for practice in _practices_for(b, by_name.get(b.where), alloc_threshold_bytes, min_gpu_ms):
            if (b.where, practice) in given:  # one practice per place, from its biggest cause
                continue
            given.add((b.where, practice))
            category, description = BEST_PRACTICES[practice]
            kind = by_name[b.where].kind if b.where in by_name else 'other'
            action = KIND_ACTIONS.get((practice, kind), ACTIONS[practice])
            recommendations.append(Recommendation(b.where, b.cause, practice, category, description,
                                                  action, b.evidence))
    sites = list(profile.get('allocation_sites') or [])
    return Report(frame=frame, stages=stats, bottlenecks=bottlenecks, recommendations=recommendations,
                  thresholds=thresholds, metadata=dict(profile.get('metadata') or {}),
                  hot_functions=hot, allocation_sites=sites, warnings=warnings)


_HEADROOM_PRACTICES = {
    'tensor_idle': ('Quantize models when accuracy allows', 'Use TensorRT optimizations'),
    'tensor_not_fp16': ('Quantize models when accuracy allows',),
    'sm_underfilled': ('Batch operations when possible', 'Maximize occupancy'),
    'low_occupancy': ('Maximize occupancy',),
    'memory_bound': ('Optimize memory bandwidth', 'Minimize memory copies'),
}


def gpu_headroom_bottlenecks(gpus: dict[str, dict[str, float]]) -> list[Bottleneck]:
    """Bottlenecks from NVML GPM per GPU: `gpus` maps a GPU index to its /performance_metrics GPU block
    (`util_percent` and the GPM fields, e.g. as `isaac-perf run` records them). No frame time is attached
    to them (impact 0): they say where the GPU has room, not what a frame waits for."""
    out = []
    for index, values in gpus.items():
        sample = GpmSample(index=int(index) if str(index).isdigit() else 0, supported=True)
        sample.values.update({k: float(v) for k, v in values.items() if k in GPM_FIELDS})
        for cause, text in headroom_findings(float(values.get('util_percent', math.nan)), sample):
            value = sample.get('tensor_active_percent' if cause.startswith('tensor') else
                               'dram_bw_util_percent' if cause == 'memory_bound' else
                               'sm_occupancy_percent' if cause == 'low_occupancy' else 'sm_active_percent')
            out.append(Bottleneck(f'gpu{index}', cause, value, 0.0, 0.0, text))
    return out


def _uses_gpu(s: StageStats | None, min_gpu_ms: float) -> bool:
    """Did the stage keep the GPU busy? A CPU-only stage's event pair measures a few microseconds."""
    return s is not None and s.gpu_mean_ms is not None and s.gpu_mean_ms >= min_gpu_ms


def _practices_for(b: Bottleneck, s: StageStats | None, alloc_threshold_bytes: float,
                   min_gpu_ms: float = 0.05) -> tuple[str, ...]:
    """The catalogue practices that answer this bottleneck's measured cause."""
    if b.cause == 'hot_function':
        return ('Profile and optimize hotspots',)
    if b.cause in _HEADROOM_PRACTICES:
        return _HEADROOM_PRACTICES[b.cause]
    if b.cause == 'allocation':
        if s is not None and s.kind == 'transfer':
            return ('Pre-allocate memory pools', 'Use pinned memory for host transfers')
        return ('Pre-allocate memory pools',)
    if b.cause == 'host_overhead':
        return ('Minimize synchronization points', 'Overlap computation and I/O')
    kind = s.kind if s is not None else 'other'
    if b.cause == 'high_variance':
        if s is not None and s.alloc_mean_bytes is not None and s.alloc_mean_bytes > alloc_threshold_bytes:
            return ('Pre-allocate memory pools',)  # the variance comes with per-call allocation
        if kind in ('publish', 'batching', 'conversion'):
            return ('Use appropriate QoS settings', 'Optimize pipeline depth')
        if _uses_gpu(s, min_gpu_ms):
            return ('Minimize synchronization points',)
        # No allocation or GPU evidence: find out where the time goes before changing anything.
        return ('Profile and optimize hotspots',)
    practices = TIME_SHARE_PRACTICES.get(kind, TIME_SHARE_PRACTICES['other'])
    if kind == 'preprocess' and not _uses_gpu(s, min_gpu_ms):
        # A CPU-side preprocess: the copy-heavy part should move to the GPU after one upload.
        return practices
    if kind == 'inference' and s is not None and not _uses_gpu(s, min_gpu_ms):
        # Inference measured without GPU timing is running on the CPU: the hardware is the first fix.
        return ('Optimize for target hardware',) + practices
    return practices


# --- rendering -----------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f'cannot serialise {type(value).__name__}')


def json_safe(value: Any) -> Any:
    """NaN/inf become None so the JSON is standard (json.dumps would write NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def to_json(report: Report) -> str:
    return json.dumps(json_safe(report.to_dict()), indent=2, default=_json_default)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-'
    return f'{value:.{digits}f}'


def to_markdown(report: Report, plots: list[str] | None = None, title: str = 'Profile report') -> str:
    f = report.frame
    lines = [f'# {title}', '']
    if report.metadata:
        meta = ', '.join(f'{k}: {v}' for k, v in report.metadata.items() if not isinstance(v, (dict, list)))
        if meta:
            lines += [meta, '']
    lines += [f"Frame: mean {_fmt(f['mean_ms'])} ms ({_fmt(f['fps'], 1)} fps), p50 {_fmt(f['p50_ms'])} ms, "
              f"p99 {_fmt(f['p99_ms'])} ms over {f['samples']} frames (source: {f['source']}).", '',
              '## Stages', '',
              '| stage | kind | samples | mean ms | p50 ms | p99 ms | share | CV | GPU mean ms '
              '| alloc KiB/call |',
              '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for s in report.stages:
        alloc = None if s.alloc_mean_bytes is None else s.alloc_mean_bytes / 1024
        lines.append(f'| {s.name} | {s.kind} | {s.samples} | {_fmt(s.mean_ms)} | {_fmt(s.p50_ms)} | '
                     f'{_fmt(s.p99_ms)} | {_fmt(100 * s.share, 1)}% | {_fmt(s.cv, 2)} | '
                     f'{_fmt(s.gpu_mean_ms)} | {_fmt(alloc, 1)} |')
    lines += ['', '## Bottlenecks (most frame time at stake first)', '']
    if report.bottlenecks:
        for i, b in enumerate(report.bottlenecks, 1):
            lines.append(f'{i}. **{b.where}** ({b.cause}, {_fmt(b.impact_ms)} ms at stake): {b.evidence}')
    else:
        t = report.thresholds
        lines.append(f"None: no stage above {100 * t['share']:.0f}% of the frame, no CV above {t['cv']}.")
    lines += ['', f"Top bottlenecks: {', '.join(report.top_bottlenecks()) or 'none'}", '',
              '## Recommendations', '']
    for r in report.recommendations:
        lines.append(f'- **{r.where}** ({r.cause}): *{r.practice}* [{r.category}] — {r.description}. '
                     f'How: {r.action}.')
    if not report.recommendations:
        lines.append('None.')
    hot = report.hot_functions
    if hot and hot.get('functions'):
        lines += ['', f"## Hot Python functions ({hot.get('source')}, {hot.get('samples')} samples)", '',
                  '| function | self | total |', '|---|---:|---:|']
        for fn in hot['functions']:
            lines.append(f"| `{fn['function']}` | {100 * fn['self_fraction']:.1f}% | "
                         f"{100 * fn['total_fraction']:.1f}% |")
    if report.allocation_sites:
        lines += ['', '## Allocation sites (retained growth)', '',
                  '| where | KiB | blocks |', '|---|---:|---:|']
        for site in report.allocation_sites:
            lines.append(f"| `{site['where']}` | {site['size_kb']:.1f} | {site['count']} |")
    if report.warnings:
        lines += ['', '## Warnings', ''] + [f'- {w}' for w in report.warnings]
    if plots:
        lines += ['', '## Plots', ''] + [f'![{Path(p).stem}]({Path(p).name})' for p in plots]
    return '\n'.join(lines) + '\n'


def plot(report: Report, profile: dict[str, Any], out_dir: str | Path) -> list[str]:
    """PNG plots (matplotlib, Agg): stage means with p50/p99, stage distributions, per-frame timeline."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    names = [s.name for s in report.stages]
    flagged = {b.where for b in report.bottlenecks}

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.8))
    y = np.arange(len(names))
    means = [s.mean_ms for s in report.stages]
    colors = ['tab:red' if n in flagged else 'tab:blue' for n in names]
    ax.barh(y, means, color=colors, alpha=0.8, label='mean')
    ax.scatter([s.p50_ms for s in report.stages], y, marker='|', s=200, color='black', label='p50')
    ax.scatter([s.p99_ms for s in report.stages], y, marker='x', color='black', label='p99')
    ax.set_yticks(y, [f'{s.name} ({100 * s.share:.0f}%)' for s in report.stages])
    ax.invert_yaxis()
    ax.set_xlabel('ms per call')
    ax.set_title(f"Stage time (frame mean {report.frame['mean_ms']:.2f} ms; red = bottleneck)")
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    paths.append(str(out / 'stages.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    data = [_finite(profile['stages'][n]['wall_ms']) for n in names]
    ax.boxplot([d if d.size else np.zeros(1) for d in data], whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    ax.set_ylabel('ms')
    ax.set_title('Stage time distribution (box: p25-p75, whiskers: p1-p99)')
    fig.tight_layout()
    paths.append(str(out / 'distribution.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    # Per-frame timeline: each stage's time per frame index, stacked.
    frame_ids = sorted({int(f) for n in names for f in profile['stages'][n].get('frame', [])})
    if len(frame_ids) > 1:
        index = {f: i for i, f in enumerate(frame_ids)}
        stack = np.zeros((len(names), len(frame_ids)))
        for row, n in enumerate(names):
            stage = profile['stages'][n]
            for fr, ms in zip(stage.get('frame', []), stage['wall_ms'], strict=False):
                if ms is not None and math.isfinite(ms):
                    stack[row, index[int(fr)]] += ms
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.stackplot(frame_ids, stack, labels=names, alpha=0.85)
        ax.set_xlabel('frame')
        ax.set_ylabel('ms')
        ax.set_title('Per-frame stage time (stacked)')
        ax.legend(loc='upper right', fontsize=8)
        fig.tight_layout()
        paths.append(str(out / 'timeline.png'))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_report(profile: dict[str, Any], out_dir: str | Path, *, plots: bool = True,
                 title: str = 'Profile report', **thresholds: float) -> tuple[Report, dict[str, str]]:
    """Analyze `profile` and write report.json, report.md and the PNGs into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = analyze(profile, **thresholds)
    pngs = plot(report, profile, out) if plots else []
    paths = {'json': str(out / 'report.json'), 'markdown': str(out / 'report.md')}
    Path(paths['json']).write_text(to_json(report))
    Path(paths['markdown']).write_text(to_markdown(report, pngs, title))
    for png in pngs:
        paths[Path(png).stem] = png
    return report, paths
