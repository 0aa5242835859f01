"""The dynamic batching policy with exact timings (time passed in): triggers, fairness, overload, ordering,
preferred sizes, live parameter changes and mixed resolutions."""
import random
import threading

import numpy as np
import pytest

from isaac_perf.core.batching.batcher import BatchPolicy, DynamicBatcher, ResultOrderer

MS = 1_000_000


def batcher(**kw) -> DynamicBatcher:
    policy = dict(max_batch_size=4, max_queue_delay_ns=10 * MS, queue_depth=8)
    policy.update(kw)
    return DynamicBatcher(BatchPolicy(**policy))


def ids(batch):
    return [(f.camera, f.seq) for f in batch.frames]


# ------------------------------------------------------------------------------------------ triggers


def test_full_batch_leaves_the_moment_it_fills():
    b = batcher()
    for i in range(3):
        b.push('cam', i, stamp_ns=i, now_ns=i * MS)
    assert b.poll(3 * MS - 1) is None
    b.push('cam', 3, stamp_ns=3, now_ns=3 * MS)
    batch = b.poll(3 * MS)
    assert batch.reason == 'full' and batch.size == 4 and batch.dispatch_ns == 3 * MS
    assert [f.queue_ns for f in batch.frames] == [3 * MS, 2 * MS, 1 * MS, 0]
    assert [f.data for f in batch.frames] == [0, 1, 2, 3]
    assert b.poll(100 * MS) is None and b.pending() == 0


def test_partial_batch_leaves_when_the_oldest_frame_has_waited_max_queue_delay():
    b = batcher()
    b.push('cam', 'a', 0, now_ns=0)
    b.push('cam', 'b', 0, now_ns=4 * MS)
    assert b.next_deadline_ns() == 10 * MS
    assert b.poll(10 * MS - 1) is None
    batch = b.poll(10 * MS)
    assert batch.reason == 'delay' and ids(batch) == [('cam', 0), ('cam', 1)]
    assert [f.queue_ns for f in batch.frames] == [10 * MS, 6 * MS]
    assert b.next_deadline_ns() is None


def test_zero_delay_sends_whatever_is_queued_at_each_poll():
    b = batcher(max_queue_delay_ns=0)
    b.push('a', 1, 0, now_ns=5)
    b.push('b', 2, 0, now_ns=6)
    batch = b.poll(6)
    assert batch.size == 2 and batch.reason == 'delay'
    assert b.poll(7) is None


def test_a_backlog_larger_than_max_batch_size_is_split_into_full_batches_then_a_remainder():
    b = batcher(max_batch_size=4, queue_depth=16)
    for i in range(10):
        b.push('cam', i, 0, now_ns=0)
    batches = b.poll_all(0)
    assert [x.size for x in batches] == [4, 4]
    assert [x.reason for x in batches] == ['full', 'full']
    assert b.next_deadline_ns() == 10 * MS
    last = b.poll(10 * MS)
    assert last.size == 2 and [f.data for f in last.frames] == [8, 9]


def test_preferred_batch_sizes_send_the_largest_one_that_can_be_formed_at_once():
    b = batcher(max_batch_size=8, preferred_batch_sizes=(2, 4), max_queue_delay_ns=100 * MS)
    for i in range(3):
        b.push('cam', i, 0, now_ns=i)
    batch = b.poll(2)
    assert batch.reason == 'preferred' and batch.size == 2 and [f.data for f in batch.frames] == [0, 1]
    assert b.poll(2) is None  # one frame left: below every preferred size, waits for the delay
    for i in range(3, 6):
        b.push('cam', i, 0, now_ns=i)
    batch = b.poll(5)
    assert batch.size == 4 and [f.data for f in batch.frames] == [2, 3, 4, 5]
    # The delay still applies to a remainder that no preferred size fits.
    b.push('cam', 6, 0, now_ns=10)
    assert b.poll(100 * MS + 9) is None
    assert b.poll(100 * MS + 10).size == 1


def test_preferred_sizes_above_max_batch_size_are_ignored():
    b = batcher(max_batch_size=4, preferred_batch_sizes=(8,))
    for i in range(3):
        b.push('cam', i, 0, now_ns=0)
    assert b.poll(0) is None
    assert b.policy.usable_preferred == ()


# ------------------------------------------------------------------------------------------ fairness


def test_batches_are_composed_round_robin_across_cameras():
    b = batcher(max_batch_size=4, max_queue_delay_ns=0)
    for i in range(6):
        b.push('fast', i, 0, now_ns=i)
    b.push('slow1', 'x', 0, now_ns=10)
    b.push('slow2', 'y', 0, now_ns=11)
    first = b.poll(20)
    # One frame from each camera in turn, oldest first per camera: the fast camera cannot fill the batch.
    assert ids(first) == [('fast', 0), ('slow1', 0), ('slow2', 0), ('fast', 1)]
    second = b.poll(20)
    assert ids(second) == [('fast', 2), ('fast', 3), ('fast', 4), ('fast', 5)]


def test_with_more_cameras_than_max_batch_size_the_left_out_cameras_lead_the_next_batch():
    b = batcher(max_batch_size=2, max_queue_delay_ns=0)
    for t in range(2):
        for c in range(5):
            b.push(f'c{c}', t, 0, now_ns=t * 10 + c)
    got = [[f.camera for f in x.frames] for x in b.poll_all(100)]
    assert got == [['c0', 'c1'], ['c2', 'c3'], ['c4', 'c0'], ['c1', 'c2'], ['c3', 'c4']]


# ------------------------------------------------------------------------------------------ overload


def test_a_full_camera_queue_drops_its_oldest_frame_and_counts_it_per_camera():
    b = batcher(queue_depth=3, max_batch_size=8, max_queue_delay_ns=50 * MS)
    dropped = []
    for i in range(5):
        _, d = b.push('busy', i, stamp_ns=i, now_ns=i * MS)
        dropped += d
    b.push('calm', 'c', 0, now_ns=5 * MS)
    assert [(f.camera, f.seq, f.data) for f in dropped] == [('busy', 0, 0), ('busy', 1, 1)]
    s = b.stats()
    assert (s.cameras['busy'].received, s.cameras['busy'].dropped, s.cameras['busy'].queued) == (5, 2, 3)
    assert (s.cameras['calm'].received, s.cameras['calm'].dropped) == (1, 0)
    assert s.dropped == 2
    batch = b.poll(52 * MS)  # oldest queued frame (seq 2) arrived at 2 ms
    assert ids(batch) == [('busy', 2), ('calm', 0), ('busy', 3), ('busy', 4)]


def test_overload_keeps_queue_wait_bounded_by_depth():
    """A burst of 100 frames into a depth-2 queue: only the 2 freshest remain, so no frame waits long."""
    b = batcher(queue_depth=2, max_batch_size=8, max_queue_delay_ns=1 * MS)
    for i in range(100):
        b.push('cam', i, 0, now_ns=i * 1000)
    batch = b.poll(99_000 + MS)
    assert [f.data for f in batch.frames] == [98, 99]
    assert b.stats().cameras['cam'].dropped == 98


# ------------------------------------------------------------------------------------------ ordering


def test_result_orderer_releases_each_camera_in_sequence_and_skips_dropped_frames():
    o = ResultOrderer()
    for seq in range(4):
        o.expect('a', seq)
    o.expect('b', 0)
    o.complete('a', 2, 'a2')
    o.complete('b', 0, 'b0')
    assert [(r.camera, r.seq) for r in o.ready()] == [('b', 0)]  # a0 still pending
    o.skip('a', 0)  # dropped by the overload policy: never waited for
    o.complete('a', 1, 'a1')
    assert [(r.camera, r.seq, r.result) for r in o.ready()] == [('a', 1, 'a1'), ('a', 2, 'a2')]
    o.complete('a', 3, 'a3')
    assert [r.result for r in o.ready()] == ['a3']
    assert o.waiting() == 0 and o.out_of_order == 1
    with pytest.raises(ValueError, match='not awaiting'):
        o.complete('a', 3, 'again')
    with pytest.raises(ValueError, match='must increase'):
        o.expect('a', 1)


# ----------------------------------------------------------------------------------- live changes


def test_parameter_changes_mid_stream_lose_and_duplicate_nothing():
    rng = random.Random(7)
    b = batcher(max_batch_size=4, max_queue_delay_ns=3 * MS, queue_depth=1000)
    sent = {}
    seen = []
    t = 0
    for step in range(3000):
        t += rng.randint(0, 400_000)
        cam = f'cam{rng.randrange(4)}'
        frame, dropped = b.push(cam, step, 0, now_ns=t)
        assert dropped == []
        sent[(cam, frame.seq)] = step
        if step % 250 == 0:
            b.configure(max_batch_size=rng.choice([1, 2, 3, 8, 16]),
                        max_queue_delay_ns=rng.choice([0, 1 * MS, 5 * MS]),
                        preferred_batch_sizes=rng.choice([(), (2,), (4, 8)]))
        for batch in b.poll_all(t):
            assert batch.size <= b.policy.max_batch_size
            seen += [(f.camera, f.seq) for f in batch.frames]
    for batch in b.flush(t):
        seen += [(f.camera, f.seq) for f in batch.frames]
    assert len(seen) == len(set(seen)) == len(sent)  # every frame exactly once
    assert set(seen) == set(sent)
    for cam in {c for c, _ in seen}:  # and per camera in capture order
        seqs = [s for c, s in seen if c == cam]
        assert seqs == sorted(seqs)


def test_shrinking_queue_depth_drops_nothing_by_itself_and_the_queue_converges():
    b = batcher(queue_depth=6, max_batch_size=2, max_queue_delay_ns=100 * MS)
    for i in range(6):
        b.push('cam', i, 0, now_ns=i)
    b.configure(queue_depth=2)
    assert b.stats().cameras['cam'].queued == 6 and b.stats().dropped == 0
    _, dropped = b.push('cam', 6, 0, now_ns=10)  # each new frame evicts one: the length does not grow
    assert [f.data for f in dropped] == [0]
    assert b.stats().cameras['cam'].queued == 6
    b.poll_all(10)  # three full batches of 2 leave
    assert b.stats().cameras['cam'].queued == 0


def test_a_smaller_max_batch_size_applies_to_the_next_poll():
    b = batcher(max_batch_size=8, max_queue_delay_ns=100 * MS)
    for i in range(6):
        b.push('cam', i, 0, now_ns=0)
    assert b.poll(0) is None
    b.configure(max_batch_size=4)
    assert b.poll(0).size == 4
    b.configure(max_batch_size=1)
    assert [x.size for x in b.poll_all(0)] == [1, 1]


def test_invalid_policies_are_refused_with_a_reason():
    with pytest.raises(ValueError, match='max_batch_size=0'):
        BatchPolicy(max_batch_size=0).validated()
    b = batcher()
    with pytest.raises(ValueError, match='queue_depth=0'):
        b.configure(queue_depth=0)
    with pytest.raises(ValueError, match='preferred_batch_sizes'):
        b.configure(preferred_batch_sizes=[0, 4])
    assert b.policy.queue_depth == 8  # unchanged after a refused change


# -------------------------------------------------------------------------------- mixed resolutions


def test_frames_of_different_resolutions_and_encodings_are_grouped_never_mixed():
    b = batcher(max_batch_size=4, max_queue_delay_ns=5 * MS)
    big = np.zeros((480, 640, 3), np.uint8)
    small = np.zeros((240, 320, 3), np.uint8)
    b.push('front', big, 0, now_ns=0, key=(480, 640, 'rgb8'))
    b.push('rear', small, 0, now_ns=1 * MS, key=(240, 320, 'bgr8'))
    b.push('left', big, 0, now_ns=2 * MS, key=(480, 640, 'rgb8'))
    b.push('right', small, 0, now_ns=3 * MS, key=(240, 320, 'bgr8'))
    b.push('front', small, 0, now_ns=4 * MS, key=(240, 320, 'bgr8'))  # a camera that changed resolution
    assert b.poll(5 * MS - 1) is None
    first = b.poll(5 * MS)  # the group holding the oldest frame goes first
    assert first.key == (480, 640, 'rgb8') and ids(first) == [('front', 0), ('left', 0)]
    assert b.poll(6 * MS - 1) is None
    second = b.poll(6 * MS)
    assert second.key == (240, 320, 'bgr8')
    assert sorted(ids(second)) == [('front', 1), ('rear', 0), ('right', 0)]
    assert all(f.data.shape == (240, 320, 3) for f in second.frames)


def test_default_key_groups_arrays_by_shape_and_dtype():
    b = batcher(max_batch_size=2, max_queue_delay_ns=0)
    b.push('a', np.zeros((2, 2), np.uint8), 0, 0)
    b.push('b', np.zeros((2, 2), np.uint16), 0, 1)
    assert [x.size for x in b.poll_all(1)] == [1, 1]


# ------------------------------------------------------------------------------------ stopped camera


def test_a_stopped_camera_drains_and_leaves_the_round_robin_while_others_continue():
    b = batcher(max_batch_size=2, max_queue_delay_ns=10 * MS)
    b.push('gone', 'g0', 0, now_ns=0)
    b.push('live', 'l0', 0, now_ns=1 * MS)
    b.push('gone', 'g1', 0, now_ns=2 * MS)
    assert b.idle_cameras(now_ns=3 * MS, timeout_ns=MS + MS // 2) == ['live']  # quiet for 2 ms > 1.5 ms
    b.stop_camera('gone')
    assert b.cameras == ['gone', 'live']  # still queued: still served
    assert ids(b.poll(2 * MS)) == [('gone', 0), ('live', 0)]
    assert ids(b.poll(12 * MS)) == [('gone', 1)]  # drained by the delay rule
    assert b.cameras == ['live']
    b.push('live', 'l1', 0, now_ns=13 * MS)
    b.push('live', 'l2', 0, now_ns=14 * MS)
    assert ids(b.poll(14 * MS)) == [('live', 1), ('live', 2)]
    b.push('gone', 'back', 0, now_ns=15 * MS)  # a camera that comes back rejoins at the end
    assert b.cameras == ['live', 'gone'] and not b.stats().cameras['gone'].stopped
    assert ids(b.poll(25 * MS)) == [('gone', 2)]


def test_flush_sends_everything_oldest_group_first():
    b = batcher(max_batch_size=3, max_queue_delay_ns=1000 * MS)
    for i in range(4):
        b.push('x', i, 0, now_ns=10 + i, key='k2')
    b.push('y', 'first', 0, now_ns=1, key='k1')
    batches = b.flush(100)
    assert [(x.key, x.size, x.reason) for x in batches] == [('k1', 1, 'flush'), ('k2', 3, 'flush'),
                                                           ('k2', 1, 'flush')]
    assert b.pending() == 0


def test_stats_report_batch_sizes_reasons_and_queue_delays():
    b = batcher(max_batch_size=2, max_queue_delay_ns=1 * MS)
    b.push('a', 0, 0, now_ns=0)
    b.push('a', 1, 0, now_ns=0)
    b.poll(0)
    b.push('a', 2, 0, now_ns=0)
    b.poll(1 * MS)
    s = b.stats()
    assert s.batch_sizes == {2: 1, 1: 1} and s.reasons == {'full': 1, 'delay': 1}
    assert s.batches == 2 and s.frames_dispatched == 3 and s.mean_batch_size == 1.5
    assert list(b.queue_delays_ns) == [0, 0, 1 * MS]


def test_concurrent_pushes_and_polls_account_for_every_frame():
    b = batcher(max_batch_size=8, max_queue_delay_ns=0, queue_depth=16)
    n_threads, per_thread = 4, 2000
    out = []
    done = threading.Event()

    def producer(k):
        for i in range(per_thread):
            b.push(f'cam{k}', i, 0, now_ns=i)

    def consumer():
        while not done.is_set() or b.pending():
            out.extend(f for batch in b.poll_all(10**12) for f in batch.frames)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
    c = threading.Thread(target=consumer)
    c.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    c.join()
    s = b.stats()
    assert len(out) + s.dropped == n_threads * per_thread
    assert len({(f.camera, f.seq) for f in out}) == len(out)
