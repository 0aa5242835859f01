"""Offline tuning: sweep and search batch size / queue delay / streams under a latency budget.

The anchor is Triton Model Analyzer: measure every setting the same way (warm-up, then throughput and
latency percentiles), rank settings by an objective under constraints (max p99 latency, min FPS, max GPU
memory), and find a near-best setting without trying them all (its "quick" search is a hill climb over a
coordinate grid). Nothing here knows how a setting is measured: the caller passes `measure(config) ->
Measurement`, a function that runs the pipeline with `config` (a dict, knob name -> value) and reports.
That keeps the search testable with exact numbers on synthetic curves (`BatchedPipelineModel`), and the
same code drives the real batcher in benchmarks/tuning.py.

Three searches, cheapest last:
- `exhaustive_search`: every point of the grid; the reference.
- `sweep`: one axis (say batch size) in increasing order with early stop (the seed's BatchSizeOptimizer,
  done properly): stop when throughput falls below (1 - degrade) of the best so far, when it has not grown
  by `min_gain` for `patience` steps (Model Analyzer stops concurrency sweeps the same way), or when the
  latency budget is broken (latency only grows along such an axis).
- `hill_climb`: coordinate search from a start point; steepest step over the +-1 neighbours of every axis,
  then keeps going in a direction while it pays ("momentum"), so a path from batch 1 to batch 64 costs about
  one trial per step plus one neighbourhood at the end.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

Value = int | float | str
Config = dict[str, Value]
ConfigKey = tuple[Value, ...]

NAN = float('nan')


# --------------------------------------------------------------------------------------------- measurements

@dataclass(frozen=True)
class Measurement:
    """What one setting achieved over one measurement window.

    Latencies are end to end per frame (arrival to result), in milliseconds. NaN means "not measured";
    `error` non-empty means the setting could not run at all (out of memory, refused...), which makes it
    infeasible whatever the numbers say.
    """
    throughput_fps: float
    latency_p99_ms: float
    latency_p50_ms: float = NAN
    latency_p90_ms: float = NAN
    latency_mean_ms: float = NAN
    latency_max_ms: float = NAN
    jitter_ms: float = NAN  # standard deviation of the per-frame latency
    gpu_util_pct: float = NAN
    gpu_power_w: float = NAN
    gpu_memory_mb: float = NAN
    frames: int = 0
    dropped: int = 0
    duration_s: float = 0.0
    error: str = ''

    @classmethod
    def from_latencies(cls, latencies_ms: Sequence[float] | np.ndarray, duration_s: float,
                       dropped: int = 0, **extra: Any) -> Measurement:
        """Summarise per-frame latencies collected over `duration_s` seconds.

        Throughput counts delivered frames (len(latencies_ms)) per second; dropped frames are reported
        separately, since a setting that drops half its input is not twice as fast.
        """
        lat = np.asarray(latencies_ms, dtype=np.float64)
        if duration_s <= 0:
            raise ValueError(f'duration_s={duration_s} must be positive: measure over a real window')
        if lat.size == 0:
            return cls(throughput_fps=0.0, latency_p99_ms=NAN, frames=0, dropped=dropped,
                       duration_s=duration_s, error=extra.pop('error', '') or 'no frame delivered', **extra)
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        return cls(throughput_fps=lat.size / duration_s, latency_p99_ms=float(p99), latency_p50_ms=float(p50),
                   latency_p90_ms=float(p90), latency_mean_ms=float(lat.mean()),
                   latency_max_ms=float(lat.max()), jitter_ms=float(lat.std()), frames=int(lat.size),
                   dropped=dropped, duration_s=duration_s, **extra)

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


class Objective(str, Enum):
    """What "best" means among the settings that meet the constraints (higher score is better)."""
    THROUGHPUT = 'throughput'  # frames per second
    LATENCY = 'latency'  # lowest p99
    EFFICIENCY_UTIL = 'efficiency_util'  # frames per second per GPU-utilisation percent
    EFFICIENCY_POWER = 'efficiency_power'  # frames per joule (fps per watt)

    @classmethod
    def parse(cls, name: str | Objective) -> Objective:
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f'objective {name!r} is not one of {", ".join(o.value for o in cls)}') from None


def score(objective: Objective | str, m: Measurement) -> float:
    """The objective's value for `m`, higher is better; -inf when it cannot be computed."""
    objective = Objective.parse(objective)
    if m.error:
        return -math.inf
    if objective is Objective.THROUGHPUT:
        value = m.throughput_fps
    elif objective is Objective.LATENCY:
        value = -m.latency_p99_ms
    elif objective is Objective.EFFICIENCY_UTIL:
        value = m.throughput_fps / m.gpu_util_pct if m.gpu_util_pct > 0 else NAN
    else:
        value = m.throughput_fps / m.gpu_power_w if m.gpu_power_w > 0 else NAN
    return -math.inf if math.isnan(value) else float(value)


@dataclass(frozen=True)
class Constraints:
    """Limits a setting must respect to count at all (None = no limit)."""
    max_p99_ms: float | None = None
    min_fps: float | None = None
    max_gpu_memory_mb: float | None = None

    def violations(self, m: Measurement) -> list[str]:
        """Each broken limit, saying by how much; [] when `m` is feasible."""
        out = []
        if m.error:
            out.append(f'failed: {m.error}')
            return out
        if self.max_p99_ms is not None and not m.latency_p99_ms <= self.max_p99_ms:
            out.append(f'p99 {m.latency_p99_ms:.1f} ms > {self.max_p99_ms:g} ms budget')
        if self.min_fps is not None and not m.throughput_fps >= self.min_fps:
            out.append(f'{m.throughput_fps:.1f} FPS < {self.min_fps:g} FPS minimum')
        if self.max_gpu_memory_mb is not None and m.gpu_memory_mb > self.max_gpu_memory_mb:
            out.append(f'GPU memory {m.gpu_memory_mb:.0f} MB > {self.max_gpu_memory_mb:g} MB limit')
        return out

    def excess(self, m: Measurement) -> float:
        """How far outside the limits `m` is, as a sum of relative overshoots (0 when feasible).

        Used to rank infeasible settings, so a search that starts far from feasible walks towards it.
        """
        if m.error:
            return math.inf
        total = 0.0
        if self.max_p99_ms is not None:
            total += _relative_over(m.latency_p99_ms, self.max_p99_ms)
        if self.min_fps is not None:
            total += max(0.0, self.min_fps - m.throughput_fps) / max(self.min_fps, 1e-9)
        if self.max_gpu_memory_mb is not None and not math.isnan(m.gpu_memory_mb):
            total += _relative_over(m.gpu_memory_mb, self.max_gpu_memory_mb)
        return total


def _relative_over(value: float, limit: float) -> float:
    if math.isnan(value):
        return math.inf
    return max(0.0, value - limit) / max(abs(limit), 1e-9)


# ------------------------------------------------------------------------------------------ search space

@dataclass(frozen=True)
class Axis:
    """One knob and the values worth trying, in order (neighbours differ by one position)."""
    name: str
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f'axis {self.name!r} has no values: give at least one')
        if len(set(self.values)) != len(self.values):
            raise ValueError(f'axis {self.name!r} repeats a value: {self.values}')


def powers_of_two(low: int, high: int) -> tuple[int, ...]:
    """low, the powers of two strictly between, and high: the usual batch-size ladder (1, 2, 4, ... 48)."""
    if low < 1 or high < low:
        raise ValueError(f'need 1 <= low <= high, got low={low}, high={high}')
    values = [low] + [2 ** i for i in range(0, 31) if low < 2 ** i < high]
    if high != low:
        values.append(high)
    return tuple(values)


def ladder(low: float, high: float, steps: Iterable[float] = (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
           ) -> tuple[float, ...]:
    """low, the `steps` strictly between, and high: a 1-2-5 ladder for delays in milliseconds."""
    if high < low:
        raise ValueError(f'need low <= high, got low={low}, high={high}')
    values = [float(low)] + [float(s) for s in steps if low < s < high]
    if high != low:
        values.append(float(high))
    return tuple(values)


def gpu_axis(available: int, limit: int | None = None, low: int = 1) -> Axis:
    """The `num_gpus` axis: low .. min(available, limit) GPUs (applied as gpu_ids [0 .. n-1]).

    Bounded by what the machine has: asking for more GPUs than exist only produces refused settings.
    Without any GPU the axis is (1,): one device (the CPU), nothing to search.
    """
    if low < 1:
        raise ValueError(f'num_gpus low={low}: use at least 1')
    high = max(1, int(available))
    if limit is not None:
        high = min(high, int(limit))
    if high < low:
        raise ValueError(f'num_gpus {low}..{high}: only {available} GPU(s) available'
                         + (f' and limit {limit}' if limit is not None else ''))
    return Axis('num_gpus', tuple(range(low, high + 1)))


def gpu_ids_for(num_gpus: int) -> list[int]:
    """The stream_batcher `gpu_ids` value that uses `num_gpus` GPUs: the first ones, [0 .. num_gpus-1]."""
    if num_gpus < 1:
        raise ValueError(f'num_gpus={num_gpus}: use at least 1')
    return list(range(int(num_gpus)))


class SearchSpace:
    """The grid of settings: the product of the axes' values."""

    def __init__(self, axes: Sequence[Axis]):
        if not axes:
            raise ValueError('a search space needs at least one axis')
        names = [a.name for a in axes]
        if len(set(names)) != len(names):
            raise ValueError(f'axis names repeat: {names}')
        self.axes = tuple(axes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def size(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def key(self, config: Mapping[str, Value]) -> ConfigKey:
        return tuple(config[a.name] for a in self.axes)

    def index(self, config: Mapping[str, Value]) -> tuple[int, ...]:
        try:
            return tuple(a.values.index(config[a.name]) for a in self.axes)
        except ValueError:
            raise ValueError(f'{dict(config)} is not on the grid {self.describe()}') from None

    def at(self, index: Sequence[int]) -> Config:
        return {a.name: a.values[i] for a, i in zip(self.axes, index, strict=True)}

    def first(self) -> Config:
        return self.at([0] * len(self.axes))

    def configs(self) -> list[Config]:
        """Every setting, first axis slowest."""
        return [self.at(idx) for idx in itertools.product(*(range(len(a.values)) for a in self.axes))]

    def step(self, config: Mapping[str, Value], direction: tuple[int, ...]) -> Config | None:
        """The setting `direction` (one int per axis) away, or None when that leaves the grid."""
        idx = [i + d for i, d in zip(self.index(config), direction, strict=True)]
        if any(i < 0 or i >= len(a.values) for i, a in zip(idx, self.axes, strict=True)):
            return None
        return self.at(idx)

    def directions(self) -> list[tuple[int, ...]]:
        """Unit moves: +1 then -1 along each axis, in axis order."""
        out = []
        for n in range(len(self.axes)):
            for sign in (1, -1):
                d = [0] * len(self.axes)
                d[n] = sign
                out.append(tuple(d))
        return out

    def describe(self) -> str:
        return ', '.join(f'{a.name} in {list(a.values)}' for a in self.axes)


# --------------------------------------------------------------------------------------------- trials

@dataclass(frozen=True)
class Trial:
    """One measured setting, in the order it was run."""
    number: int
    config: Config
    measurement: Measurement
    score: float
    violations: tuple[str, ...]
    excess: float
    started_s: float  # on the runner's clock, relative to its creation
    took_s: float

    @property
    def feasible(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {'number': self.number, 'config': dict(self.config), 'feasible': self.feasible,
                'score': None if math.isinf(self.score) else self.score, 'violations': list(self.violations),
                'started_s': self.started_s, 'took_s': self.took_s, 'measurement': self.measurement.as_dict()}


def better(a: Trial | None, b: Trial | None, min_gain: float = 0.0) -> bool:
    """True when `a` ranks above `b`: feasible beats infeasible; among feasible, higher score by more than
    `min_gain` (relative), an exact tie going to the lower p99; among infeasible, smaller excess (closer to
    the limits). A full tie keeps `b`, so searches prefer what they met first."""
    if a is None:
        return False
    if b is None:
        return True
    if a.feasible != b.feasible:
        return a.feasible
    if a.feasible:
        if math.isinf(b.score):
            return not math.isinf(a.score)
        if a.score == b.score and min_gain == 0.0:
            # an exact tie (e.g. both at the GPU's throughput ceiling): the lower p99 wins
            return a.measurement.latency_p99_ms < b.measurement.latency_p99_ms
        return a.score > b.score + min_gain * abs(b.score)
    return a.excess < b.excess * (1.0 - min_gain) if math.isfinite(b.excess) else math.isfinite(a.excess)


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The best of `trials` by `better` (None when there are none)."""
    best = None
    for t in trials:
        if better(t, best):
            best = t
    return best


class BudgetExhausted(RuntimeError):
    """The runner was asked for more trials than `max_trials` allows."""


class TrialRunner:
    """Runs `measure` on settings, once each (results are cached), with warm-up and a trial budget.

    `warmup_runs` calls of `measure` precede the recorded one for each new setting and are thrown away:
    the first batches after a change pay for allocation, autotuning and caches, which is not the setting's
    steady state. `measure` raising any exception records a failed (infeasible) trial instead of ending the
    search: a batch size that runs out of memory is an answer, not a crash.
    """

    def __init__(self, measure: Callable[[Config], Measurement], *,
                 objective: Objective | str = Objective.THROUGHPUT, constraints: Constraints = Constraints(),
                 warmup_runs: int = 0, max_trials: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if warmup_runs < 0:
            raise ValueError(f'warmup_runs={warmup_runs} must be >= 0')
        self.measure = measure
        self.objective = Objective.parse(objective)
        self.constraints = constraints
        self.warmup_runs = warmup_runs
        self.max_trials = max_trials
        self.clock = clock
        self._t0 = clock()
        self._cache: dict[tuple[tuple[str, Value], ...], Trial] = {}
        self.trials: list[Trial] = []

    @staticmethod
    def _key(config: Mapping[str, Value]) -> tuple[tuple[str, Value], ...]:
        return tuple(sorted(config.items()))

    def seen(self, config: Mapping[str, Value]) -> Trial | None:
        return self._cache.get(self._key(config))

    def run(self, config: Mapping[str, Value]) -> Trial:
        """The trial for `config`: measured now, or the cached one."""
        key = self._key(config)
        if key in self._cache:
            return self._cache[key]
        if self.max_trials is not None and len(self.trials) >= self.max_trials:
            raise BudgetExhausted(f'{self.max_trials} trials used; raise max_trials to search further')
        config = dict(config)
        start = self.clock()
        try:
            for _ in range(self.warmup_runs):
                self.measure(dict(config))
            m = self.measure(dict(config))
        except Exception as exc:  # noqa: BLE001 - any failure of the measured pipeline is a result
            m = Measurement(throughput_fps=0.0, latency_p99_ms=NAN, error=f'{type(exc).__name__}: {exc}')
        took = self.clock() - start
        trial = Trial(number=len(self.trials), config=config, measurement=m, score=score(self.objective, m),
                      violations=tuple(self.constraints.violations(m)), excess=self.constraints.excess(m),
                      started_s=start - self._t0, took_s=took)
        self._cache[key] = trial
        self.trials.append(trial)
        return trial

    def best(self) -> Trial | None:
        top = None
        for t in self.trials:
            if better(t, top):
                top = t
        return top


@dataclass
class SearchResult:
    """The outcome of a search: the best trial (feasible if any was), every trial, and why it stopped."""
    best: Trial | None
    trials: list[Trial]
    stop_reason: str
    method: str
    path: list[Trial] = field(default_factory=list)  # accepted steps, for a hill climb

    @property
    def feasible(self) -> bool:
        return self.best is not None and self.best.feasible

    def as_dict(self) -> dict[str, Any]:
        return {'method': self.method, 'stop_reason': self.stop_reason, 'n_trials': len(self.trials),
                'best': self.best.as_dict() if self.best else None,
                'path': [t.number for t in self.path], 'trials': [t.as_dict() for t in self.trials]}


# ---------------------------------------------------------------------------------------------- searches

def exhaustive_search(runner: TrialRunner, space: SearchSpace) -> SearchResult:
    """Measure every setting of the grid (the reference the quick searches are judged against)."""
    first = len(runner.trials)
    try:
        for config in space.configs():
            runner.run(config)
        reason = f'all {space.size} settings measured'
    except BudgetExhausted as exc:
        reason = str(exc)
    trials = runner.trials[first:]
    best = best_trial(trials)
    return SearchResult(best=best, trials=trials, stop_reason=reason, method='exhaustive')


def sweep(runner: TrialRunner, axis: Axis, base: Mapping[str, Value] | None = None, *,
          degrade: float = 0.2, min_gain: float = 0.05, patience: int = 3,
          stop_on_violation: bool = True) -> SearchResult:
    """Try `axis`'s values in order (other knobs fixed at `base`), stopping early.

    Stops when throughput drops below (1 - degrade) x the best so far (the seed's 0.8 rule); when
    throughput has not beaten the best by `min_gain` for `patience` consecutive values (a plateau: larger
    batches only add latency); or, with `stop_on_violation`, at the first setting that breaks a constraint
    after one that met them (latency only grows along a batch/concurrency axis, so the rest break it too).
    """
    base = dict(base or {})
    first = len(runner.trials)
    best: Trial | None = None
    peak_fps = 0.0
    stale = 0
    reason = f'all {len(axis.values)} values of {axis.name} measured'
    try:
        for value in axis.values:
            t = runner.run({**base, axis.name: value})
            fps = t.measurement.throughput_fps
            if better(t, best):
                best = t
            if stop_on_violation and not t.feasible and best is not None and best.feasible:
                reason = f'{axis.name}={value} broke the constraints ({"; ".join(t.violations)})'
                break
            if peak_fps > 0 and fps < (1.0 - degrade) * peak_fps:
                reason = (f'{axis.name}={value}: throughput {fps:.1f} FPS fell below {1 - degrade:.0%} '
                          f'of the best {peak_fps:.1f} FPS')
                break
            if fps > peak_fps * (1.0 + min_gain):
                stale = 0
            else:
                stale += 1
                if stale >= patience:
                    reason = (f'{axis.name}={value}: no throughput gain of {min_gain:.0%} for {patience} '
                              f'values in a row')
                    break
            peak_fps = max(peak_fps, fps)
    except BudgetExhausted as exc:
        reason = str(exc)
    return SearchResult(best=best, trials=runner.trials[first:], stop_reason=reason,
                        method=f'sweep:{axis.name}')


def hill_climb(runner: TrialRunner, space: SearchSpace, start: Mapping[str, Value] | None = None, *,
               min_gain: float = 0.0, momentum: bool = True) -> SearchResult:
    """Coordinate hill climb from `start` (default: the grid's first point, every knob at its lowest).

    Each round first retries the last successful direction (when `momentum`), and only when that does not
    pay, measures the +-1 neighbour along every axis and moves to the best one. It stops at a setting none
    of whose neighbours is better by `min_gain`: a local optimum, found with far fewer trials than the grid
    has points when the curves are as smooth as latency and throughput are in batch size and streams.
    """
    first = len(runner.trials)
    config = dict(start) if start is not None else space.first()
    space.index(config)  # fails early, with the grid, if start is off it
    path: list[Trial] = []
    last_dir: tuple[int, ...] | None = None
    try:
        current = runner.run(config)
        path.append(current)
        while True:
            if momentum and last_dir is not None:
                ahead = space.step(current.config, last_dir)
                if ahead is not None:
                    t = runner.run(ahead)
                    if better(t, current, min_gain):
                        current = t
                        path.append(t)
                        continue
            best_dir, best_t = None, None
            for d in space.directions():
                nxt = space.step(current.config, d)
                if nxt is None:
                    continue
                t = runner.run(nxt)
                if better(t, best_t):
                    best_dir, best_t = d, t
            if best_t is not None and better(best_t, current, min_gain):
                current, last_dir = best_t, best_dir
                path.append(best_t)
                continue
            reason = 'local optimum: no neighbour is better'
            break
    except BudgetExhausted as exc:
        reason = str(exc)
    trials = runner.trials[first:]
    best = best_trial(trials)
    return SearchResult(best=best, trials=trials, stop_reason=reason, method='hill_climb', path=path)
