"""Where a frame's transport time goes: publisher, middleware, subscriber's callback.

`transport` in a stage report is one number (camera stamp -> callback). The descriptor's message info
splits it in three, each from clocks of this host (ROS time is system time here):

- publish:    header stamp -> DDS write (`source_timestamp`): the publisher's own work for the frame (the
              copy into the slot, and for a synchronised rig, the cameras published before it in its tick);
- middleware: DDS write -> arrival in the subscriber's reader (`received_timestamp`);
- callback:   arrival -> the callback running (the executor's wake-up, the GIL, callbacks queued before it).

Read as p50/p99 over the last `capacity` frames, in the node's diagnostics (`transport_<part>_ms_p50`, ...).
"""
from __future__ import annotations

import threading

import numpy as np

from isaac_perf.core.telemetry.stats import Ring, percentile

PARTS = ('publish', 'middleware', 'callback')


class TransportTimes:
    """Bounded samples of the three parts (thread-safe)."""

    def __init__(self, capacity: int = 2048) -> None:
        self._rings = {part: Ring(capacity) for part in PARTS}
        self._lock = threading.Lock()

    def record(self, stamp_ns: int, written_ns: int | None, arrived_ns: int | None, now_ns: int) -> None:
        """One frame; parts whose timestamps the middleware did not give (None, 0) are skipped."""
        edges = (stamp_ns, written_ns or 0, arrived_ns or 0, now_ns)
        with self._lock:
            for part, start, end in zip(PARTS, edges[:-1], edges[1:], strict=True):
                if start > 0 and end > 0:
                    self._rings[part].push((end - start) / 1e6)

    def samples(self) -> dict[str, np.ndarray]:
        """A copy of each part's samples (ms), oldest first."""
        with self._lock:
            return {part: ring.values() for part, ring in self._rings.items()}

    def values(self) -> dict[str, str]:
        """`transport_<part>_ms_p50` and `_p99` for /diagnostics ('nan' before any frame)."""
        return summarize([self])


def summarize(times: list[TransportTimes]) -> dict[str, str]:
    """`transport_<part>_ms_p50` and `_p99` over several subscriptions' samples, read as one."""
    samples = [t.samples() for t in times]
    out = {}
    for part in PARTS:
        values = np.concatenate([s[part] for s in samples]) if samples else np.empty(0)
        for q in (50, 99):
            out[f'transport_{part}_ms_p{q}'] = f'{percentile(values, q):.3f}'
    return out
