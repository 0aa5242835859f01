"""The other process of test_transport_shm.py: a writer or a reader of the host ring, driven over stdio.

python test/transport_peer.py ROOT MODE ...
  lockstep SEED SIZES...  write one random frame per size, print 'frame <descriptor hex> <sha256>', wait
                          for a line on stdin before the next; 'done' at the end
  loop                    write frames forever, printing 'wrote <descriptor hex>' for each
  hold HEX                open the descriptor, print 'held <sha256>', then sleep until killed
"""
import hashlib
import sys
import time

import numpy as np

from isaac_perf.core.transport.descriptor import decode, encode
from isaac_perf.core.transport.shm_ring import ShmReader, ShmWriter


def main(root: str, mode: str, *args: str) -> None:
    if mode == 'lockstep':
        rng = np.random.default_rng(int(args[0]))
        writer = ShmWriter('/peer/lockstep', 3, 4096, root=root)
        for size in map(int, args[1:]):
            frame = rng.integers(0, 256, size, dtype=np.uint8)
            d = writer.write(frame)
            print('frame', encode(d).hex(), hashlib.sha256(frame).hexdigest(), flush=True)
            sys.stdin.readline()
        print('done', writer.counters['grown'], flush=True)
    elif mode == 'loop':
        writer = ShmWriter('/peer/loop', 4, 64 * 1024, root=root)
        frame = np.zeros(64 * 1024, dtype=np.uint8)
        while True:
            frame += 1
            d = writer.write(frame)
            if d is not None:
                print('wrote', encode(d).hex(), flush=True)
            time.sleep(0.001)
    elif mode == 'hold':
        reader = ShmReader(root=root)
        view = reader.open(decode(bytes.fromhex(args[0])))
        print('held', hashlib.sha256(view).hexdigest(), flush=True)
        while True:
            time.sleep(1)
    else:
        raise SystemExit(f'unknown mode {mode!r}')


if __name__ == '__main__':
    main(*sys.argv[1:])
