"""greenwave definitions, publisher rate from sequence numbers and drops, exact on scripted schedules.

Expected values come from a second, deliberately naive derivation (`reference`, plain lists over the whole
history, sliced at the end) of greenwave_monitor's definitions, and from numbers worked out by hand.
"""
import math

import numpy as np
import pytest

from isaac_perf.core.telemetry.greenwave import (
    GreenwaveStream,
    expected_dt_us,
    greenwave_values,
    tolerance_us,
    transport_values,
)

S = 1_000_000_000
MS = 1_000_000


def reference(times_ns, hz, tol_percent, window=300):
    """greenwave's numbers for one time series, from the list of its times (ns)."""
    us = [t // 1000 for t in times_ns]
    dts = [b - a for a, b in zip(us[:-1], us[1:], strict=True)]
    last = dts[-window:]
    out = {'rate': 1e6 / (sum(last) / len(last)) if last else math.nan}
    if hz > 0 and dts:
        exp = int(1e6 / hz)
        tol = int(1e6 / hz * tol_percent / 100)
        jit = [abs(d - exp) for d in dts]
        out.update(mean=sum(jit[-window:]) // len(jit[-window:]), max=max(jit),
                   outliers=sum(1 for j in jit if j > tol))
    return out


def camera_schedule(n, hz=30.0, lost=(), t0=1_700_000_000 * S):
    """A publisher at `hz` stamping at publish time, seq 1..n; `lost` seqs never arrive. Latency varies
    deterministically between 4 and 10 ms, so arrival intervals jitter while stamps are exact."""
    period = round(S / hz)
    rows = []
    for k in range(n):
        seq = k + 1
        stamp = t0 + k * period
        arrival = stamp + 4 * MS + (k * 7919 % 13) * 500_000
        if seq not in lost:
            rows.append((arrival, stamp, seq))
    return rows


def feed(stream, rows, source=b'pub-a'):
    for arrival, stamp, seq in rows:
        stream.record(arrival, stamp, seq, source)


def test_greenwave_definitions_match_an_independent_derivation():
    lost = {50, 51, 52, 200} | set(range(400, 460, 3))
    rows = camera_schedule(600, lost=lost)
    stream = GreenwaveStream(expected_rate_hz=30.0, tolerance_percent=5.0, window_s=5.0)
    feed(stream, rows)
    now = rows[-1][0]
    snap = stream.snapshot(now)
    node = reference([r[0] for r in rows], 30.0, 5.0)
    msg = reference([r[1] for r in rows], 30.0, 5.0)
    assert snap.frame_rate_node_hz == pytest.approx(node['rate'], rel=1e-12)
    assert snap.frame_rate_msg_hz == pytest.approx(msg['rate'], rel=1e-12)
    assert (snap.mean_abs_jitter_node_us, snap.max_abs_jitter_node_us) == (node['mean'], node['max'])
    assert (snap.mean_abs_jitter_msg_us, snap.max_abs_jitter_msg_us) == (msg['mean'], msg['max'])
    assert snap.num_jitter_outliers_node == node['outliers']
    assert snap.num_jitter_outliers_msg == msg['outliers']
    # greenwave's total_dropped_frames is its message-time outlier count: a burst of 3 lost frames is one
    # outlier there, so it is not the number of lost frames, which the sequence numbers give exactly.
    assert snap.total_dropped_frames == msg['outliers'] == 1 + 1 + 20
    assert snap.drops_sequence == len(lost) and snap.drop_source == 'sequence' and snap.drops == len(lost)
    assert snap.current_delay_ms == (rows[-1][0] // 1000 - rows[-1][1] // 1000) / 1000
    assert snap.count == len(rows) and snap.num_non_increasing_msg == 0


def test_publisher_rate_and_transport_loss_from_sequence_numbers():
    period = round(S / 30.0)
    # Best effort over a lossy transport: two of every three frames lost, as Fast DDS defaults do to a
    # 640x480 best-effort topic between processes.
    lost = {s for s in range(1, 301) if s % 3 != 1}
    rows = camera_schedule(300, lost=lost)
    stream = GreenwaveStream(expected_rate_hz=30.0, window_s=5.0)
    feed(stream, rows)
    now = rows[-1][0]
    snap = stream.snapshot(now)
    in_window = [r for r in rows if r[0] > now - 5 * S]
    sent = in_window[-1][2] - in_window[0][2]
    span = in_window[-1][1] - in_window[0][1]          # stamps: exact publish times
    assert snap.publisher_rate_hz == sent * S / span == pytest.approx(S / period)
    assert snap.received_rate_hz == (len(in_window) - 1) * S / (in_window[-1][0] - in_window[0][0])
    assert snap.received_rate_hz == pytest.approx(10.0, rel=0.01)
    assert snap.transport_loss_fraction == (sent - (len(in_window) - 1)) / sent
    assert snap.transport_loss_fraction == pytest.approx(2 / 3, abs=0.001)
    assert snap.publishers_seen == 1 and snap.window_count == len(in_window)
    values = transport_values(snap)
    assert values['publisher_rate_hz'] == f'{snap.publisher_rate_hz:.3f}'
    assert values['drops_source'] == 'sequence'


def test_two_publishers_rates_add_and_sequences_count_apart():
    stream = GreenwaveStream(window_s=10.0)
    # publisher a at 10 Hz (seq 1..), publisher b at 5 Hz (seq 101..) without stamps; b loses seq 103
    events = [(k * 100 * MS, None, k + 1, 'a') for k in range(20)]
    events += [(k * 200 * MS + 1, None, 101 + k, 'b') for k in range(10) if k != 2]
    for arrival, stamp, seq, src in sorted(events, key=lambda e: e[0]):
        stream.record(arrival, stamp, seq, src)
    snap = stream.snapshot(2 * S)
    # a: 19 seq over 1.9 s = 10 Hz; b: seq 101..110 (9 steps) over 1.8 s of arrivals = 5 Hz
    assert snap.publisher_rate_hz == pytest.approx(15.0, rel=1e-12)
    assert snap.drops_sequence == 1 and snap.publishers_seen == 2
    assert snap.transport_loss_fraction == pytest.approx(1 / (19 + 9), rel=1e-12)


def test_hand_worked_jitter_outliers_and_rate():
    stream = GreenwaveStream(expected_rate_hz=10.0, tolerance_percent=10.0)
    assert (expected_dt_us(10.0), tolerance_us(10.0, 10.0)) == (100_000, 10_000)
    # node-time intervals: 100, 105, 195, 100 ms -> abs jitter 0, 5000, 95000, 0 us; one outlier
    for t_ms in (0, 100, 205, 400, 500):
        stream.record(t_ms * MS)
    snap = stream.snapshot(500 * MS)
    assert snap.frame_rate_node_hz == 1e6 / (500_000 / 4) == 8.0
    assert snap.mean_abs_jitter_node_us == (0 + 5000 + 95000 + 0) // 4 == 25000
    assert snap.max_abs_jitter_node_us == 95000 and snap.num_jitter_outliers_node == 1
    # No header, no sequence numbers: drops from arrival gaps, the 195 ms gap (2 periods) is one drop.
    assert snap.drop_source == 'arrival_gap' and snap.drops_stamp_gap == 1 and snap.drops == 1
    assert math.isnan(snap.frame_rate_msg_hz) and math.isnan(snap.current_delay_ms)
    assert math.isnan(snap.publisher_rate_hz) and snap.total_dropped_frames == 0
    values = greenwave_values(snap)
    assert values['frame_rate_node'] == '8.000' and values['frame_rate_msg'] == 'N/A'
    assert values['mean_abs_jitter_node'] == '25000' and values['max_abs_jitter_msg'] == 'N/A'
    assert values['expected_frequency'] == '10.000' and values['tolerance'] == '10.000'


def test_greenwave_window_keeps_the_last_300_intervals_but_max_and_outliers_for_ever():
    stream = GreenwaveStream(expected_rate_hz=100.0, tolerance_percent=1.0)
    times = [0]
    for k in range(1, 401):
        times.append(times[-1] + (20 * MS if k == 10 else 10 * MS))   # one 20 ms interval, early on
    for t in times:
        stream.record(t)
    snap = stream.snapshot(times[-1])
    assert snap.frame_rate_node_hz == 100.0          # the slow interval left the 300-interval window
    assert snap.mean_abs_jitter_node_us == 0
    assert snap.max_abs_jitter_node_us == 10_000 and snap.num_jitter_outliers_node == 1
    assert snap.drops_stamp_gap == 1


def test_stamp_gap_drops_with_jump_guard():
    stream = GreenwaveStream(expected_rate_hz=10.0, max_gap_s=10.0)
    stamps_ms = [0, 100, 400, 500, 300, 400, 60_000, 60_100]
    for k, t in enumerate(stamps_ms):
        stream.record(S + k * MS, stamp_ns=t * MS)
    snap = stream.snapshot(2 * S)
    # 100 -> 400 is 3 periods: 2 lost; 500 -> 300 goes back and 400 -> 60000 is over 10 s: jumps, no drops
    assert snap.drop_source == 'stamp_gap' and snap.drops_stamp_gap == 2 and snap.stamp_jumps == 2
    assert snap.num_non_increasing_msg == 1


def test_sequence_jump_guard_and_message_lost_events():
    stream = GreenwaveStream(max_sequence_gap=1000)
    for t, seq in enumerate((1, 2, 5, 6, 2, 3, 50_000, 50_001)):
        stream.record(t * MS, pub_seq=seq, source='p')
    stream.note_message_lost(3)
    stream.note_message_lost(2)
    snap = stream.snapshot(10 * MS)
    # 2 -> 5: two lost; 6 -> 2 (restart) and 3 -> 50000 (beyond the guard) are resets, not drops
    assert snap.drops_sequence == 2 and snap.sequence_resets == 2 and snap.messages_lost == 5
    assert snap.drops == 2


def test_delay_is_greenwaves_and_window_forgets():
    t0 = 1_700_000_000 * S
    stream = GreenwaveStream(window_s=1.0)
    stream.record(t0, stamp_ns=t0 + 5 * MS)                   # stamp after arrival: skew -> N/A
    assert math.isnan(stream.snapshot(t0).current_delay_ms)
    stream.record(t0 + S, stamp_ns=t0 + S - 2_500_999)
    assert stream.snapshot(t0 + S).current_delay_ms == 2.501  # microsecond truncation, as greenwave
    stream.record(t0 + S + 100 * MS, stamp_ns=0)               # unset stamp: over a year -> N/A
    snap = stream.snapshot(t0 + 3 * S)
    assert math.isnan(snap.current_delay_ms) and snap.window_count == 0 and snap.age_s == pytest.approx(1.9)
    assert math.isnan(snap.received_rate_hz)


def test_bad_configuration_is_refused_with_the_reason():
    with pytest.raises(ValueError, match='expected rate must be >= 0'):
        GreenwaveStream(expected_rate_hz=-1.0)
    with pytest.raises(ValueError, match='window_size must be >= 1'):
        GreenwaveStream(window_size=0)
    with pytest.raises(ValueError, match='tolerance_percent'):
        GreenwaveStream(tolerance_percent=-5.0)


def test_record_is_bounded():
    stream = GreenwaveStream(capacity=64, window_s=100.0)
    for k in range(1000):
        stream.record(k * MS, pub_seq=k + 1, source=k % 100)   # more publishers than are tracked
    snap = stream.snapshot(1000 * MS)
    assert snap.window_count == 64 and snap.count == 1000
    assert np.isfinite(snap.frame_rate_node_hz)


def test_publisher_rate_prefers_the_middleware_write_times():
    """Arrivals bunch up (a slow reader drains in bursts); write times keep the publisher's own clock."""
    stream = GreenwaveStream(window_s=10.0)
    # 20 Hz publisher, every other message lost, arrivals in bursts of two 100 ms apart from the writes
    for k in range(0, 40, 2):
        written = S + k * 50 * MS
        stream.record(written + (100 * MS if k % 4 else 0), pub_seq=k + 1, source='p', source_ns=written)
    snap = stream.snapshot(4 * S)
    assert snap.publisher_rate_hz == pytest.approx(20.0, rel=1e-12)
    assert snap.transport_loss_fraction == pytest.approx(19 / 38, rel=1e-12)
