"""Watch QoS from the publishers' offered QoS: pure rules, checked against the compatibility rules."""
import itertools

import pytest

from isaac_perf.core.telemetry.watch_qos import (
    choose_watch_qos,
    large_frame_hint,
    needs_resubscribe,
    watch_depth,
)
from isaac_perf.core.tuning.qos import QosSpec, check_compatible

RELIABLE = QosSpec(reliability='reliable', depth=10)
BEST_EFFORT = QosSpec(reliability='best_effort', depth=5)


def test_reliable_publishers_get_a_reliable_watch():
    choice = choose_watch_qos([RELIABLE, RELIABLE.with_(durability='transient_local')], depth=200)
    assert choice.spec.reliability == 'reliable' and choice.spec.durability == 'volatile'
    assert choice.spec.depth == 200 and not choice.provisional and choice.publishers == 2
    assert 'all 2 publisher(s) offer reliable' in choice.reason


def test_any_best_effort_publisher_gives_best_effort():
    choice = choose_watch_qos([RELIABLE, BEST_EFFORT], depth=50)
    assert choice.spec.reliability == 'best_effort'
    assert '1 of 2 publisher(s) offer best effort' in choice.reason and 'sequence numbers' in choice.reason


def test_no_publisher_is_provisional_and_resubscribes_when_one_comes():
    waiting = choose_watch_qos([], depth=20)
    assert waiting.provisional and waiting.spec.reliability == 'best_effort'
    assert not needs_resubscribe(waiting, [])
    assert needs_resubscribe(waiting, [RELIABLE])
    settled = choose_watch_qos([RELIABLE], depth=20)
    assert not needs_resubscribe(settled, [RELIABLE, RELIABLE])
    assert needs_resubscribe(settled, [RELIABLE, BEST_EFFORT])


@pytest.mark.parametrize('n', [1, 2, 3])
def test_the_watch_matches_every_publisher_mix(n):
    """Whatever the publishers offer, the chosen watch is compatible with each of them (no lost match)."""
    kinds = [QosSpec(reliability=r, durability=d, depth=1, deadline_ms=dl, liveliness=lv,
                     liveliness_lease_ms=lease)
             for r in ('reliable', 'best_effort') for d in ('volatile', 'transient_local')
             for dl in (None, 33.0) for lv in ('automatic', 'manual_by_topic') for lease in (None, 1000.0)]
    for offered in itertools.combinations_with_replacement(kinds, n):
        choice = choose_watch_qos(list(offered), depth=10)
        for pub in offered:
            verdict = check_compatible(pub, choice.spec)
            assert verdict.level == 'ok', (pub, choice.spec, verdict.reasons)
        assert (choice.spec.reliability == 'reliable') == all(p.reliability == 'reliable' for p in offered)


def test_depth_holds_two_poll_periods():
    assert watch_depth(10) == 10
    assert watch_depth(10, expected_rate_hz=1000.0, poll_period_s=0.05) == 100
    assert watch_depth(200, expected_rate_hz=1000.0, poll_period_s=0.05) == 200
    with pytest.raises(ValueError, match='watch depth must be >= 1'):
        watch_depth(0)


def test_large_frame_hint_only_where_frames_are_lost():
    assert 'exceed Fast DDS' in large_frame_hint(921_600, 'best_effort', profile_loaded=False)
    assert large_frame_hint(921_600, 'reliable', profile_loaded=False) == ''
    assert large_frame_hint(921_600, 'best_effort', profile_loaded=True) == ''
    assert large_frame_hint(300_000, 'best_effort', profile_loaded=False) == ''
