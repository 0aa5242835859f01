"""Alert rules: levels both directions, hysteresis, minimum duration, one transition per change."""
import math

import pytest

from isaac_perf.core.telemetry.alerts import AlertBook, AlertRule, AlertState, Direction, Level

S = 1_000_000_000


def feed(state, points):
    """(value, t_seconds) pairs -> list of (t, new level) transitions."""
    out = []
    for value, t in points:
        tr = state.update(value, int(t * S))
        if tr is not None:
            out.append((t, tr.new))
    return out


def test_above_levels_with_hysteresis():
    rule = AlertRule('temp', Direction.ABOVE, warn=80.0, error=90.0, hysteresis=5.0)
    state = AlertState(rule, 'gpu0')
    got = feed(state, [(70, 0), (80, 1), (85, 2), (90, 3), (87, 4), (84, 5), (76, 6), (74, 7)])
    # 87 stays ERROR (ERROR is left below 90 - 5 = 85), 84 drops to WARN, 76 stays WARN (WARN is left
    # below 80 - 5 = 75), 74 is OK.
    assert got == [(1, Level.WARN), (3, Level.ERROR), (5, Level.WARN), (7, Level.OK)]


def test_below_direction_for_fps():
    rule = AlertRule('fps', Direction.BELOW, warn=25.0, error=15.0, hysteresis=1.0)
    state = AlertState(rule, '/camera')
    got = feed(state, [(30, 0), (25, 1), (25.5, 2), (26.5, 3), (10, 4), (15.5, 5), (16.5, 6)])
    assert got == [(1, Level.WARN), (3, Level.OK), (4, Level.ERROR), (6, Level.WARN)]


def test_min_duration_delays_and_filters_short_spikes():
    rule = AlertRule('cpu', Direction.ABOVE, warn=50.0, min_duration_s=2.0)
    state = AlertState(rule)
    got = feed(state, [(60, 0), (60, 1), (40, 1.5),          # spike shorter than 2 s: ignored
                       (60, 2), (60, 3), (60, 4),            # held 2 s: WARN at t=4
                       (40, 5), (40, 7)])                     # OK after 2 s below
    assert got == [(4, Level.WARN), (7, Level.OK)]


def test_nan_changes_nothing_and_transition_reported_once():
    rule = AlertRule('lat', Direction.ABOVE, warn=10.0)
    state = AlertState(rule, '/t')
    tr = state.update(20.0, 0)
    assert tr is not None and tr.old == Level.OK and tr.new == Level.WARN
    assert '20' in tr.message and 'WARN' in tr.message and '/t' in tr.message
    assert state.update(30.0, 1) is None                  # still WARN: no second report
    assert state.update(math.nan, 2) is None and state.level == Level.WARN


def test_only_error_threshold_and_threshold_order_checked():
    state = AlertState(AlertRule('mem', Direction.ABOVE, error=0.95))
    assert state.update(0.9, 0) is None
    assert state.update(0.96, 1).new == Level.ERROR
    with pytest.raises(ValueError, match='error threshold'):
        AlertRule('x', Direction.ABOVE, warn=90, error=80)
    with pytest.raises(ValueError, match='error threshold'):
        AlertRule('x', Direction.BELOW, warn=10, error=20)


def test_book_worst_level_counts_and_rule_change_resets():
    book = AlertBook()
    util = AlertRule('util', Direction.ABOVE, warn=90.0)
    temp = AlertRule('temp', Direction.ABOVE, warn=80.0, error=90.0)
    book.update(util, 'gpu0', 95.0, 0)
    book.update(temp, 'gpu0', 91.0, 0)
    book.update(util, 'gpu1', 10.0, 0)
    assert book.level('gpu0') == Level.ERROR and book.level('gpu1') == Level.OK
    assert [s.rule.name for s in book.active('gpu0')] == ['temp', 'util']
    assert book.counts() == {Level.WARN: 1, Level.ERROR: 1}
    looser = AlertRule('util', Direction.ABOVE, warn=99.0)
    assert book.update(looser, 'gpu0', 95.0, 1) is None        # new limits: starts again from OK
    assert book.level('gpu0') == Level.ERROR and len(book.active('gpu0')) == 1
    book.forget('gpu0')
    assert book.level('gpu0') == Level.OK


def test_messages_never_contradict_their_value():
    """The issue's "9.596 Hz below WARN threshold 9 Hz": a held level must say why it is held."""
    rule = AlertRule('rate_hz', Direction.BELOW, warn=9.0, error=5.0, hysteresis=1.5, min_duration_s=2.0,
                     unit=' Hz')
    state = AlertState(rule, '/camera')
    tr = None
    for value, t in ((8.2, 0), (8.2, 2)):
        tr = state.update(value, t * S) or tr
    assert tr.message == ('/camera rate_hz: 8.2 Hz below WARN threshold 9 Hz; leaves WARN above 10.5 Hz '
                          '(hysteresis 1.5 Hz)')
    state.update(9.596, 3 * S)
    assert state.level == Level.WARN
    assert state.describe() == ('/camera rate_hz: 9.596 Hz, WARN held by hysteresis: it went below 9 Hz and '
                                'leaves WARN above 10.5 Hz (hysteresis 1.5 Hz)')
    state.update(11.0, 4 * S)                                 # past the release, min duration pending
    assert state.describe() == ('/camera rate_hz: 11 Hz, back above WARN release 10.5 Hz; WARN clears once '
                                'that holds 2 s')
    assert state.update(11.0, 6 * S).message == ('/camera rate_hz: 11 Hz back within limits (WARN below 9 '
                                                 'Hz, ERROR below 5 Hz)')
    no_hysteresis = AlertState(AlertRule('lat', Direction.ABOVE, warn=10.0, unit=' ms'), '/t')
    assert no_hysteresis.update(12.0, 0).message == ('/t lat: 12 ms above WARN threshold 10 ms; leaves WARN '
                                                     'below 10 ms')
