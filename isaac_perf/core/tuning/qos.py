"""QoS advice as plain data: profiles per kind of stream, publisher/subscriber compatibility, trade-offs.

No rclpy here: a `QosSpec` is a frozen dataclass of strings and milliseconds that `isaac_perf.ros.qos`
turns into an rclpy QoSProfile (and back). That keeps the rules testable without a ROS context and lets
the YAML files name QoS in words.

Profiles (`profile_for(kind, rate_hz, ...)`):
- `sensor`: camera/lidar frames. Best effort (a late frame is worth less than the next one), keep last 1..2,
  volatile, deadline from the expected rate (a missed frame is an event you can count), lifespan so a frame
  older than the latency budget is never delivered.
- `results`: detections/tensors leaving the pipeline. Reliable (consumers count on them), keep last a few,
  volatile, deadline from the rate.
- `control`: commands to actuators. Reliable, keep last 1 (only the newest command matters), a tight
  deadline and an automatic liveliness lease so a silent controller is noticed.
- `state`: latched configuration / maps / robot description. Reliable + transient local, keep last 1.
- `metrics`: /performance_metrics and the like: reliable, keep last 10, volatile.

Compatibility (`check_compatible(pub, sub)`) follows the ROS 2 rules ("QoS compatibilities" in the ROS 2
docs, and rmw_qos_profile_check_compatible): the publisher must offer at least what the subscriber requests
for reliability, durability, deadline, liveliness and lease duration; else no message flows. Each verdict
comes with the reason and the fix. Settings it cannot judge (system default) give a warning, like rmw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

RELIABILITY = ('reliable', 'best_effort', 'system_default', 'best_available')
DURABILITY = ('volatile', 'transient_local', 'system_default', 'best_available')
HISTORY = ('keep_last', 'keep_all', 'system_default')
LIVELINESS = ('automatic', 'manual_by_topic', 'system_default', 'best_available')



@dataclass(frozen=True)
class QosSpec:
    """A QoS profile in plain words. Durations are milliseconds; None means infinite (the ROS default).

    The defaults are rclpy's default profile (reliable, volatile, keep last 10, liveliness system default);
    the stream profiles below set liveliness to automatic explicitly, since rmw cannot judge a pair where
    both sides leave it to the middleware (a compatibility warning).
    """
    reliability: str = 'reliable'
    durability: str = 'volatile'
    history: str = 'keep_last'
    depth: int = 10
    deadline_ms: float | None = None
    lifespan_ms: float | None = None
    liveliness: str = 'system_default'
    liveliness_lease_ms: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (('reliability', RELIABILITY), ('durability', DURABILITY),
                              ('history', HISTORY), ('liveliness', LIVELINESS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f'{name}={value!r} is not one of {", ".join(allowed)}')
        if self.history == 'keep_last' and self.depth < 1:
            raise ValueError(f'depth={self.depth}: keep_last needs a depth of at least 1')
        for name in ('deadline_ms', 'lifespan_ms', 'liveliness_lease_ms'):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f'{name}={value} must be > 0 ms, or None for infinite')

    def with_(self, **changes: Any) -> QosSpec:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        parts = [self.reliability, self.durability,
                 f'keep_last {self.depth}' if self.history == 'keep_last' else self.history]
        for name in ('deadline_ms', 'lifespan_ms', 'liveliness_lease_ms'):
            value = getattr(self, name)
            if value is not None:
                parts.append(f'{name[:-3]} {value:g} ms')
        if self.liveliness != 'system_default':
            parts.append(f'liveliness {self.liveliness}')
        return ', '.join(parts)


def period_ms(rate_hz: float) -> float:
    if not rate_hz > 0:
        raise ValueError(f'rate_hz={rate_hz} must be > 0: give the stream\'s expected rate')
    return 1000.0 / rate_hz


# Fast DDS's default shared-memory segment. Measured here (benchmarks/tuning.py --qos, Kilted wheels,
# rmw_fastrtps_cpp): best-effort frames of 451,584 B all arrived across processes, 589,824 B frames 18 of
# 182, 921,600 B (640x480 rgb8) 7 of 361, 1920x1080 none, while reliable delivered them all.
FASTDDS_SHM_SEGMENT_BYTES = 512 * 1024


def sensor_profile(rate_hz: float, *, depth: int = 1, deadline_periods: float = 1.5,
                   latency_budget_ms: float | None = None, frame_bytes: int = 0) -> QosSpec:
    """Sensor frames: keep last `depth`, deadline `deadline_periods` frame periods (so one late frame is a
    deadline miss, not jitter), lifespan = the latency budget (stale frames never delivered).

    Best effort (a late frame is worth less than the next one), except for frames larger than Fast DDS's
    default 512 KiB shared-memory segment, which best effort loses almost entirely between processes on
    default settings (measured, see TRADE_OFFS): those get reliable with the same small depth, which keeps
    latency bounded just as well when the depth is 1-2.
    """
    reliability = 'reliable' if frame_bytes > FASTDDS_SHM_SEGMENT_BYTES else 'best_effort'
    return QosSpec(reliability=reliability, durability='volatile', depth=depth,
                   deadline_ms=deadline_periods * period_ms(rate_hz), lifespan_ms=latency_budget_ms,
                   liveliness='automatic')


def results_profile(rate_hz: float, *, depth: int = 5, deadline_periods: float = 2.0) -> QosSpec:
    return QosSpec(reliability='reliable', durability='volatile', depth=depth,
                   deadline_ms=deadline_periods * period_ms(rate_hz), liveliness='automatic')


def control_profile(rate_hz: float, *, deadline_periods: float = 1.2, lease_periods: float = 3.0) -> QosSpec:
    period = period_ms(rate_hz)
    return QosSpec(reliability='reliable', durability='volatile', depth=1,
                   deadline_ms=deadline_periods * period, liveliness='automatic',
                   liveliness_lease_ms=lease_periods * period)


def state_profile() -> QosSpec:
    return QosSpec(reliability='reliable', durability='transient_local', depth=1, liveliness='automatic')


def metrics_profile() -> QosSpec:
    return QosSpec(reliability='reliable', durability='volatile', depth=10, liveliness='automatic')


PROFILE_KINDS = ('sensor', 'results', 'control', 'state', 'metrics')


def profile_for(kind: str, rate_hz: float | None = None, **options: Any) -> QosSpec:
    """The profile for a kind of stream (see the module docstring); rate_hz is needed for sensor, results
    and control, whose deadlines come from it."""
    if kind in ('state', 'metrics'):
        return state_profile() if kind == 'state' else metrics_profile()
    builders = {'sensor': sensor_profile, 'results': results_profile, 'control': control_profile}
    if kind not in builders:
        raise ValueError(f'profile kind {kind!r} is not one of {", ".join(PROFILE_KINDS)}')
    if rate_hz is None:
        raise ValueError(f'the {kind} profile needs rate_hz (its deadline comes from the expected rate)')
    return builders[kind](rate_hz, **options)


# ------------------------------------------------------------------------------------------ compatibility

@dataclass
class Compatibility:
    """Verdict for one publisher/subscriber pair: 'ok', 'warning' (may not match), or 'error' (never)."""
    level: str = 'ok'
    reasons: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return self.level != 'error'

    def _add(self, level: str, reason: str) -> None:
        self.reasons.append(reason)
        if level == 'error' or (level == 'warning' and self.level == 'ok'):
            self.level = level


def _ms(value: float | None) -> float:
    return math.inf if value is None else value


def _fmt(value: float | None) -> str:
    return 'infinite' if value is None else f'{value:g} ms'


def check_compatible(pub: QosSpec, sub: QosSpec) -> Compatibility:
    """Can a publisher with `pub` reach a subscription with `sub`? The ROS 2 request-offered rules.

    Errors (no message will flow) are judged first; warnings (system_default on a side where the outcome
    depends on it) only when there is no error, as rmw_qos_profile_check_compatible does, so the level
    agrees with rclpy's `qos_check_compatible` (test_qos_advisor checks every combination).
    """
    result = Compatibility()
    if pub.reliability == 'best_effort' and sub.reliability == 'reliable':
        result._add('error', 'reliability: the subscription requests reliable but the publisher offers best '
                    'effort; make the subscription best_effort (sensor data) or the publisher reliable')
    if pub.durability == 'volatile' and sub.durability == 'transient_local':
        result._add('error', 'durability: the subscription requests transient_local but the publisher '
                    'offers volatile; make the subscription volatile or the publisher transient_local')
    if _ms(pub.deadline_ms) > _ms(sub.deadline_ms):
        result._add('error', f'deadline: the publisher offers {_fmt(pub.deadline_ms)} but the subscription '
                    f'requests {_fmt(sub.deadline_ms)}; the offered deadline must be at most the '
                    'requested one')
    if pub.liveliness == 'automatic' and sub.liveliness == 'manual_by_topic':
        result._add('error', 'liveliness: the subscription requests manual_by_topic but the publisher offers '
                    'automatic; request automatic or offer manual_by_topic')
    if _ms(pub.liveliness_lease_ms) > _ms(sub.liveliness_lease_ms):
        result._add('error', f'liveliness lease: the publisher offers {_fmt(pub.liveliness_lease_ms)} but '
                    f'the subscription requests {_fmt(sub.liveliness_lease_ms)}; the offered lease must be '
                    'at most the requested one')
    if result.level == 'ok':
        for policy, strong, weak in (('reliability', 'reliable', 'best_effort'),
                                     ('durability', 'transient_local', 'volatile'),
                                     ('liveliness', 'manual_by_topic', 'automatic')):
            p, s = getattr(pub, policy), getattr(sub, policy)
            p_unknown, s_unknown = p == 'system_default', s == 'system_default'
            if (p_unknown and s_unknown) or (p_unknown and s == strong) or (p == weak and s_unknown):
                result._add('warning', f'{policy}: publisher {p}, subscription {s}; whether they match '
                            f'depends on the middleware default: set {policy} explicitly on both sides')
    # Compatible but worth knowing:
    if result.compatible and pub.reliability == 'reliable' and sub.reliability == 'best_effort':
        result.reasons.append('note: a reliable publisher to a best-effort subscription delivers best effort')
    if result.compatible and pub.durability == 'transient_local' and sub.durability == 'volatile':
        result.reasons.append('note: the subscription is volatile, so it does not get messages sent before '
                              'it joined')
    return result


# ------------------------------------------------------------------------------------------- trade-offs

@dataclass(frozen=True)
class TradeOff:
    """A known QoS trade-off, with the measurement that backs it (never only the folklore)."""
    title: str
    advice: str
    measurement: str  # what was measured, where, by which command
    applies_when: str = ''


TRADE_OFFS: tuple[TradeOff, ...] = (
    TradeOff(
        title='reliable + deep queues stall a saturated pipeline',
        advice='Keep sensor queues at 1-2 frames (per camera). With a deep reliable queue a consumer that '
               'falls behind receives every frame, each later than the last, until the history is full; '
               'a frame that waited behind the queue is late anyway.',
        measurement='benchmarks/tuning.py --qos (this dev container, 2 cores, Kilted wheels, Fast DDS): '
                    '640x480 rgb8 at 60 Hz into a consumer needing 25 ms a frame, two processes: reliable '
                    'depth 100 gave p50 1492 ms / p99 1669 ms; reliable depth 1 gave p50 11.6 ms / p99 '
                    '17.6 ms for about the same frames delivered (215 vs 189 of 361).',
        applies_when='the input rate exceeds what the consumer processes (frames dropped or queues full)'),
    TradeOff(
        title='best effort loses large frames on Fast DDS',
        advice='Between processes on Fast DDS defaults, best-effort frames larger than the 512 KiB '
               'shared-memory segment are lost almost entirely: use reliable with depth 1-2 for them, or '
               'enlarge the segment / UDP buffers in a Fast DDS XML profile and measure again.',
        measurement='benchmarks/tuning.py --qos (same machine): best effort delivered 7 of 361 640x480 rgb8 '
                    'frames (921,600 B) to a fast consumer and 0 of 91 1920x1080 frames; reliable delivered '
                    '89 of 90 1080p frames at p50 62 ms / p99 82 ms. Frames of 451,584 B: 181 of 181 best '
                    'effort; 589,824 B: 18 of 182. The tuner treats input_reliability as a knob and keeps a '
                    'change only when p99 falls without losing throughput.',
        applies_when='frames over 512 KiB between processes on rmw_fastrtps with default transports'),
    TradeOff(
        title='deadline from the expected rate turns silence into an event',
        advice='Set deadline = 1.5 frame periods on sensor subscriptions (the publisher must offer one at '
               'least as tight); each miss raises a requested-deadline-missed event the tuner counts, '
               'instead of a topic that is silently slow.',
        measurement='test/test_qos_advisor.py: a publisher offering 50 ms and sending every 300 ms raises '
                    'offered and requested deadline-missed events under real DDS.',
        applies_when='any periodic stream'),
    TradeOff(
        title='lifespan bounds staleness, not latency',
        advice='A lifespan equal to the latency budget stops a reliable or transient-local stream from '
               'delivering frames already too old to use; it does not make delivery faster.',
        measurement='ROS 2 QoS design (lifespan is enforced at delivery time); no speed claim made.',
        applies_when='reliable or transient_local streams of perishable data'),
)


def notes_for(spec: QosSpec, kind: str = 'sensor', frame_bytes: int = 0) -> list[str]:
    """Trade-off notes that apply to a stream of `kind` using `spec`."""
    out = []
    if kind == 'sensor' and spec.reliability == 'reliable' and (spec.history == 'keep_all' or spec.depth > 2):
        out.append(f'{TRADE_OFFS[0].title}: {TRADE_OFFS[0].advice}')
    if kind == 'sensor' and spec.reliability == 'best_effort' and frame_bytes > FASTDDS_SHM_SEGMENT_BYTES:
        out.append(f'{TRADE_OFFS[1].title}: {TRADE_OFFS[1].advice}')
    if kind in ('sensor', 'results', 'control') and spec.deadline_ms is None:
        out.append(f'{TRADE_OFFS[2].title}: {TRADE_OFFS[2].advice}')
    return out


# ----------------------------------------------------------------------------------------- QoS events

EVENT_KINDS = ('requested_deadline_missed', 'offered_deadline_missed', 'requested_incompatible_qos',
               'offered_incompatible_qos', 'message_lost', 'liveliness_changed', 'liveliness_lost')


@dataclass(frozen=True)
class QosEvent:
    """A middleware QoS event in plain data: what happened on which topic, and the running counts."""
    kind: str
    topic: str
    total_count: int
    total_count_change: int
    policy: str = ''  # for incompatible-QoS events: the last incompatible policy's name
    time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        text = f'{self.kind} on {self.topic}: +{self.total_count_change} (total {self.total_count})'
        return text + (f', policy {self.policy}' if self.policy else '')


class QosEventCounter:
    """Totals per (kind, topic), so the tuner can read deltas between control steps in O(1)."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def record(self, event: QosEvent) -> None:
        key = (event.kind, event.topic)
        self._totals[key] = self._totals.get(key, 0) + max(0, event.total_count_change)

    def total(self, kind: str, topic: str | None = None) -> int:
        return sum(v for (k, t), v in self._totals.items() if k == kind and (topic is None or t == topic))

    def take_new(self, kind: str) -> int:
        """Events of `kind` (all topics) since the last call."""
        new = 0
        for key, total in self._totals.items():
            if key[0] == kind:
                new += total - self._seen.get(key, 0)
                self._seen[key] = total
        return new
