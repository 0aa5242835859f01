"""GPM sampler: NaN and one log line without GPM; real metrics under a tensor-core load on a GPU machine.

The middle tests drive the sampler with a stand-in NVML (the real library cannot run without a GPU) built
on pynvml's own ctypes structures, so the request the sampler builds is the one NVML would read; they check
what the sampler decides: first sample NaN, metric ids and order, unsupported GPUs, failed calls, buffers
freed, NVML never initialised by the sampler itself. The `gpu` test checks the real thing.
"""
import ctypes
import math
import time

import pytest

from isaac_perf.core.telemetry.gpm import GPM_FIELDS, GPM_METRICS, GpmSample, GpmSampler, headroom_notes
from isaac_perf.core.telemetry.gpu import NvmlGateway

pynvml = pytest.importorskip('pynvml')
S = 1_000_000_000


def nvml_present() -> bool:
    return NvmlGateway(log=lambda _m: None).available()


class NvmlError(Exception):
    def __init__(self, value):
        super().__init__(f'NVML error {value}')
        self.value = value


class StandInNvml:
    """GPM slice of pynvml: GPU 0 supports GPM, GPU 1 does not. A sample's "counter" is how many times it
    was taken; a metric's value is metric id + 10 x (newer counter - older counter)."""
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION

    def __init__(self, gpus=2):
        self.gpus = gpus
        self.inits = 0
        self.taken = 0
        self.counters = {}
        self.freed = 0
        self.fail_metrics = False
        self.requests = []

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlGpmQueryDeviceSupport(self, handle):
        return pynvml.c_nvmlGpmSupport_t(version=1, isSupportedDevice=1 if handle == 0 else 0)

    def nvmlGpmSampleAlloc(self):
        sample = ctypes.pointer(pynvml.struct_c_nvmlGpmSample_t())
        self.counters[ctypes.addressof(sample.contents)] = 0
        return sample

    def nvmlGpmSampleFree(self, sample):
        self.freed += 1

    def nvmlGpmSampleGet(self, handle, sample):
        self.taken += 1
        self.counters[ctypes.addressof(sample.contents)] = self.taken
        return sample

    def nvmlGpmMetricsGet(self, request):
        if self.fail_metrics:
            raise NvmlError(999)
        assert request.version == 1
        older = self.counters[ctypes.addressof(request.sample1.contents)]
        newer = self.counters[ctypes.addressof(request.sample2.contents)]
        self.requests.append([request.metrics[i].metricId for i in range(request.numMetrics)])
        for i in range(request.numMetrics):
            m = request.metrics[i]
            m.nvmlReturn = 3 if m.metricId == 11 else 0     # FP64 not supported on this part
            m.value = m.metricId + 10.0 * (newer - older)
        return request


def test_first_sample_nan_then_metrics_by_id_and_unsupported_gpu_logged_once():
    nvml, lines = StandInNvml(), []
    gateway = NvmlGateway(log=lines.append, module=nvml)
    sampler = GpmSampler(gateway)
    first = sampler.sample(0)
    assert [g.index for g in first] == [0, 1] and first[0].supported and not first[1].supported
    assert all(math.isnan(v) for g in first for v in g.values.values())
    second = sampler.sample(S // 2)
    g0 = second[0]
    assert g0.interval_s == 0.5
    assert nvml.requests == [[metric_id for _, metric_id in GPM_METRICS]]
    for name, metric_id in GPM_METRICS:
        expected = math.nan if metric_id == 11 else metric_id + 10.0   # one sample apart
        assert g0.get(name) == expected or (math.isnan(expected) and math.isnan(g0.get(name)))
    assert list(g0.values) == list(GPM_FIELDS)
    assert all(math.isnan(v) for v in second[1].values.values())
    sampler.sample(S)
    assert len([line for line in lines if 'GPM is not supported' in line]) == 1
    assert 'GPU 1' in lines[0]
    sampler.close()
    assert nvml.freed == 2 and nvml.inits == 1   # the gateway started NVML, once


def test_failed_metrics_call_reads_nan_and_keeps_sampling():
    nvml, lines = StandInNvml(gpus=1), []
    sampler = GpmSampler(NvmlGateway(log=lines.append, module=nvml), indices=[0])
    sampler.sample(0)
    nvml.fail_metrics = True
    failed = sampler.sample(S)[0]
    assert failed.supported and all(math.isnan(v) for v in failed.values.values())
    nvml.fail_metrics = False
    again = sampler.sample(2 * S)[0]
    assert again.get('sm_active_percent') == 2 + 10.0
    assert sum('nvmlGpmMetricsGet failed' in line for line in lines) == 1


def test_no_nvml_reads_nan_with_one_line():
    if nvml_present():
        pytest.skip('a GPU with NVML is present; this test covers machines without one')
    lines = []
    sampler = GpmSampler(NvmlGateway(log=lines.append), indices=[0])
    for t in range(3):
        (g,) = sampler.sample(t * S)
        assert not g.supported and all(math.isnan(v) for v in g.values.values())
    assert GpmSampler(NvmlGateway(log=lines.append)).sample(0) == []
    assert len(lines) == 2   # one per gateway, not one per sample


def gpm(**values):
    g = GpmSample(index=0, supported=True)
    g.values.update(values)
    return g


def test_headroom_notes_say_what_the_numbers_mean():
    notes = headroom_notes(30.0, gpm(sm_active_percent=28.0, tensor_active_percent=0.2,
                                     fp32_active_percent=12.0, sm_occupancy_percent=40.0))
    assert len(notes) == 1 and 'GPU 30% busy but tensor cores idle' in notes[0] and 'FP16' in notes[0]
    small = headroom_notes(100.0, gpm(sm_active_percent=33.4, sm_occupancy_percent=5.0,
                                      tensor_active_percent=32.4, tensor_hmma_percent=32.0,
                                      dram_bw_util_percent=6.8))
    assert any('only 33.4% of SMs' in n for n in small) and any('occupancy 5.0%' in n for n in small)
    assert headroom_notes(90.0, GpmSample(index=0)) == [] and headroom_notes(90.0, None) == []


@pytest.mark.gpu
def test_gpm_on_a_real_gpu_under_fp16_matmul():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    gateway = NvmlGateway()
    assert gateway.available(), 'NVML did not start on a GPU machine'
    sampler = GpmSampler(gateway, indices=[torch.cuda.current_device()])
    if not sampler.sample(time.monotonic_ns())[0].supported:
        pytest.skip('this GPU has no GPM (needs Hopper or newer)')
    a = torch.randn(8192, 8192, device='cuda', dtype=torch.float16)
    b = torch.randn(8192, 8192, device='cuda', dtype=torch.float16)
    costs = []
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    (busy,) = sampler.sample(time.monotonic_ns())
    costs.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    time.sleep(1.0)                 # idle interval
    t0 = time.perf_counter()
    (idle,) = sampler.sample(time.monotonic_ns())
    costs.append(time.perf_counter() - t0)
    sampler.close()
    print(f'GPM busy {busy.values} idle {idle.values} sample+metrics ms {[c * 1e3 for c in costs]}')
    for name in ('sm_active_percent', 'sm_occupancy_percent', 'tensor_active_percent',
                 'dram_bw_util_percent'):
        assert 0.0 <= busy.get(name) <= 100.0, name
    assert busy.get('sm_active_percent') > 20.0 and busy.get('tensor_active_percent') > 10.0
    assert busy.get('tensor_hmma_percent') > 5.0
    # the idle second must read far lower (the GPU may be shared, so not necessarily 0)
    assert idle.get('tensor_active_percent') < 0.5 * busy.get('tensor_active_percent')
    assert max(costs) < 0.05   # 0.5 ms sample + 2.9 ms metrics measured; 50 ms would block the timer
