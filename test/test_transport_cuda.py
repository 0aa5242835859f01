"""The CUDA IPC transport. The slot-table side (handles stored and checked, missing cuda-python) runs
everywhere; the GPU tests (marked `gpu`) run a producer and a consumer process through
test/transport_cuda_peer.py and skip cleanly without cuda-python, torch or a CUDA device.
"""
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from isaac_perf.core.transport import TransportUnavailable
from isaac_perf.core.transport.descriptor import Descriptor, DescriptorError
from isaac_perf.core.transport.slots import SegmentCache, WriterTable

sys.path.insert(0, str(Path(__file__).parent))
from procs import PY, ROOT, node_env  # noqa: E402

PEER = str(ROOT / 'test' / 'transport_cuda_peer.py')
MIB = 1 << 20


# ----------------------------------------------------------------------------- no GPU needed

def test_without_cuda_python_both_ends_are_transport_unavailable(monkeypatch):
    from isaac_perf.core.transport import cuda_ipc
    monkeypatch.setitem(sys.modules, 'cuda', None)  # `import cuda.bindings` now raises ImportError
    monkeypatch.setitem(sys.modules, 'cuda.bindings', None)
    for make in (lambda: cuda_ipc.CudaIpcWriter('/cam', 2, 1024), lambda: cuda_ipc.CudaIpcReader()):
        with pytest.raises(TransportUnavailable, match='cuda-python.*host shared-memory transport'):
            make()


def test_a_cuda_call_failure_names_the_call_and_the_error():
    from isaac_perf.core.transport.cuda_ipc import _call

    class Err(int):
        name = 'cudaErrorMapBufferObjectFailed'

    with pytest.raises(TransportUnavailable, match='cudaIpcOpenMemHandle failed: cudaErrorMapBufferObject'):
        _call((Err(205), None), 'cudaIpcOpenMemHandle', unavailable=True)
    assert _call((Err(0), 42), 'cudaMalloc') == 42


def cuda_table(tmp_path) -> tuple[WriterTable, Descriptor]:
    """A cuda slot table as CudaIpcWriter leaves it (fake handles), with slot 1 committed."""
    table = WriterTable('/cam', 'cuda', 3, 1000, str(tmp_path), device=2)
    lay = table.layout
    mem, events = b'M' * 64, [bytes([65 + i]) * 64 for i in range(3)]
    table.mm[lay.handles_offset:lay.size] = mem + b''.join(events)
    slot = table.claim(1)
    table.commit(slot, 500, 9)
    d = Descriptor('cuda', table.name, 1, 9, 500, lay.owner_pid, 2, mem, events[1], lay.slot_offset(1))
    return table, d


def test_the_cuda_table_refuses_handles_that_are_not_the_publishers(tmp_path):
    table, d = cuda_table(tmp_path)
    assert d.offset == 4096  # slots are 4096-aligned inside the one allocation
    cache = SegmentCache('cuda', str(tmp_path))
    seg = cache.acquire(d)
    cache.release(seg, d.slot)
    for forged, field in ((replace(d, mem_handle=b'X' * 64), 'mem_handle'),
                          (replace(d, event_handle=b'A' * 64), 'event_handle'),
                          (replace(d, offset=0), 'offset'), (replace(d, device=0), 'device'),
                          (replace(d, memory='host', device=-1, mem_handle=b'', event_handle=b'', offset=0),
                           'memory')):
        with pytest.raises(DescriptorError) as e:
            cache.acquire(forged)
        assert e.value.reason == 'forged' and field in str(e.value)
    cache.close()
    table.close()


def test_a_cuda_slot_is_held_until_release(tmp_path):
    table, d = cuda_table(tmp_path)
    cache = SegmentCache('cuda', str(tmp_path))
    seg = cache.acquire(d)
    assert table.claim(1) == 2  # the held slot is skipped
    table.release(2)
    cache.release(seg, d.slot)
    assert table.claim(1) == 1
    table.close()
    cache.close()


# ----------------------------------------------------------------------------- GPU

def _cuda_ready() -> str | None:
    try:
        import torch  # noqa: F401
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        return f'needs cuda-python and torch: {e}'
    err, count = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else f'no CUDA device ({err!r})'


gpu = pytest.mark.skipif(bool(_cuda_ready()), reason=_cuda_ready() or '')


class Peer:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([PY, PEER, *args], cwd=ROOT, env=node_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ask(self, line: str) -> list[str]:
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply, f'{self.proc.args[2]} died: {self.proc.stderr.read()}'
        return reply

    def close(self) -> None:
        try:
            self.proc.stdin.write('quit\n')
            self.proc.stdin.close()
            assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()
        finally:
            self.proc.kill()


@pytest.fixture
def pair(tmp_path):
    peers = []

    def start(slots: int, slot_bytes: int) -> tuple[Peer, Peer]:
        peers.extend([Peer('producer', str(tmp_path), str(slots), str(slot_bytes)),
                      Peer('consumer', str(tmp_path))])
        return peers[-2], peers[-1]

    yield start
    for p in peers:
        p.close()


@pytest.mark.gpu
@gpu
def test_frames_cross_processes_bit_exactly_on_the_gpu(pair):
    producer, consumer = pair(3, MIB)
    for i, n in enumerate([100, MIB, 1, 4097, 65536] * 4):
        kind, wire = producer.ask(f'write {i} {n}')
        assert kind == 'desc'
        assert consumer.ask(f'check {wire} {i} {n}') == ['ok']


@pytest.mark.gpu
@gpu
def test_held_gpu_slots_are_skipped_and_all_held_is_busy(pair):
    producer, consumer = pair(2, 4096)
    first = producer.ask('write 0 4096')[1]
    assert consumer.ask(f'hold {first}') == ['held']
    second = producer.ask('write 1 4096')[1]  # goes to the other slot
    assert consumer.ask(f'hold {second}') == ['held']
    assert producer.ask('write 2 4096') == ['busy']
    assert consumer.ask('drop') == ['dropped']
    assert producer.ask('write 3 4096')[0] == 'desc'
    assert consumer.ask(f'forge {second}') == ['forged']


@pytest.mark.gpu
@gpu
def test_the_event_wait_orders_a_large_async_copy(pair):
    """256 MiB written right after ~0.5 s of matmuls on the producer's stream: the consumer, checking at
    once on its own stream, must see the new bytes, never the slot's previous ones."""
    producer, consumer = pair(1, 256 * MIB)
    for value in (3, 7):
        kind, wire, pending = producer.ask(f'big {256 * MIB} {value}')
        assert pending == '1', 'the producer stream was idle when the descriptor left: this proves nothing'
        assert consumer.ask(f'checkfill {wire} {value}') == ['ok']
