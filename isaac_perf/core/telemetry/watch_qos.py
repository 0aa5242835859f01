"""Which QoS the monitor watches a topic with, from what its publishers offer (pure; the graph feeds it).

The watch must see every message the publishers send to anyone, and must never slow a publisher down:

- reliability: reliable when every publisher offers reliable. Between processes Fast DDS drops most
  best-effort frames larger than its 512 KiB shared-memory segment (measured: 7 of 361 640x480 rgb8 frames
  arrived) while a reliable reader gets them all, so a best-effort watch of a reliable camera reads a third
  of its true rate. A reliable reader cannot stall a keep-last publisher (the writer overwrites its history
  instead of waiting), and the monitor drains its queue every poll period. When any publisher offers best
  effort, best effort (a reliable reader would not match it); what the transport then loses is counted
  from the publishers' sequence numbers, not hidden.
- durability: volatile (matches volatile and transient-local publishers; replayed history would count as
  a burst of messages).
- history keep-last, `depth` at least two poll periods of the expected rate, so one late drain loses
  nothing; deadline, lifespan and lease infinite and liveliness automatic, which match any publisher.
- no publisher yet: best effort (matches whatever comes), marked provisional; `needs_resubscribe` says
  when the offered QoS has changed enough that the watch must be recreated.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from isaac_perf.core.tuning.qos import FASTDDS_SHM_SEGMENT_BYTES, QosSpec


@dataclass(frozen=True)
class WatchQos:
    """The chosen watch QoS, why, and whether it was chosen without seeing any publisher."""
    spec: QosSpec
    reason: str
    provisional: bool = False
    publishers: int = 0


def watch_depth(minimum: int, expected_rate_hz: float = 0.0, poll_period_s: float = 0.0) -> int:
    """Keep-last depth: `minimum`, raised to hold two poll periods of messages at the expected rate."""
    if minimum < 1:
        raise ValueError(f'watch depth must be >= 1, got {minimum}')
    if expected_rate_hz > 0 and poll_period_s > 0:
        return max(minimum, math.ceil(2 * expected_rate_hz * poll_period_s))
    return minimum


def choose_watch_qos(offered: Sequence[QosSpec], depth: int) -> WatchQos:
    """The watch QoS for a topic whose publishers offer `offered` (one QosSpec per publisher)."""
    def spec(reliability: str) -> QosSpec:
        return QosSpec(reliability=reliability, durability='volatile', history='keep_last', depth=depth,
                       liveliness='automatic')
    if not offered:
        return WatchQos(spec('best_effort'), 'no publisher yet: best effort matches any publisher; chosen '
                        'again when one appears', provisional=True)
    best_effort = sum(1 for o in offered if o.reliability == 'best_effort')
    unknown = sum(1 for o in offered if o.reliability not in ('reliable', 'best_effort'))
    n = len(offered)
    if best_effort or unknown:
        what = (f'{best_effort} of {n} publisher(s) offer best effort' if best_effort else
                f'{unknown} of {n} publisher(s) leave reliability to the middleware')
        return WatchQos(spec('best_effort'), f'{what}: watching best effort (a reliable watch would not '
                        'match them); frames lost in transport are counted from sequence numbers',
                        publishers=n)
    return WatchQos(spec('reliable'), f'all {n} publisher(s) offer reliable: watching reliable, so large '
                    'frames are not lost between processes as best effort loses them', publishers=n)


def needs_resubscribe(current: WatchQos, offered: Sequence[QosSpec]) -> bool:
    """True when the watch chosen as `current` should be recreated for the publishers now offering
    `offered`: it was provisional and publishers came, or the reliability it would choose changed."""
    if not offered:
        return False
    if current.provisional:
        return True
    return choose_watch_qos(offered, current.spec.depth).spec.reliability != current.spec.reliability


def large_frame_hint(mean_size_bytes: float, reliability: str, profile_loaded: bool) -> str:
    """'' or one line: best-effort frames above Fast DDS's shared-memory segment are mostly lost between
    processes unless a large-frame profile (FASTDDS_DEFAULT_PROFILES_FILE) raises the segment size."""
    if profile_loaded or reliability != 'best_effort' or not mean_size_bytes > FASTDDS_SHM_SEGMENT_BYTES:
        return ''
    return (f'best-effort messages of {mean_size_bytes / 1024:.0f} KiB exceed Fast DDS\'s default '
            f'{FASTDDS_SHM_SEGMENT_BYTES // 1024} KiB shared-memory segment: most are lost between '
            'processes; publish reliable, or start publishers and subscribers with '
            'FASTDDS_DEFAULT_PROFILES_FILE pointing at a profile with a larger segment (config/ ships '
            'one for large frames)')
