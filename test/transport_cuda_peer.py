"""The producer or consumer process of test_transport_cuda.py, driven by one command per stdin line.

python test/transport_cuda_peer.py producer ROOT SLOTS SLOT_BYTES
  write I N        fill N bytes with pattern(I) on the GPU, write_tensor -> 'desc HEX' or 'busy'
  big N VALUE      a long matmul chain, then fill N bytes with VALUE and write_tensor on the same stream
                   -> 'desc HEX PENDING' (PENDING 1: the stream was still busy when the descriptor left)
python test/transport_cuda_peer.py consumer ROOT
  check HEX I N    open, copy to host, compare with pattern(I) -> 'ok' or 'bad ...'; released
  checkfill HEX V  open and check every byte is V at once (no host sync before) -> 'ok' or 'bad ...'
  hold HEX         open and keep the frame -> 'held'
  drop             release every held frame -> 'dropped'
  forge HEX        open with a mem_handle that is not the publisher's -> the DescriptorError reason
'quit' ends either.
"""
import sys
from dataclasses import replace

import numpy as np
import torch

from isaac_perf.core.transport.cuda_ipc import CudaIpcReader, CudaIpcWriter
from isaac_perf.core.transport.descriptor import DescriptorError, decode, encode


def pattern(i: int, n: int) -> np.ndarray:
    return ((np.arange(n, dtype=np.int64) * (i + 1) + i) % 251).astype(np.uint8)


def producer(root: str, slots: str, slot_bytes: str) -> None:
    writer = CudaIpcWriter('/peer/cuda', int(slots), int(slot_bytes), device=0, root=root)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == 'write':
            i, n = int(args[0]), int(args[1])
            src = ((torch.arange(n, device='cuda:0', dtype=torch.int64) * (i + 1) + i) % 251).to(torch.uint8)
            d = writer.write_tensor(src)
            print('busy' if d is None else f'desc {encode(d).hex()}', flush=True)
        elif cmd == 'big':
            n, value = int(args[0]), int(args[1])
            src = torch.zeros(n, dtype=torch.uint8, device='cuda:0')
            a = torch.randn(8192, 8192, device='cuda:0')
            torch.cuda.synchronize()
            for _ in range(30):
                a = (a @ a) * 1e-4  # ~30 TFLOP on the current stream: long enough to be pending
            src.fill_(value)  # ordered after the matmuls on the same stream
            d = writer.write_tensor(src)
            pending = int(not torch.cuda.current_stream().query())
            print(f'desc {encode(d).hex()} {pending}', flush=True)
        elif cmd == 'quit':
            break
    writer.close()


def consumer(root: str) -> None:
    reader = CudaIpcReader(root=root)
    held = []
    stream = torch.cuda.current_stream().cuda_stream
    for line in sys.stdin:
        cmd, *args = line.split()
        d = decode(bytes.fromhex(args[0])) if args else None
        if cmd == 'check':
            frame = reader.open(d, stream)
            got = frame.as_torch().cpu().numpy()
            frame.release()
            want = pattern(int(args[1]), int(args[2]))
            print('ok' if np.array_equal(got, want) else f'bad {np.flatnonzero(got != want)[:5]}', flush=True)
        elif cmd == 'checkfill':
            frame = reader.open(d, stream)
            wrong = int((frame.as_torch() != int(args[1])).sum().item())  # on `stream`, after the wait
            frame.release()
            print('ok' if wrong == 0 else f'bad {wrong} bytes differ', flush=True)
        elif cmd == 'hold':
            held.append(reader.open(d, stream))
            print('held', flush=True)
        elif cmd == 'drop':
            for frame in held:
                frame.release()
            held.clear()
            print('dropped', flush=True)
        elif cmd == 'forge':
            try:
                reader.open(replace(d, mem_handle=bytes(64)), stream)
                print('opened', flush=True)
            except DescriptorError as e:
                print(e.reason, flush=True)
        elif cmd == 'quit':
            break
    reader.close()


if __name__ == '__main__':
    {'producer': producer, 'consumer': consumer}[sys.argv[1]](*sys.argv[2:])
