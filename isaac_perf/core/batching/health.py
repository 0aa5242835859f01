"""stream_batcher's /diagnostics, as plain data: the batcher's and the scheduler's key/values, and the level.

`batching_values` reads a DynamicBatcher (batch sizes, why batches left, queue delays, per-camera
counts) and `scheduler_values` a MultiDeviceScheduler (streams, per-device load, pool reuse and
high-water marks); `batcher_summary` sets the level. No ROS, so each is tested by calling it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from isaac_perf.core.batching.batcher import NS_PER_MS, DynamicBatcher
from isaac_perf.core.batching.multi_device import MultiDeviceScheduler
from isaac_perf.core.inference.health import engine_summary
from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import Status


def _percentile_ms(delays_ns: Iterable[int], q: float) -> str:
    delays = np.asarray(list(delays_ns), dtype=np.float64) / 1e6
    return f'{np.percentile(delays, q):.3f}' if delays.size else 'nan'


def batching_values(batcher: DynamicBatcher, bad_input: int, failed_frames: int,
                    unpublished: int = 0, refused: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Drops by cause (overload = evicted from a full camera queue; unpublished = a result whose camera's
    publisher was gone; zero_copy_<reason> = a shared-memory frame that could not be read, e.g. stale:
    overwritten before it was opened), batch statistics and the policy."""
    stats = batcher.stats()
    delays = list(batcher.queue_delays_ns)
    refused = dict(refused or {})
    total = stats.dropped + bad_input + failed_frames + unpublished + sum(refused.values())
    values: dict[str, Any] = {
        'total_dropped_frames': total,
        'dropped_overload': stats.dropped, 'dropped_bad_input': bad_input,
        'dropped_engine_error': failed_frames, 'dropped_unpublished': unpublished,
        'batches': stats.batches, 'batch_size_mean': f'{stats.mean_batch_size:.2f}',
        'batch_sizes': ' '.join(f'{k}:{n}' for k, n in sorted(stats.batch_sizes.items())),
        'batch_reasons': ' '.join(f'{k}:{n}' for k, n in sorted(stats.reasons.items())),
        'queue_delay_ms_p50': _percentile_ms(delays, 50),
        'queue_delay_ms_p99': _percentile_ms(delays, 99),
        'queued': stats.queued,
        'max_batch_size': stats.policy.max_batch_size,
        'max_queue_delay_ms': stats.policy.max_queue_delay_ns / NS_PER_MS,
        'queue_depth': stats.policy.queue_depth}
    values.update({f'dropped_zero_copy_{reason}': n for reason, n in sorted(refused.items())})
    for cam, s in stats.cameras.items():
        values[f'camera {cam}'] = (f'received {s.received} dropped {s.dropped} queued {s.queued} '
                                   f'{"stopped" if s.stopped else "active"}')
    return values


def scheduler_values(sched: MultiDeviceScheduler) -> dict[str, Any]:
    """Streams and in-flight batches, then per device its load and limit and per pool its reuse."""
    values: dict[str, Any] = {'num_streams': sched.num_streams, 'in_flight': sched.in_flight,
                              'host_waits': sched.host_waits, 'runtime': sched.runtime.name,
                              'gpus': ' '.join(map(str, sched.device_indices))}
    multi = len(sched.schedulers) > 1
    for i, sub in enumerate(sched.schedulers):
        dev = sched.device_indices[i]
        values[f'device {dev}'] = (f'batches {sched.batches_per_device[i]} frames '
                                   f'{sched.frames_per_device[i]} in_flight {sub.in_flight} '
                                   f'batch_limit {sched.limits[i] or "max_batch_size"}')
        for pool in sub.pools():
            p = pool.stats()
            name = f'pool {p.name}' + (f' gpu{dev}' if multi else '')
            values[name] = (f'hit_rate {p.hit_rate:.3f} allocations {p.allocations} '
                            f'checked_out {p.checked_out} high_water_mb '
                            f'{p.high_water_reserved_bytes / 2**20:.1f}')
    return values


def batcher_summary(status: Status, *, engine_error: str, loaded: bool, device: str, dropped: int) -> None:
    """stream_batcher: any dropped frame (overload, bad input, a failed batch) is a warning."""
    if engine_summary(status, engine_error, loaded):
        return
    if dropped:
        status.summary(Level.WARN, f'{dropped} frame(s) dropped')
    else:
        status.summary(Level.OK, f'batching on {device}')
