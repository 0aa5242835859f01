"""GPU headroom from NVML GPU Performance Monitoring (GPM): SM occupancy, SM/tensor/pipe activity, DRAM.

NVML's `nvmlDeviceGetUtilizationRates` says only whether *a* kernel ran during its sample period: a GPU
"100% busy" with one small kernel at a time has most of its SMs and all its tensor cores idle. GPM
(Hopper and newer datacenter GPUs, driver R520+) measures what the SMs actually did between two samples:

| field | GPM metric | meaning (percent of the interval, 0-100) |
|---|---|---|
| `sm_occupancy_percent` | SM_OCCUPANCY (3) | resident warps vs the theoretical maximum |
| `sm_active_percent` | SM_UTIL (2) | SMs busy |
| `tensor_active_percent` | ANY_TENSOR_UTIL (5) | SMs issuing any tensor-core instruction |
| `tensor_hmma_percent` | HMMA_TENSOR_UTIL (7) | FP16/BF16 tensor-core instructions |
| `tensor_imma_percent` | IMMA_TENSOR_UTIL (9) | INT8 tensor-core instructions |
| `dram_bw_util_percent` | DRAM_BW_UTIL (10) | DRAM bandwidth used vs the peak |
| `fp16_active_percent` | FP16_UTIL (13) | non-tensor FP16 pipe |
| `fp32_active_percent` | FP32_UTIL (12) | non-tensor FP32 pipe |
| `fp64_active_percent` | FP64_UTIL (11) | non-tensor FP64 pipe |
| `integer_active_percent` | INTEGER_UTIL (4) | integer pipe |

Cost, measured on an H200: one `nvmlGpmSampleGet` about 0.5 ms, one `nvmlGpmMetricsGet` about 2.9 ms. The
monitor therefore samples GPM on its own timer (its own callback group), never in the topic drains.

NVML belongs to the process's one gateway (`core/telemetry/gpu.py`): this module never calls nvmlInit; it
takes device handles through the gateway's `call`, so every failure becomes NaN and each distinct fault
is logged once. A GPU without GPM (older architectures, MIG without per-instance sampling, vGPU), a
machine without NVML or without GPUs: every field NaN, one log line per GPU. The first sample of a GPU
is NaN too (a metric is the difference of two samples).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from isaac_perf.core.telemetry.gpu import NvmlGateway

NAN = float('nan')

# (field name, NVML_GPM_METRIC_* id), spelled out so this module imports without pynvml; the order is the
# order of the fields in /performance_metrics (append only).
GPM_METRICS: tuple[tuple[str, int], ...] = (
    ('sm_occupancy_percent', 3),
    ('sm_active_percent', 2),
    ('tensor_active_percent', 5),
    ('tensor_hmma_percent', 7),
    ('tensor_imma_percent', 9),
    ('dram_bw_util_percent', 10),
    ('fp16_active_percent', 13),
    ('fp32_active_percent', 12),
    ('fp64_active_percent', 11),
    ('integer_active_percent', 4),
)
GPM_FIELDS: tuple[str, ...] = tuple(name for name, _ in GPM_METRICS)
NVML_GPM_METRICS_GET_VERSION = 1


@dataclass
class GpmSample:
    """GPM metrics of one GPU over the interval since its previous sample; NaN where unknown."""
    index: int
    supported: bool = False
    interval_s: float = NAN
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GPM_FIELDS, NAN))

    def get(self, name: str) -> float:
        return self.values.get(name, NAN)


@dataclass
class _GpuState:
    handle: Any
    samples: list[Any]          # two GPM sample buffers, used alternately
    current: int = 0            # index into samples of the newest one
    have_previous: bool = False
    previous_ns: int = 0


class GpmSampler:
    """GPM metrics of the requested GPUs through the process's NVML gateway.

    `gateway`: the NvmlGateway every NVML user of the process shares (this sampler does not own it: `close`
    frees GPM buffers only). `indices`: GPUs to sample, None for all.
    """

    def __init__(self, gateway: NvmlGateway, indices: Sequence[int] | None = None,
                 metrics: Sequence[tuple[str, int]] = GPM_METRICS):
        self.gateway = gateway
        self.indices = None if indices is None else [int(i) for i in indices]
        self.metrics = tuple(metrics)
        self._state: dict[int, _GpuState | None] = {}

    def _selected(self) -> list[int]:
        if self.indices is not None:
            return self.indices
        return list(range(int(self.gateway.call('nvmlDeviceGetCount', -1, default=0))))

    def _state_for(self, index: int) -> _GpuState | None:
        if index in self._state:
            return self._state[index]
        gw = self.gateway
        state = None
        handle = gw.call('nvmlDeviceGetHandleByIndex', index, index, default=None)
        if handle is not None:
            support = gw.call('nvmlGpmQueryDeviceSupport', index, handle, default=None)
            if support is None or not getattr(support, 'isSupportedDevice', 0):
                if support is not None:
                    gw.log_once(f'gpm:unsupported:{index}',
                                f'GPU {index}: NVML GPM is not supported on this GPU (needs Hopper or newer '
                                'and driver R520+); SM occupancy, tensor and DRAM activity read NaN')
            else:
                samples = [gw.call('nvmlGpmSampleAlloc', index, default=None) for _ in range(2)]
                if all(s is not None for s in samples):
                    state = _GpuState(handle=handle, samples=samples)
                else:
                    self._free([s for s in samples if s is not None], index)
        self._state[index] = state
        return state

    def sample(self, now_ns: int) -> list[GpmSample]:
        """One GPM sample per selected GPU; metrics over the interval since the previous call."""
        if not self.gateway.available():
            return [GpmSample(index=i) for i in (self.indices or [])]
        return [self._sample_one(i, now_ns) for i in self._selected()]

    def _sample_one(self, index: int, now_ns: int) -> GpmSample:
        state = self._state_for(index)
        if state is None:
            return GpmSample(index=index)
        gw = self.gateway
        nxt = 1 - state.current
        if gw.call('nvmlGpmSampleGet', index, state.handle, state.samples[nxt], default=None) is None:
            state.have_previous = False  # a failed sample breaks the pair; start again next time
            return GpmSample(index=index, supported=True)
        out = GpmSample(index=index, supported=True)
        if state.have_previous:
            out.interval_s = (now_ns - state.previous_ns) / 1e9
            out.values.update(self._metrics(index, state.samples[state.current], state.samples[nxt]))
        state.current, state.have_previous, state.previous_ns = nxt, True, now_ns
        return out

    def _metrics(self, index: int, older: Any, newer: Any) -> dict[str, float]:
        nvml = self.gateway.nvml
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = getattr(nvml, 'NVML_GPM_METRICS_GET_VERSION', NVML_GPM_METRICS_GET_VERSION)
        request.numMetrics = len(self.metrics)
        request.sample1, request.sample2 = older, newer
        for i, (_, metric_id) in enumerate(self.metrics):
            request.metrics[i].metricId = metric_id
        answer = self.gateway.call('nvmlGpmMetricsGet', index, request, default=None)
        if answer is None:
            return {}
        values = {}
        for i, (name, _) in enumerate(self.metrics):
            metric = answer.metrics[i]
            value = float(metric.value)
            values[name] = value if metric.nvmlReturn == 0 and math.isfinite(value) else NAN
        return values

    def _free(self, samples: list[Any], index: int) -> None:
        for s in samples:
            self.gateway.call('nvmlGpmSampleFree', index, s, default=None)

    def close(self) -> None:
        """Free the GPM buffers (NVML itself stays up: the gateway is shared)."""
        for index, state in self._state.items():
            if state is not None:
                self._free(state.samples, index)
        self._state.clear()


def headroom_notes(gpu_util_percent: float, gpm: GpmSample | None) -> list[str]:
    """Plain-words reading of coarse utilization against GPM (see `headroom_findings`)."""
    return [text for _, text in headroom_findings(gpu_util_percent, gpm)]


def headroom_findings(gpu_util_percent: float, gpm: GpmSample | None) -> list[tuple[str, str]]:
    """(cause, text) pairs reading coarse utilization against GPM, for the report's bottleneck analysis:
    'tensor_idle', 'sm_underfilled', 'low_occupancy', 'memory_bound', 'tensor_not_fp16'."""
    if gpm is None or not gpm.supported:
        return []
    sm, occ = gpm.get('sm_active_percent'), gpm.get('sm_occupancy_percent')
    tensor, hmma = gpm.get('tensor_active_percent'), gpm.get('tensor_hmma_percent')
    fp32, dram = gpm.get('fp32_active_percent'), gpm.get('dram_bw_util_percent')
    notes: list[tuple[str, str]] = []
    busy = gpu_util_percent if not math.isnan(gpu_util_percent) else sm
    if math.isnan(busy) or math.isnan(sm):
        return notes
    if busy >= 20 and not math.isnan(tensor) and tensor < 5:
        hint = ('FP32 pipes are busy: FP16/BF16 (or TF32) would move the math onto tensor cores'
                if not math.isnan(fp32) and fp32 >= 5 else
                'FP16/BF16 precision would let the tensor cores take the math')
        notes.append(('tensor_idle',
                      f'GPU {busy:.0f}% busy but tensor cores idle ({tensor:.1f}% active): {hint}'))
    if busy >= 50 and sm < 0.5 * busy:
        notes.append(('sm_underfilled', f'GPU reads {busy:.0f}% busy but only {sm:.1f}% of SMs are active: '
                      'kernels too small to fill the GPU; batch more frames or run streams concurrently'))
    if not math.isnan(occ) and sm >= 20 and occ < 15:
        notes.append(('low_occupancy', f'SM occupancy {occ:.1f}%: few warps resident per SM '
                      '(register/shared-memory bound or small grids); latency is not being hidden'))
    if not math.isnan(dram) and dram >= 70:
        notes.append(('memory_bound', f'DRAM bandwidth {dram:.0f}% of peak: memory bound; fuse kernels, '
                      'lower precision or cut copies before adding compute'))
    if not math.isnan(hmma) and not math.isnan(tensor) and tensor >= 5 and hmma < 0.2 * tensor:
        notes.append(('tensor_not_fp16', f'tensor cores {tensor:.1f}% active, little of it FP16/BF16 '
                      f'({hmma:.1f}%): TF32 or INT8 paths in use'))
    return notes
