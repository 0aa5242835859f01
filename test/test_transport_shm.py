"""The host shared-memory transport: descriptors, the slot-lock protocol, leases, crashes, forgery, space.

Every test uses its own root (tmp_path), never the machine's /dev/shm listing. Processes exchange frames
through test/transport_peer.py.
"""
import array
import gc
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from isaac_perf.core.transport import TransportUnavailable, clean_stale_segments
from isaac_perf.core.transport.descriptor import MIN_SIZE, Descriptor, DescriptorError, decode, encode
from isaac_perf.core.transport.shm_ring import ShmReader, ShmWriter

sys.path.insert(0, str(Path(__file__).parent))
from procs import PY, ROOT, node_env  # noqa: E402

PEER = str(ROOT / 'test' / 'transport_peer.py')
CUDA_D = Descriptor('cuda', 'isaac_perf.7.cam.0', 2, 9, 4096, 7, device=0, mem_handle=bytes(range(64)),
                    event_handle=bytes(range(64, 128)), offset=8192)


def sha(buf) -> str:
    return hashlib.sha256(buf).hexdigest()


def peer(root, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PY, PEER, str(root), *args], cwd=ROOT, env=node_env(), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def segments(root) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith('isaac_perf.'))


def frame(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


@pytest.fixture
def writer(tmp_path):
    w = ShmWriter('/camera_0/image_raw', 3, 4096, root=str(tmp_path))
    yield w
    w.close()


@pytest.fixture
def reader(tmp_path):
    r = ShmReader(root=str(tmp_path))
    yield r
    r.close()


# ----------------------------------------------------------------------------- descriptors

def test_descriptor_round_trips_from_every_buffer_type():
    host = Descriptor('host', 'isaac_perf.12.camera_0_image_raw.0', 1, 5, 6220800, 12)
    for d in (host, CUDA_D):
        wire = encode(d)
        assert len(wire) == MIN_SIZE + len(d.segment)
        for data in (wire, bytearray(wire), memoryview(wire), array.array('B', wire)):
            assert decode(data) == d


def test_unknown_version_names_both_versions_and_says_to_update_both_ends():
    wire = bytearray(encode(CUDA_D))
    wire[4:6] = (7).to_bytes(2, 'little')
    with pytest.raises(DescriptorError) as e:
        decode(wire)
    assert e.value.reason == 'version'
    assert 'version 7' in str(e.value) and 'version(s) 1' in str(e.value) and 'both ends' in str(e.value)


@pytest.mark.parametrize('mutate, words', [
    (lambda w: b'XXXX' + w[4:], 'magic'),
    (lambda w: w[:3], 'magic'),
    (lambda w: w[:MIN_SIZE - 1], 'truncated'),
    (lambda w: w[:-1], 'length'),
    (lambda w: w + b'x', 'length'),
    (lambda w: w[:-len(CUDA_D.segment)] + b'../x'.ljust(len(CUDA_D.segment), b'_'), 'segment name'),
    (lambda w: w[:6] + b'\x09' + w[7:], 'memory code'),
])
def test_malformed_descriptors_are_refused_naming_the_problem(mutate, words):
    with pytest.raises(DescriptorError) as e:
        decode(mutate(encode(CUDA_D)))
    assert e.value.reason == 'malformed' and words in str(e.value)


def test_decode_raises_only_descriptor_errors_for_any_bytes():
    rng = random.Random(1234)
    wire = encode(CUDA_D)
    inputs = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400))) for _ in range(2000)]
    for _ in range(3000):  # valid prefix, random damage: reaches every field check
        w = bytearray(wire)
        for _ in range(rng.randrange(1, 4)):
            w[rng.randrange(6, len(w))] = rng.getrandbits(8)
        inputs.append(bytes(w))
    inputs += [None, 12, 'text', [1, 2, 3], np.zeros((2, 2), np.uint16)[:, 0]]
    for data in inputs:
        try:
            decode(data)
        except DescriptorError as e:
            assert e.reason in ('malformed', 'version')


def test_encode_refuses_fields_out_of_range():
    for bad, field in ((replace(CUDA_D, generation=0), 'generation'), (replace(CUDA_D, slot=-1), 'slot'),
                       (replace(CUDA_D, mem_handle=b'x'), 'mem_handle'),
                       (replace(CUDA_D, device=-1), 'device'),
                       (replace(CUDA_D, segment='../etc/passwd'), 'segment'),
                       (replace(CUDA_D, memory='disk'), 'memory')):
        with pytest.raises(DescriptorError, match=field):
            encode(bad)


# ----------------------------------------------------------------------------- the ring

def test_frames_cross_processes_bit_exactly_including_a_grown_segment(tmp_path, reader):
    sizes = [100, 4096, 1, 3000] * 5 + [50_000, 20, 60_000]  # 50_000 and 60_000 grow the 4096-byte slots
    proc = peer(tmp_path, 'lockstep', '7', *map(str, sizes))
    try:
        for _ in sizes:
            kind, wire, digest = proc.stdout.readline().split()
            assert kind == 'frame'
            d, view = reader.open_bytes(bytes.fromhex(wire))
            assert sha(view) == digest and view.nbytes == d.nbytes
            del view
            proc.stdin.write('next\n')
            proc.stdin.flush()
        assert proc.stdout.readline().split() == ['done', '2']
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert segments(tmp_path) == []  # the dropped writer unlinked its segment


def test_a_held_view_never_changes_and_its_slot_is_skipped(writer, tmp_path):
    slow = ShmReader(root=str(tmp_path))
    d = writer.write(frame(4000, 1))
    held = slow.open(d)
    before = sha(held)
    used = [writer.write(frame(4000, i)).slot for i in range(2, 50)]
    assert d.slot not in used and sha(held) == before
    assert writer.counters == {'written': 49, 'busy': 0, 'grown': 0}
    others = [slow.open(writer.write(frame(10, 99))) for _ in range(2)]  # now every slot is held
    assert writer.write(frame(10)) is None and writer.counters['busy'] == 1
    assert writer.loan(10) is None and writer.counters['busy'] == 2
    del others
    assert writer.write(frame(10)) is not None and sha(held) == before


def test_a_derived_view_keeps_the_lease(tmp_path, reader):
    w = ShmWriter('/cam', 1, 4 * 6 * 3, root=str(tmp_path))
    arr = reader.open(w.write(frame(4 * 6 * 3)))
    view = arr.reshape(4, 6, 3)[::2]
    del arr
    gc.collect()
    assert w.write(frame(10)) is None  # the view still pins the slot
    del view
    assert w.write(frame(10)) is not None
    w.close()


def test_several_views_of_one_slot_share_one_lock(tmp_path, reader):
    w = ShmWriter('/cam', 1, 64, root=str(tmp_path))
    d = w.write(frame(64))
    a, b = reader.open(d), reader.open(d)
    del a
    assert w.write(frame(64)) is None
    del b
    assert w.write(frame(64)) is not None
    w.close()


def test_explicit_lease_and_context_manager(tmp_path, reader):
    w = ShmWriter('/cam', 1, 64, root=str(tmp_path))
    lease = reader.lease(w.write(frame(64, 3)))
    assert sha(lease.array) == sha(frame(64, 3)) and lease.alive
    lease.release()
    lease.release()
    assert not lease.alive and lease.array is None
    with reader.lease(w.write(frame(64, 4))) as view:
        assert sha(view) == sha(frame(64, 4))
        assert w.write(frame(64)) is None
    assert w.write(frame(64)) is not None
    w.close()


def test_loan_writes_in_place(writer, reader):
    loan = writer.loan(100)
    loan.array[:] = 42
    d = loan.commit()
    assert d.nbytes == 100 and (reader.open(d) == 42).all()
    with pytest.raises(RuntimeError):
        loan.commit()
    abandoned = writer.loan(10)
    abandoned.abandon()
    with pytest.raises(DescriptorError) as e:
        reader.open(replace(d, slot=abandoned.slot))
    assert e.value.reason == 'stale'


def test_any_array_layout_is_copied_once_exactly(writer, reader):
    src = np.arange(30 * 40 * 3, dtype=np.uint16).reshape(30, 40, 3)[::2, ::-1]
    d = writer.write(src)
    assert reader.open(d).tobytes() == np.ascontiguousarray(src).tobytes()
    assert reader.open(writer.write(b'bytes too')).tobytes() == b'bytes too'


def test_old_views_survive_growth_and_the_old_segment_is_closed_when_released(writer, reader, tmp_path):
    old = reader.open(writer.write(frame(4096, 5)))
    name = writer.name
    big = writer.write(frame(10_000, 6))
    assert writer.counters['grown'] == 1 and big.segment != name and segments(tmp_path) == [big.segment]
    assert sha(reader.open(big)) == sha(frame(10_000, 6)) and sha(old) == sha(frame(4096, 5))
    assert list(reader._cache.segments) == [big.segment]  # the old one retired, alive while `old` is
    del old


# ----------------------------------------------------------------------------- torn reads, crashes

def test_a_rewritten_slot_is_stale(tmp_path, reader):
    w = ShmWriter('/cam', 1, 64, root=str(tmp_path))
    first = w.write(frame(64, 1))
    w.write(frame(64, 2))
    with pytest.raises(DescriptorError) as e:
        reader.open(first)
    assert e.value.reason == 'stale' and 'overwritten' in str(e.value)
    loan = w.loan(64)  # being written now
    with pytest.raises(DescriptorError) as e:
        reader.open(replace(first, generation=2))
    assert e.value.reason == 'stale' and 'being rewritten' in str(e.value)
    loan.abandon()
    assert reader.counters['stale'] == 2
    w.close()


def test_a_killed_writers_segment_is_removed_by_the_next_writer(tmp_path):
    proc = peer(tmp_path, 'loop')
    try:
        for _ in range(20):
            assert proc.stdout.readline().startswith('wrote')
        dead = segments(tmp_path)
        assert len(dead) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    w = ShmWriter('/peer/loop', 2, 64, root=str(tmp_path))
    assert w.removed_stale == dead and segments(tmp_path) == [w.name]
    w.close()


def test_a_killed_readers_slot_is_writable_again(tmp_path):
    w = ShmWriter('/cam', 1, 256, root=str(tmp_path))
    d = w.write(frame(256, 8))
    proc = peer(tmp_path, 'hold', encode(d).hex())
    try:
        assert proc.stdout.readline().split() == ['held', sha(frame(256, 8))]
        assert w.write(frame(256)) is None  # the other process holds the only slot
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert w.write(frame(256)) is not None  # the kernel dropped the dead reader's lock
    w.close()


# ----------------------------------------------------------------------------- forgery

def test_forged_descriptors_are_refused_naming_the_field(writer, reader, tmp_path):
    d = writer.write(frame(100))
    (tmp_path / 'isaac_perf.1.foreign.0').write_bytes(b'not a segment' * 100)
    cases = [
        (replace(d, segment='../x'), 'forged', 'must start with'),
        (replace(d, segment='isaac_perf.1/../../etc'), 'forged', 'only letters'),
        (replace(d, segment='isaac_perf.1.foreign.0'), 'forged', 'header magic'),
        (replace(d, slot=3), 'forged', 'slot 3'),
        (replace(d, publisher_pid=d.publisher_pid + 1), 'forged', 'publisher_pid'),
        (replace(d, nbytes=4097), 'forged', 'nbytes 4097'),
        (replace(d, memory='cuda'), 'forged', 'memory'),
        (replace(d, segment='isaac_perf.1.gone.0'), 'stale', 'no longer exists'),
    ]
    for forged, reason, words in cases:
        with pytest.raises(DescriptorError) as e:
            reader.open(forged)
        assert e.value.reason == reason and words in str(e.value), (forged, str(e.value))
    with pytest.raises(DescriptorError):
        reader.open_bytes(b'\0' * 10)
    with pytest.raises(DescriptorError):
        reader.open_bytes(b'IPFT\x09\x00')
    assert reader.counters == {'malformed': 1, 'version': 1, 'forged': 7, 'stale': 1}
    assert (reader.open(d) == frame(100)).all()  # the real one still opens


def test_a_replaced_file_is_revalidated(tmp_path, reader):
    a = ShmWriter('/a', 1, 64, root=str(tmp_path))
    b = ShmWriter('/b', 1, 64, root=str(tmp_path))
    da, db = a.write(frame(64, 1)), b.write(frame(64, 2))
    del da
    first = reader._cache
    os.replace(os.path.join(tmp_path, b.name), os.path.join(tmp_path, a.name))
    view = reader.open(replace(db, segment=a.name))  # same name, another file: re-opened and checked
    assert sha(view) == sha(frame(64, 2)) and first.segments[a.name].layout.topic == '/b'
    del view
    a.close()
    b.close()


# ----------------------------------------------------------------------------- space and cleaning

def test_no_space_is_transport_unavailable_with_advice(tmp_path):
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    with pytest.raises(TransportUnavailable) as e:
        ShmWriter('/cam', 2, free, root=str(tmp_path))
    message = str(e.value)
    assert 'MiB' in message and str(tmp_path) in message and '--shm-size' in message
    assert 'zero_copy_slots' in message and 'turn the zero-copy transport off' in message
    assert segments(tmp_path) == []


def test_clean_stale_segments_keeps_live_and_young_foreign_files(writer, tmp_path):
    old, young, other = (tmp_path / 'isaac_perf.old', tmp_path / 'isaac_perf.young', tmp_path / 'other.x')
    for path in (old, young, other):
        path.write_bytes(b'junk')
    long_ago = time.time() - 120
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    assert clean_stale_segments(str(tmp_path)) == ['isaac_perf.old']
    assert segments(tmp_path) == sorted([writer.name, 'isaac_perf.young'])


def test_the_env_variable_sets_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv('ISAAC_PERF_SHM_DIR', str(tmp_path))
    with ShmWriter('/cam', 1, 64) as w, ShmReader() as r:
        assert segments(tmp_path) == [w.name] and w.name.startswith(f'isaac_perf.{os.getpid()}.cam.')
        assert (r.open(w.write(frame(64))) == frame(64)).all()
    assert segments(tmp_path) == []


def test_a_segment_whose_owner_looks_dead_but_holds_its_liveness_lock_is_kept(writer, tmp_path, monkeypatch):
    """A publisher in another pid namespace (shared /dev/shm) has a pid that means nothing here."""
    from isaac_perf.core.transport import segments as segments_module
    monkeypatch.setattr(segments_module, 'owner_alive', lambda pid, start: False)
    assert clean_stale_segments(str(tmp_path)) == [] and segments(tmp_path) == [writer.name]


def test_transport_times_split_a_frames_transport_in_three_and_skip_missing_clocks():
    from isaac_perf.core.transport.latency import TransportTimes, summarize
    a, b = TransportTimes(capacity=8), TransportTimes(capacity=8)
    ms = 1_000_000
    a.record(1000 * ms, 1002 * ms, 1003 * ms, 1007 * ms)   # publish 2, middleware 1, callback 4 ms
    b.record(1000 * ms, None, 1005 * ms, 1006 * ms)        # no write time: only the callback part counts
    one = a.values()
    assert (one['transport_publish_ms_p50'], one['transport_middleware_ms_p50'],
            one['transport_callback_ms_p50']) == ('2.000', '1.000', '4.000')
    both = summarize([a, b])
    assert both['transport_publish_ms_p50'] == '2.000' and both['transport_callback_ms_p50'] == '2.500'
    assert TransportTimes().values()['transport_publish_ms_p99'] == 'nan'
