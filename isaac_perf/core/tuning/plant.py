"""A model of a batched pipeline (throughput and latency against batch size and streams) for offline search
and tests.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from isaac_perf.core.tuning.search import Measurement, Value

# ---------------------------------------------------------------------------------- a synthetic pipeline

@dataclass(frozen=True)
class BatchedPipelineModel:
    """A deterministic model of N cameras feeding a dynamic batcher over K GPU streams.

    For tests, simulations and docs, not a claim about any GPU. Per batch of e frames one stream spends
    `overhead_ms` (launch, copies, sync: overlaps across streams) plus `per_frame_ms` x e of GPU compute
    (serialises across streams). So with K streams a batch leaves every max(per_frame x e, (overhead +
    per_frame x e) / K) ms and, by Little's law with K batches in flight, takes K x that to finish.

    Saturated (cameras offer more than capacity): every batch is as full as the per-camera queues allow
    (min(max_batch_size, queue_depth x cameras)), the queues stay full, and each frame waits
    (depth x cameras - e) / throughput in them; a reliable input doubles the backlog (the DDS history of
    the same depth fills too and the publisher waits on it).
    Not saturated: batches hold 1 + rate x delay frames (at least what keeps up with the rate), frames wait
    for the batch to fill, and queueing grows as rho / (1 - rho) near capacity.
    """
    cameras: int = 8
    camera_fps: float = math.inf  # offered frames per second per camera; inf = free-running
    overhead_ms: float = 4.0
    per_frame_ms: float = 0.25
    transport_ms: float = 1.0
    reliable_transport_ms: float = 0.5  # extra per frame for a reliable input (acks, retransmits)
    jitter_ratio: float = 0.2  # p99 compute time = mean x (1 + jitter_ratio)
    memory_base_mb: float = 600.0
    memory_per_frame_mb: float = 12.0
    idle_power_w: float = 70.0
    max_power_w: float = 700.0

    def capacity_fps(self, batch: float, streams: int, gpus: int = 1) -> float:
        """Frames/s of `gpus` GPUs with `streams` streams each: the GPUs are independent (one engine each,
        batches routed least-loaded), so capacity adds up; the host feeding them is not modelled."""
        period = max(self.per_frame_ms * batch, (self.overhead_ms + self.per_frame_ms * batch) / streams)
        return gpus * 1000.0 * batch / period

    def evaluate(self, config: Mapping[str, Value]) -> Measurement:
        """The steady state for a config with keys max_batch_size, max_queue_delay_ms, num_streams and,
        optionally, queue_depth (per camera, default 1), input_reliability (default best_effort) and
        num_gpus (default 1: GPUs sharing the batches; gpu_util_pct is then per GPU)."""
        b = int(config['max_batch_size'])
        d = float(config.get('max_queue_delay_ms', 0.0))
        k = int(config.get('num_streams', 1))
        g = int(config.get('num_gpus', 1))
        q = int(config.get('queue_depth', 1))
        reliable = config.get('input_reliability', 'best_effort') == 'reliable'
        offered = self.cameras * self.camera_fps  # frames/s
        transport = self.transport_ms + (self.reliable_transport_ms if reliable else 0.0)
        # a batch can hold no more than the per-camera queues let wait at once
        b_eff = min(b, q * self.cameras)
        if offered >= self.capacity_fps(b_eff, k, g):
            e = float(b_eff)
            fps = self.capacity_fps(e, k, g)
            backlog = max(0.0, q * self.cameras * (2 if reliable else 1) - e)
            queue_wait = 1000.0 * backlog / fps
            fill_mean = fill_max = 0.0
            compute = k * g * 1000.0 * e / fps  # one GPU's batch time: each runs fps / g frames/s
            queue_p99 = queue_wait
        else:
            lam = offered / 1000.0  # frames/ms
            lam_gpu = lam / g  # what each GPU receives
            e = min(float(b), 1.0 + lam * d)
            # the smallest batch that keeps up: k e >= lam_gpu (overhead + per_frame e)
            if k - lam_gpu * self.per_frame_ms > 0:
                e = min(float(b), max(e, lam_gpu * self.overhead_ms / (k - lam_gpu * self.per_frame_ms)))
            fps = offered
            rho = min(0.99, offered / self.capacity_fps(e, k, g))
            fill_max = (e - 1.0) / lam
            fill_mean = fill_max / 2.0
            compute = self.overhead_ms + self.per_frame_ms * e
            queue_wait = compute * rho / (2.0 * (1.0 - rho))
            queue_p99 = min(4.6 * queue_wait, 1000.0 * q * self.cameras / fps)  # exponential tail, ~ln(100)
        util = min(1.0, fps / g * self.per_frame_ms / 1000.0)  # the share of time each GPU computes
        mean = transport + fill_mean + queue_wait + compute
        p99 = transport + fill_max + queue_p99 + compute * (1.0 + self.jitter_ratio)
        memory = self.memory_base_mb + self.memory_per_frame_mb * e * k
        power = self.idle_power_w + (self.max_power_w - self.idle_power_w) * util
        return Measurement(throughput_fps=fps, latency_p99_ms=p99, latency_p50_ms=mean, latency_mean_ms=mean,
                           jitter_ms=(p99 - mean) / 2.326, gpu_util_pct=100.0 * util, gpu_power_w=power,
                           gpu_memory_mb=memory, duration_s=1.0)

    def with_(self, **changes: Any) -> BatchedPipelineModel:
        return replace(self, **changes)
