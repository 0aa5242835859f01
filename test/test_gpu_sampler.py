"""GPU sampler: degrades to NaN without NVML (this machine), reads real values on a GPU machine.

The middle tests drive the sampler with a stand-in NVML module, because the real library cannot run
without a GPU; they check what the sampler itself decides (unit conversions, counter rates, unsupported
queries not retried, one log line per fault). The `gpu` test checks the real thing.
"""
import math
import types

import pytest

from isaac_perf.core.telemetry.gpu import (
    FI_NVLINK_LINK_COUNT,
    FI_NVLINK_THROUGHPUT_DATA_RX,
    FI_NVLINK_THROUGHPUT_DATA_TX,
    FI_PCIE_COUNT_RX_BYTES,
    FI_PCIE_COUNT_TX_BYTES,
    GpuSample,
    GpuSampler,
    NvmlGateway,
    gpu_count,
    gpu_inventory,
    shared_gateway,
    throttle_names,
)

S = 1_000_000_000
MIB = 1024 * 1024


def nvml_present() -> bool:
    return NvmlGateway(log=lambda _m: None).available()


def test_no_driver_degrades_to_nan_and_logs_once():
    if nvml_present():
        pytest.skip('a GPU with NVML is present; this test covers machines without one')
    lines = []
    gateway = NvmlGateway(lines.append)
    sampler = GpuSampler(gateway=gateway)
    assert sampler.sample() == [] and sampler.sample() == []
    explicit = GpuSampler(indices=[0, 1], gateway=gateway).sample()
    assert [g.index for g in explicit] == [0, 1]
    g = explicit[0]
    assert not g.ok and math.isnan(g.util_percent) and math.isnan(g.memory_used_fraction)
    assert math.isnan(g.temperature_c) and math.isnan(g.pcie_rx_mbps) and g.processes_mib == {}
    assert len(lines) == 1   # one line per gateway (one per process), not one per sampler or sample
    assert 'NaN' in lines[0]
    assert gpu_count(gateway) == 0 and gpu_inventory(gateway) == []


def test_samplers_share_one_gateway_that_close_leaves_running():
    nvml = StandInNvml()
    first, second = GpuSampler(), GpuSampler(indices=[0])
    assert first.gateway is second.gateway is shared_gateway()
    first.close()   # other users of the shared gateway keep it
    assert shared_gateway() is second.gateway
    # An explicitly passed gateway is the sampler's to shut down; NVML is initialised once per gateway.
    own = NvmlGateway(lambda _m: None, module=nvml)
    a, b = GpuSampler(gateway=own), GpuSampler(gateway=own)
    a.sample(now_ns=0)
    b.sample(now_ns=0)
    assert nvml.calls['init'] == 1
    a.close()
    b.sample(now_ns=1)
    assert nvml.calls['init'] == 2


def test_inventory_and_count_through_the_gateway():
    gateway = NvmlGateway(lambda _m: None, module=StandInNvml())
    assert gpu_count(gateway) == 1
    # The stand-in has no driver-version query: that one field degrades, the rest is read.
    assert gpu_inventory(gateway) == [{'index': 0, 'name': 'Stand-in GPU', 'memory_mib': 80 * 1024,
                                       'driver': ''}]


class NvmlError(Exception):
    def __init__(self, value):
        super().__init__(f'NVML error {value}')
        self.value = value


def field(value, ret=0):
    return types.SimpleNamespace(nvmlReturn=ret, valueType=3, value=types.SimpleNamespace(
        dVal=0.0, uiVal=0, ulVal=0, ullVal=value, sllVal=0, siVal=0, usVal=0))


class StandInNvml:
    """The slice of the pynvml API the sampler uses, with counters advanced by `tick`."""

    def __init__(self):
        self.calls = {}
        self.pcie_tx = 1_000_000
        self.nvlink_kib = 0

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def nvmlInit(self):
        self._count('init')

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return f'h{i}'

    def nvmlDeviceGetName(self, h):
        return 'Stand-in GPU'

    def nvmlDeviceGetUUID(self, h):
        return 'GPU-0000'

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(total=80 * 1024 * MIB, used=20 * 1024 * MIB)

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetUtilizationRates(self, h):
        return types.SimpleNamespace(gpu=87, memory=41)

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 55

    def nvmlDeviceGetPowerUsage(self, h):
        return 312_500

    def nvmlDeviceGetClockInfo(self, h, kind):
        return {1: 1980, 2: 2619}[kind]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x4 | 0x20

    def nvmlDeviceGetPcieThroughput(self, h, counter):
        self._count('pcie_throughput')
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [types.SimpleNamespace(pid=42, usedGpuMemory=512 * MIB)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        self._count('graphics')
        raise NvmlError(3)   # NVML_ERROR_NOT_SUPPORTED

    def nvmlDeviceGetFieldValues(self, h, fields):
        out = []
        for f in fields:
            fid = f[0] if isinstance(f, tuple) else f
            if fid == FI_NVLINK_LINK_COUNT:
                out.append(field(2))
            elif fid == FI_PCIE_COUNT_TX_BYTES:
                out.append(field(self.pcie_tx))
            elif fid == FI_PCIE_COUNT_RX_BYTES:
                out.append(field(0, ret=3))
            elif fid in (FI_NVLINK_THROUGHPUT_DATA_TX, FI_NVLINK_THROUGHPUT_DATA_RX):
                out.append(field(self.nvlink_kib))
            else:
                out.append(field(0, ret=3))
        return out


def test_field_mapping_units_and_counter_rates():
    nvml = StandInNvml()
    lines = []
    sampler = GpuSampler(gateway=NvmlGateway(lines.append, module=nvml))
    first = sampler.sample(now_ns=10 * S)[0]
    assert first.ok and first.name == 'Stand-in GPU' and first.uuid == 'GPU-0000'
    assert (first.util_percent, first.memory_bw_util_percent) == (87.0, 41.0)
    assert first.memory_used_mib == 20 * 1024 and first.memory_total_mib == 80 * 1024
    assert first.memory_used_fraction == 0.25
    assert (first.temperature_c, first.power_w, first.power_limit_w) == (55.0, 312.5, 700.0)
    assert (first.sm_clock_mhz, first.mem_clock_mhz) == (1980.0, 2619.0)
    assert first.throttle_reason_names == ('sw_power_cap', 'sw_thermal_slowdown')
    assert first.processes_mib == {42: 512.0}
    assert first.nvlink_links == 2
    assert math.isnan(first.pcie_tx_mbps) and math.isnan(first.nvlink_tx_mbps)   # rates need two samples
    nvml.pcie_tx += 50_000_000          # 50 MB in 0.5 s
    nvml.nvlink_kib += 1000             # per link: 2 links x 1000 KiB in 0.5 s
    second = sampler.sample(now_ns=10 * S + S // 2)[0]
    assert second.pcie_tx_mbps == pytest.approx(100.0)
    assert math.isnan(second.pcie_rx_mbps)                                       # this counter failed
    assert second.nvlink_tx_mbps == pytest.approx(2 * 1000 * 1024 / 0.5 / 1e6)
    assert nvml.calls.get('pcie_throughput', 0) == 0   # counters worked: the 20 ms API is never called
    # The unsupported graphics-process query is asked once, logged once.
    assert nvml.calls['graphics'] == 1 and nvml.calls['init'] == 1
    assert len([m for m in lines if 'GetGraphicsRunningProcesses' in m]) == 1


def test_index_beyond_device_count_is_nan_and_logged():
    lines = []
    sampler = GpuSampler(indices=[0, 3], gateway=NvmlGateway(lines.append, module=StandInNvml()))
    samples = sampler.sample(now_ns=0)
    assert [s.ok for s in samples] == [True, False]
    assert any('index 3' in m for m in lines)


def test_throttle_names_decode_and_sample_defaults():
    assert throttle_names(float('nan')) == ()
    assert throttle_names(0) == ()
    assert throttle_names(0x1 | 0x40 | 0x1000) == ('gpu_idle', 'hw_thermal_slowdown', 'other_0x1000')
    assert math.isnan(GpuSample(index=0).memory_used_fraction)
    with pytest.raises(ValueError, match='pcie'):
        GpuSampler(pcie='sometimes')


@pytest.mark.gpu
def test_real_gpu_reads_every_field_the_gpu_supports():
    if not nvml_present():
        pytest.skip('no NVML/GPU on this machine')
    lines = []
    sampler = GpuSampler(log=lines.append)
    first = sampler.sample()
    import time
    time.sleep(0.2)
    samples = sampler.sample()
    assert len(samples) == len(first) >= 1
    for g in samples:
        assert g.ok and g.name and g.uuid.startswith('GPU-')
        assert 0.0 <= g.util_percent <= 100.0 and 0.0 <= g.memory_bw_util_percent <= 100.0
        assert 0.0 < g.memory_used_mib < g.memory_total_mib
        assert 10.0 < g.temperature_c < 110.0
        assert 10.0 < g.power_w < 2000.0 and g.power_limit_w > 50.0
        assert g.sm_clock_mhz > 0 and g.mem_clock_mhz > 0
        assert not math.isnan(g.throttle_reasons)
        assert g.pcie_rx_mbps >= 0 and g.pcie_tx_mbps >= 0
    sampler.close()
