"""QoS advice: profiles, compatibility (against rmw's own check), short keys, QoS events under real DDS."""
import itertools
import random
import time

import pytest

from isaac_perf.core.tuning.qos import (
    TRADE_OFFS,
    QosEvent,
    QosEventCounter,
    QosSpec,
    check_compatible,
    control_profile,
    notes_for,
    profile_for,
    results_profile,
    sensor_profile,
    state_profile,
)


def test_profiles_from_the_expected_rate():
    assert sensor_profile(30.0, latency_budget_ms=33.0) == QosSpec(
        reliability='best_effort', durability='volatile', history='keep_last', depth=1, deadline_ms=50.0,
        lifespan_ms=33.0, liveliness='automatic')
    assert results_profile(10.0) == QosSpec(reliability='reliable', depth=5, deadline_ms=200.0,
                                            liveliness='automatic')
    control = control_profile(50.0)
    assert (control.depth, control.deadline_ms, control.liveliness, control.liveliness_lease_ms) == (
        1, 24.0, 'automatic', 60.0)
    assert state_profile().durability == 'transient_local'
    assert profile_for('metrics').depth == 10
    # 640x480 rgb8 is over Fast DDS's 512 KiB shared-memory segment: best effort loses it (measured)
    assert sensor_profile(30.0, frame_bytes=640 * 480 * 3).reliability == 'reliable'
    assert sensor_profile(30.0, frame_bytes=320 * 240 * 3).reliability == 'best_effort'
    assert sensor_profile(30.0).describe() == ('best_effort, volatile, keep_last 1, deadline 50 ms, '
                                               'liveliness automatic')
    with pytest.raises(ValueError, match='needs rate_hz'):
        profile_for('sensor')
    with pytest.raises(ValueError, match="profile kind 'lidar' is not one of"):
        profile_for('lidar', 10.0)
    with pytest.raises(ValueError, match='rate_hz=0'):
        sensor_profile(0.0)
    with pytest.raises(ValueError, match="reliability='fast' is not one of"):
        QosSpec(reliability='fast')
    with pytest.raises(ValueError, match='deadline_ms=0'):
        QosSpec(deadline_ms=0)


def test_compatibility_reasons():
    sensor_pub = sensor_profile(30.0)
    reliable_sub = QosSpec(reliability='reliable', deadline_ms=100.0)
    verdict = check_compatible(sensor_pub, reliable_sub)
    assert verdict.level == 'error' and not verdict.compatible
    assert verdict.reasons == ['reliability: the subscription requests reliable but the publisher offers '
                               'best effort; make the subscription best_effort (sensor data) or the '
                               'publisher reliable']
    no_deadline = check_compatible(QosSpec(), QosSpec(deadline_ms=50.0))
    assert no_deadline.reasons[0].startswith('deadline: the publisher offers infinite but the subscription '
                                             'requests 50 ms')
    late = check_compatible(QosSpec(deadline_ms=100.0), QosSpec(deadline_ms=50.0))
    assert late.level == 'error'
    ok = check_compatible(state_profile(), sensor_profile(10.0).with_(deadline_ms=None))
    assert ok.level == 'ok' and len(ok.reasons) == 2
    assert ok.reasons[0].startswith('note: a reliable publisher')
    unknown = check_compatible(QosSpec(reliability='system_default', liveliness='automatic'),
                               QosSpec(reliability='reliable', liveliness='automatic'))
    assert unknown.level == 'warning' and unknown.compatible
    assert unknown.reasons == ['reliability: publisher system_default, subscription reliable; whether they '
                               'match depends on the middleware default: set reliability explicitly on both '
                               'sides']
    # rclpy's default profile leaves liveliness to the middleware on both sides: rmw warns, so do we
    assert check_compatible(QosSpec(), QosSpec()).level == 'warning'


def _all_specs():
    values = itertools.product(('reliable', 'best_effort', 'system_default', 'best_available'),
                               ('volatile', 'transient_local', 'system_default', 'best_available'),
                               (None, 10.0, 100.0),
                               ('automatic', 'manual_by_topic', 'system_default', 'best_available'),
                               (None, 100.0, 1000.0))
    return [QosSpec(reliability=r, durability=d, deadline_ms=dl, liveliness=lv, liveliness_lease_ms=ls)
            for r, d, dl, lv, ls in values]


def test_compatibility_agrees_with_rmw_on_every_policy_pairing():
    rclpy_qos = pytest.importorskip('rclpy.qos')
    from isaac_perf.ros.qos import to_qos_profile
    specs = _all_specs()  # 576 profiles; check every pairing that differs in one policy, plus a sample
    pairs = [(a, b) for a in specs[::7] for b in specs[::5]]
    pairs += random.Random(3).sample([(a, b) for a in specs[::3] for b in specs[::2]], 3000)
    levels = {rclpy_qos.QoSCompatibility.OK: 'ok', rclpy_qos.QoSCompatibility.WARNING: 'warning',
              rclpy_qos.QoSCompatibility.ERROR: 'error'}
    seen = set()
    for pub, sub in pairs:
        theirs, why = rclpy_qos.qos_check_compatible(to_qos_profile(pub), to_qos_profile(sub))
        mine = check_compatible(pub, sub)
        assert mine.level == levels[theirs], (pub, sub, mine.reasons, why)
        seen.add(mine.level)
    assert seen == {'ok', 'warning', 'error'}


def test_trade_off_notes_cite_measurements():
    assert all(t.measurement for t in TRADE_OFFS)
    deep_reliable = QosSpec(reliability='reliable', depth=100)
    notes = notes_for(deep_reliable, 'sensor')
    assert notes[0].startswith('reliable + deep queues stall a saturated pipeline')
    assert notes[1].startswith('deadline from the expected rate')
    big_best_effort = sensor_profile(30.0)
    assert notes_for(big_best_effort, 'sensor', frame_bytes=1920 * 1080 * 3) == [
        f'{TRADE_OFFS[1].title}: {TRADE_OFFS[1].advice}']
    assert notes_for(big_best_effort, 'sensor', frame_bytes=1000) == []


def test_event_counter_deltas():
    counter = QosEventCounter()
    counter.record(QosEvent('message_lost', '/a', total_count=3, total_count_change=3))
    counter.record(QosEvent('message_lost', '/b', total_count=1, total_count_change=1))
    counter.record(QosEvent('requested_deadline_missed', '/a', total_count=2, total_count_change=2))
    assert counter.total('message_lost') == 4 and counter.total('message_lost', '/a') == 3
    assert counter.take_new('message_lost') == 4
    assert counter.take_new('message_lost') == 0
    counter.record(QosEvent('message_lost', '/a', total_count=5, total_count_change=2))
    assert counter.take_new('message_lost') == 2


# ------------------------------------------------------------------------------------------ rclpy side

def test_short_keys_and_presets():
    pytest.importorskip('rclpy')
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    from isaac_perf.ros.qos import (
        from_qos_profile,
        qos_from_name,
        qos_name_error,
        qos_profile_from_short_keys,
        to_qos_profile,
    )
    sensor = qos_from_name('SENSOR_DATA')
    assert (sensor.reliability, sensor.depth) == (ReliabilityPolicy.BEST_EFFORT, 5)
    assert qos_from_name('sensor_data', depth=1).depth == 1
    default = qos_from_name('DEFAULT')
    assert (default.reliability, default.durability, default.depth) == (
        ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE, 10)
    latched = qos_from_name('reliable, transient_local, depth=1')
    assert (latched.durability, latched.depth) == (DurabilityPolicy.TRANSIENT_LOCAL, 1)
    best = qos_from_name('best_effort,2,deadline=50')
    assert from_qos_profile(best) == QosSpec(reliability='best_effort', depth=2, deadline_ms=50.0)
    assert from_qos_profile(qos_from_name('profile:sensor@20')) == sensor_profile(20.0)
    assert qos_from_name('keep_all').history == HistoryPolicy.KEEP_ALL
    assert qos_profile_from_short_keys('sensor_data', reliability='reliable', depth=3).depth == 3
    assert qos_profile_from_short_keys('sensor_data', reliability='reliable').reliability == \
        ReliabilityPolicy.RELIABLE
    assert qos_name_error('SENSOR_DATA') == ''
    assert qos_name_error('fastest').startswith("QoS key 'fastest' is unknown: use one of presets "
                                                'SENSOR_DATA')
    assert 'depth must be a whole number' in qos_name_error('depth=1.5')
    assert qos_name_error('').startswith("QoS name '' is empty")
    assert 'needs rate_hz' not in qos_name_error('profile:sensor')  # 30 Hz assumed when no rate is given
    for spec in (sensor_profile(30.0, latency_budget_ms=33.0), control_profile(100.0), state_profile()):
        assert from_qos_profile(to_qos_profile(spec)) == spec


def test_qos_events_under_real_dds(ros_context, spin):
    rclpy = pytest.importorskip('rclpy')
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from isaac_perf.ros.qos import (
        publisher_event_callbacks,
        qos_from_name,
        subscription_event_callbacks,
    )
    events = []
    node = rclpy.create_node('qos_event_probe', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        # deadline: the publisher promises a message every 50 ms but sends one only every 300 ms
        topic = '/probe_deadline'
        pub = node.create_publisher(String, topic, qos_from_name('reliable,deadline=50'),
                                    event_callbacks=publisher_event_callbacks(topic, events.append))
        node.create_subscription(String, topic, lambda m: None, qos_from_name('reliable,deadline=60'),
                                 event_callbacks=subscription_event_callbacks(topic, events.append,
                                                                              time.monotonic))
        node.create_timer(0.3, lambda: pub.publish(String(data='late')))
        # incompatible: a best-effort publisher and a reliable subscription never talk
        node.create_publisher(String, '/probe_incompatible', qos_from_name('best_effort'),
                              event_callbacks=publisher_event_callbacks('/probe_incompatible', events.append))
        node.create_subscription(String, '/probe_incompatible', lambda m: None, qos_from_name('reliable'),
                                 event_callbacks=subscription_event_callbacks('/probe_incompatible',
                                                                              events.append))
        kinds = lambda: {(e.kind, e.topic) for e in events}  # noqa: E731
        wanted = {('requested_deadline_missed', topic), ('offered_deadline_missed', topic),
                  ('requested_incompatible_qos', '/probe_incompatible'),
                  ('offered_incompatible_qos', '/probe_incompatible')}
        assert spin(executor, lambda: wanted <= kinds(), 5.0), kinds()
        incompatible = next(e for e in events if e.kind == 'requested_incompatible_qos')
        assert incompatible.policy == 'RELIABILITY' and incompatible.total_count >= 1
        missed = [e for e in events if e.kind == 'requested_deadline_missed']
        assert missed[0].total_count_change >= 1 and missed[0].time_s > 0
    finally:
        executor.shutdown()
        node.destroy_node()
