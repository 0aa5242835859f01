"""rclpy side of the QoS advice: plain `QosSpec` <-> rclpy QoSProfile, short keys, and QoS event callbacks.

Every node that takes a QoS as a parameter calls `qos_from_name(name, depth)`. A name is a comma-separated
list of short keys, in the spirit of ros2topic's `qos_profile_from_short_keys`, applied left to right:

- a preset, case-insensitive: SENSOR_DATA, DEFAULT, SYSTEM_DEFAULT, SERVICES_DEFAULT, PARAMETERS,
  PARAMETER_EVENTS, BEST_AVAILABLE (rclpy's presets), or one of this package's stream profiles written
  `profile:<kind>[@<rate_hz>]` (sensor, results, control, state, metrics; see core/tuning/qos.py);
- a reliability (reliable, best_effort), durability (volatile, transient_local), history (keep_last,
  keep_all) or liveliness (automatic, manual_by_topic) value;
- `depth=N` (or a bare integer), `deadline=MS`, `lifespan=MS`, `lease=MS`.

So 'SENSOR_DATA', 'reliable', 'best_effort,depth=1', 'reliable,transient_local,depth=1' and
'profile:sensor@30' are all valid. Without a preset the base is rclpy's default profile (reliable,
volatile, keep last 10). A `depth` argument overrides the depth in the name.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSPresetProfiles,
    QoSProfile,
    ReliabilityPolicy,
    qos_policy_name_from_kind,
)

from isaac_perf.core.tuning.qos import PROFILE_KINDS, QosEvent, QosSpec, profile_for

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks  # type: ignore

PRESETS = ('SENSOR_DATA', 'DEFAULT', 'SYSTEM_DEFAULT', 'SERVICES_DEFAULT', 'PARAMETERS', 'PARAMETER_EVENTS',
           'BEST_AVAILABLE')

_RELIABILITY = {'reliable': ReliabilityPolicy.RELIABLE, 'best_effort': ReliabilityPolicy.BEST_EFFORT,
                'system_default': ReliabilityPolicy.SYSTEM_DEFAULT}
_DURABILITY = {'volatile': DurabilityPolicy.VOLATILE, 'transient_local': DurabilityPolicy.TRANSIENT_LOCAL,
               'system_default': DurabilityPolicy.SYSTEM_DEFAULT}
_HISTORY = {'keep_last': HistoryPolicy.KEEP_LAST, 'keep_all': HistoryPolicy.KEEP_ALL,
            'system_default': HistoryPolicy.SYSTEM_DEFAULT}
_LIVELINESS = {'automatic': LivelinessPolicy.AUTOMATIC, 'manual_by_topic': LivelinessPolicy.MANUAL_BY_TOPIC,
               'system_default': LivelinessPolicy.SYSTEM_DEFAULT}
# rclpy >= Iron knows BEST_AVAILABLE; Humble does not.
for _table, _policy in ((_RELIABILITY, ReliabilityPolicy), (_DURABILITY, DurabilityPolicy),
                        (_LIVELINESS, LivelinessPolicy)):
    if hasattr(_policy, 'BEST_AVAILABLE'):
        _table['best_available'] = _policy.BEST_AVAILABLE


def preset_profile(name: str) -> QoSProfile:
    """rclpy's QoS preset `name` (any case).

    Humble's QoSPresetProfiles has neither DEFAULT nor BEST_AVAILABLE: DEFAULT is rmw's default profile,
    which a plain QoSProfile(depth=10) is on every distro.
    """
    key = name.upper()
    members = QoSPresetProfiles.__members__
    if key in members:
        return members[key].value
    if key == 'DEFAULT':
        return QoSProfile(depth=10)
    raise ValueError(f"QoS preset {name!r} is not in this rclpy (BEST_AVAILABLE needs Iron or later): use "
                     f"one of {', '.join(['DEFAULT', *members])}")


def _duration(ms: float | None) -> Duration:
    return Duration() if ms is None else Duration(nanoseconds=int(round(ms * 1e6)))


def _ms(d: Duration) -> float | None:
    ns = d.nanoseconds
    # 0 and the rmw "infinite" sentinels (which differ between distros) mean no limit
    return None if ns <= 0 or ns >= 0x7FFFFFFF * 1_000_000_000 else ns / 1e6


def to_qos_profile(spec: QosSpec) -> QoSProfile:
    """The rclpy QoSProfile for a plain `QosSpec`."""
    return QoSProfile(
        history=_HISTORY[spec.history], depth=spec.depth if spec.history == 'keep_last' else 0,
        reliability=_RELIABILITY[spec.reliability], durability=_DURABILITY[spec.durability],
        deadline=_duration(spec.deadline_ms), lifespan=_duration(spec.lifespan_ms),
        liveliness=_LIVELINESS[spec.liveliness],
        liveliness_lease_duration=_duration(spec.liveliness_lease_ms))


def _name_of(table: dict[str, Any], value: Any) -> str:
    for name, policy in table.items():
        if int(policy) == int(value):
            return name
    # UNKNOWN: what the graph reports for a policy DDS does not share (history, depth); for the
    # compatibility rules it means the same as leaving it to the middleware
    return 'system_default'


def from_qos_profile(profile: QoSProfile) -> QosSpec:
    """The plain `QosSpec` of an rclpy QoSProfile (e.g. one from get_publishers_info_by_topic)."""
    history = _name_of(_HISTORY, profile.history)  # endpoints from the graph: UNKNOWN
    return QosSpec(
        reliability=_name_of(_RELIABILITY, profile.reliability),
        durability=_name_of(_DURABILITY, profile.durability),
        history=history, depth=max(1, int(profile.depth)) if history == 'keep_last' else int(profile.depth),
        deadline_ms=_ms(profile.deadline), lifespan_ms=_ms(profile.lifespan),
        liveliness=_name_of(_LIVELINESS, profile.liveliness),
        liveliness_lease_ms=_ms(profile.liveliness_lease_duration))


def _copy(profile: QoSProfile) -> QoSProfile:
    return QoSProfile(history=profile.history, depth=profile.depth, reliability=profile.reliability,
                      durability=profile.durability, deadline=profile.deadline, lifespan=profile.lifespan,
                      liveliness=profile.liveliness,
                      liveliness_lease_duration=profile.liveliness_lease_duration)


def qos_profile_from_short_keys(preset: str | None = None, reliability: str | None = None,
                                durability: str | None = None, depth: int | None = None,
                                history: str | None = None) -> QoSProfile:
    """ros2topic's helper with the same arguments: a preset, then the given policies on top."""
    profile = _copy(preset_profile(preset) if preset else QoSProfile(depth=10))
    if reliability:
        profile.reliability = ReliabilityPolicy.get_from_short_key(reliability)
    if durability:
        profile.durability = DurabilityPolicy.get_from_short_key(durability)
    if history:
        profile.history = HistoryPolicy.get_from_short_key(history)
    if depth is not None and depth >= 0:
        profile.depth = depth
    return profile


def _keys_help() -> str:
    return (f'presets {", ".join(PRESETS)}; profile:<{"|".join(PROFILE_KINDS)}>[@rate_hz]; '
            f'{", ".join(_RELIABILITY)}; {", ".join(_DURABILITY)}; keep_last, keep_all; automatic, '
            'manual_by_topic; depth=N; deadline=MS; lifespan=MS; lease=MS')


def _profile_key(token: str) -> QoSProfile:
    """`profile:<kind>[@rate]`: the advisor's profile for that kind of stream."""
    kind, _, rate = token.lower()[len('profile:'):].partition('@')
    default_rate = 30.0 if kind in ('sensor', 'results', 'control') else None
    try:
        spec = profile_for(kind, float(rate) if rate else default_rate)
    except ValueError as exc:
        raise ValueError(f'QoS key {token!r}: {exc}') from None
    return to_qos_profile(spec)


def _apply_number(profile: QoSProfile, token: str) -> None:
    """`depth=N` (or a bare N), `deadline=`/`lifespan=`/`lease=` milliseconds."""
    low = token.lower()
    key, _, value = low.partition('=') if '=' in low else ('depth', '', low)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f'QoS key {token!r}: {value!r} is not a number') from None
    if key == 'depth':
        if number < 0 or number != int(number):
            raise ValueError(f'QoS key {token!r}: depth must be a whole number >= 0')
        profile.depth = int(number)
    elif key in ('deadline', 'lifespan', 'lease'):
        if number <= 0:
            raise ValueError(f'QoS key {token!r}: {key} must be > 0 ms')
        setattr(profile, {'deadline': 'deadline', 'lifespan': 'lifespan',
                          'lease': 'liveliness_lease_duration'}[key], _duration(number))
    else:
        raise ValueError(f'QoS key {token!r} is unknown: use one of {_keys_help()}')


def _apply_policy(profile: QoSProfile, token: str) -> bool:
    """One policy keyword (reliability, durability, history, liveliness); False when it is none of them."""
    low = token.lower()
    for table, attribute in ((_RELIABILITY, 'reliability'), (_DURABILITY, 'durability'),
                             (_HISTORY, 'history'), (_LIVELINESS, 'liveliness')):
        if low in table:
            setattr(profile, attribute, table[low])
            return True
    return False


def parse_qos_name(name: str, depth: int | None = None) -> QoSProfile:
    """Parse a comma-separated list of short keys (see the module docstring); ValueError names the bad key."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'QoS name {name!r} is empty: use one of {_keys_help()}')
    profile = QoSProfile(depth=10)
    for raw in name.replace('+', ',').split(','):
        token = raw.strip()
        low = token.lower()
        if not token:
            continue
        if token.upper() in PRESETS:
            profile = _copy(preset_profile(token))
        elif low.startswith('profile:'):
            profile = _profile_key(token)
        elif _apply_policy(profile, token):
            pass
        elif low.isdigit() or '=' in low:
            _apply_number(profile, token)
        else:
            raise ValueError(f'QoS key {token!r} is unknown: use one of {_keys_help()}')
    if depth is not None:
        if depth < 0:
            raise ValueError(f'depth={depth} must be >= 0')
        profile.depth = depth
    if profile.history == HistoryPolicy.KEEP_LAST and profile.depth < 1:
        profile.depth = 1
    return profile


def qos_from_name(name: str, depth: int | None = None) -> QoSProfile:
    """The QoSProfile for a parameter value such as 'SENSOR_DATA', 'reliable' or 'best_effort,depth=2'.

    This is the one entry point nodes use for QoS parameters; `depth` (when given) overrides the depth.
    """
    return parse_qos_name(name, depth)


def qos_name_error(name: str) -> str:
    """'' when `name` parses, else what is wrong: for ParamSpec.check on QoS parameters."""
    try:
        parse_qos_name(name)
    except ValueError as exc:
        return str(exc)
    return ''


# ------------------------------------------------------------------------------------------- QoS events

def _event(kind: str, topic: str, info: Any, clock: Callable[[], float] | None) -> QosEvent:
    policy = ''
    if hasattr(info, 'last_policy_kind'):
        try:
            policy = qos_policy_name_from_kind(info.last_policy_kind)
        except (ValueError, KeyError):
            policy = str(info.last_policy_kind)
    total = getattr(info, 'total_count', getattr(info, 'alive_count', 0))
    change = getattr(info, 'total_count_change', getattr(info, 'alive_count_change', 0))
    return QosEvent(kind=kind, topic=topic, total_count=int(total), total_count_change=int(change),
                    policy=policy, time_s=clock() if clock else 0.0)


def subscription_event_callbacks(topic: str, on_event: Callable[[QosEvent], None],
                                 clock: Callable[[], float] | None = None) -> SubscriptionEventCallbacks:
    """Callbacks for a subscription's deadline-missed, incompatible-QoS, message-lost and liveliness events,
    each turned into a plain `QosEvent` and passed to `on_event`."""
    def make(kind: str) -> Callable[[Any], None]:
        return lambda info: on_event(_event(kind, topic, info, clock))
    return SubscriptionEventCallbacks(deadline=make('requested_deadline_missed'),
                                      incompatible_qos=make('requested_incompatible_qos'),
                                      message_lost=make('message_lost'),
                                      liveliness=make('liveliness_changed'))


def publisher_event_callbacks(topic: str, on_event: Callable[[QosEvent], None],
                              clock: Callable[[], float] | None = None) -> PublisherEventCallbacks:
    """Callbacks for a publisher's offered-deadline-missed, incompatible-QoS and liveliness-lost events."""
    def make(kind: str) -> Callable[[Any], None]:
        return lambda info: on_event(_event(kind, topic, info, clock))
    return PublisherEventCallbacks(deadline=make('offered_deadline_missed'),
                                   incompatible_qos=make('offered_incompatible_qos'),
                                   liveliness=make('liveliness_lost'))


def replaceable_publisher(node: Any, msg_type: Any, topic: str, qos: Any) -> Any:
    """A publisher that a parameter change may destroy while the node spins on a multi-threaded executor.

    rclpy gives every publisher a default incompatible-QoS event handler, a waitable of the node; an
    executor thread that is adding the node's waitables to its wait set while another thread destroys the
    publisher raises InvalidHandle out of spin (seen with a run-time output_topic change). Without event
    handlers there is nothing to race on. The incompatible-QoS warning is still logged by the subscriber's
    side, and perf_monitor / qos_tuner report incompatible pairs.
    """
    # use_default_callbacks=False: an empty PublisherEventCallbacks() still gets rclpy's default
    # incompatible-QoS (and, from Jazzy, incompatible-type) handlers, so the race stayed (seen again
    # 2026-12-08 in test_out_of_range_parameters_are_refused_through_the_service)
    return node.create_publisher(msg_type, topic, qos,
                                 event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))
