"""GPU telemetry through NVML (nvidia-ml-py, imported as `pynvml`); never shells out to nvidia-smi.

Shape (after nvitop): one gateway object owns NVML. It initialises lazily on the first sample, turns every
NVML failure into a NaN sentinel instead of an exception, logs each distinct fault once, remembers which
queries a GPU does not support (so they are not retried every sample), and caches static fields (name,
UUID, total memory, power limit, NVLink link count).

Counter-based rates (PCIe and NVLink bytes) need two samples: the first sample reports NaN for them.
Without a driver, without NVML or without GPUs, `sample()` returns NaN-filled samples for explicitly
requested GPU indices and an empty list when all GPUs were asked for.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NAN = float('nan')
MIB = 1024 * 1024

# NVML clock-event ("throttle") reason bits, as documented for nvmlDeviceGetCurrentClocksEventReasons.
THROTTLE_REASONS = {
    0x1: 'gpu_idle',
    0x2: 'applications_clocks_setting',
    0x4: 'sw_power_cap',
    0x8: 'hw_slowdown',
    0x10: 'sync_boost',
    0x20: 'sw_thermal_slowdown',
    0x40: 'hw_thermal_slowdown',
    0x80: 'hw_power_brake_slowdown',
    0x100: 'display_clock_setting',
}

# Field ids (nvmlDeviceGetFieldValues), spelled out so this module imports without pynvml present.
FI_NVLINK_LINK_COUNT = 91
FI_NVLINK_THROUGHPUT_DATA_TX = 138   # KiB, cumulative, scoped per link
FI_NVLINK_THROUGHPUT_DATA_RX = 139
FI_PCIE_COUNT_TX_BYTES = 197         # bytes, cumulative
FI_PCIE_COUNT_RX_BYTES = 198
ERROR_NOT_SUPPORTED = 3

PCIE_MODES = ('auto', 'counters', 'throughput', 'off')


def _sum_answered(values: Sequence[float]) -> float:
    answered = [v for v in values if not math.isnan(v)]
    return math.fsum(answered) if answered else NAN


def throttle_names(mask: float) -> tuple[str, ...]:
    """Decode a clock-event bitmask into reason names (empty for NaN or 0)."""
    if mask is None or math.isnan(mask):
        return ()
    bits = int(mask)
    names = [name for bit, name in THROTTLE_REASONS.items() if bits & bit]
    unknown = bits & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f'other_0x{unknown:x}')
    return tuple(names)


@dataclass
class GpuSample:
    """One GPU at one instant. Floats are NaN where NVML could not tell."""
    index: int
    name: str = ''
    uuid: str = ''
    ok: bool = False                   # False: NVML or this GPU unavailable; every number is NaN
    util_percent: float = NAN          # SM busy time over NVML's last sample period
    memory_used_mib: float = NAN
    memory_total_mib: float = NAN
    memory_bw_util_percent: float = NAN  # memory controller busy time (NVML "memory" utilization)
    temperature_c: float = NAN
    power_w: float = NAN
    power_limit_w: float = NAN
    sm_clock_mhz: float = NAN
    mem_clock_mhz: float = NAN
    throttle_reasons: float = NAN      # bitmask, see THROTTLE_REASONS
    pcie_rx_mbps: float = NAN          # MB/s (1e6 bytes per second)
    pcie_tx_mbps: float = NAN
    nvlink_rx_mbps: float = NAN        # summed over links; NaN when the GPU has no NVLink
    nvlink_tx_mbps: float = NAN
    nvlink_links: int = 0
    processes_mib: dict[int, float] = field(default_factory=dict)  # pid -> GPU memory (MiB)

    @property
    def memory_used_fraction(self) -> float:
        if math.isnan(self.memory_used_mib) or not self.memory_total_mib:
            return NAN
        return self.memory_used_mib / self.memory_total_mib

    @property
    def throttle_reason_names(self) -> tuple[str, ...]:
        return throttle_names(self.throttle_reasons)


@dataclass
class _GpuStatic:
    handle: Any
    name: str
    uuid: str
    memory_total_mib: float
    power_limit_w: float
    nvlink_links: int


class NvmlGateway:
    """The single owner of NVML in a process: lazy init, NaN on failure, each distinct fault logged once."""

    def __init__(self, log: Callable[[str], None] | None = None, module: Any = None):
        self._log = log or logging.getLogger('isaac_perf.gpu').warning
        self._module = module
        self._state: bool | None = None   # None: not tried yet; True: initialised; False: unavailable
        self._logged: set[str] = set()
        self._unsupported: set[tuple[str, int]] = set()
        self.faults = 0

    @property
    def nvml(self) -> Any:
        return self._module

    def set_log(self, log: Callable[[str], None]) -> None:
        self._log = log

    def log_once(self, key: str, message: str) -> None:
        self.faults += 1
        if key not in self._logged:
            self._logged.add(key)
            self._log(message)

    def available(self) -> bool:
        """Initialise NVML on first use; False (after one log line) when there is no driver or library."""
        if self._state is None:
            try:
                if self._module is None:
                    import pynvml  # nvidia-ml-py
                    self._module = pynvml
                self._module.nvmlInit()
                self._state = True
            except ImportError:
                self._state = False
                self.log_once('import', 'GPU metrics disabled: nvidia-ml-py is not installed '
                                        '(pip install nvidia-ml-py); GPU fields read NaN')
            except Exception as exc:  # NVMLError subclasses: no library, no driver, no permission
                self._state = False
                self.log_once('init', f'GPU metrics disabled: NVML could not start ({exc}); '
                                      'is the NVIDIA driver installed and a GPU visible? GPU fields read NaN')
        return self._state

    def call(self, name: str, scope: int, *args, default: Any = NAN) -> Any:
        """Call `pynvml.<name>(*args)`; on failure return `default` and log the fault once.

        `scope` (a GPU index, -1 for none) keys the memory of unsupported queries, which are not retried.
        """
        if not self.available() or (name, scope) in self._unsupported:
            return default
        try:
            return getattr(self._module, name)(*args)
        except Exception as exc:
            if getattr(exc, 'value', None) == ERROR_NOT_SUPPORTED:
                self._unsupported.add((name, scope))
                self.log_once(f'{name}:unsupported:{scope}',
                              f'GPU {scope}: {name} is not supported; its fields read NaN')
            else:
                self.log_once(f'{name}:{type(exc).__name__}:{exc}',
                              f'GPU {scope}: {name} failed ({exc}); its fields read NaN until it recovers')
            return default

    def field_values(self, scope: int, handle: Any, fields: Sequence) -> list[float]:
        """Values of NVML field ids (or (id, scope id) pairs); NaN for each one NVML does not return."""
        raw = self.call('nvmlDeviceGetFieldValues', scope, handle, list(fields), default=None)
        if raw is None:
            return [NAN] * len(fields)
        values = []
        for item in raw:
            if item.nvmlReturn != 0:
                values.append(NAN)
                continue
            kind = item.valueType
            union = item.value
            values.append(float({0: union.dVal, 1: union.uiVal, 2: union.ulVal, 3: union.ullVal,
                                 4: union.sllVal, 5: union.siVal, 6: union.usVal}.get(kind, NAN)))
        return values

    def shutdown(self) -> None:
        if self._state:
            try:
                self._module.nvmlShutdown()
            except Exception:
                pass
        self._state = None


_shared_gateway: NvmlGateway | None = None
_shared_lock = threading.Lock()


def shared_gateway(log: Callable[[str], None] | None = None) -> NvmlGateway:
    """The process's one NVML gateway, created on first use (NVML itself starts on the first call).

    Every NVML user in the package goes through it, so NVML is initialised once, each distinct fault is
    logged once per process and unsupported queries are remembered across users. `log`, when given,
    becomes where later faults are written (a node passes its logger); the faults already logged stay
    logged. Never shut down by its users: NVML stays up until the process exits.
    """
    global _shared_gateway
    with _shared_lock:
        if _shared_gateway is None:
            _shared_gateway = NvmlGateway(log)
        elif log is not None:
            _shared_gateway.set_log(log)
        return _shared_gateway


def gpu_count(gateway: NvmlGateway | None = None) -> int:
    """GPUs NVML sees; 0 without a driver, NVML or GPUs (never raises)."""
    return int((gateway or shared_gateway()).call('nvmlDeviceGetCount', -1, default=0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_inventory(gateway: NvmlGateway | None = None) -> list[dict[str, Any]]:
    """Index, name, total memory (MiB) and driver of each GPU; [] without NVML or GPUs (never raises)."""
    gw = gateway or shared_gateway()
    driver = _text(gw.call('nvmlSystemGetDriverVersion', -1, default=''))
    gpus = []
    for i in range(gpu_count(gw)):
        handle = gw.call('nvmlDeviceGetHandleByIndex', i, i, default=None)
        if handle is None:
            continue
        memory = gw.call('nvmlDeviceGetMemoryInfo', i, handle, default=None)
        gpus.append({'index': i, 'name': _text(gw.call('nvmlDeviceGetName', i, handle, default='')),
                     'memory_mib': int(memory.total) // MIB if memory is not None else 0, 'driver': driver})
    return gpus


class GpuSampler:
    """Samples every requested GPU; one NVML call per quantity per GPU.

    `indices`: GPU indices to sample, or None for all GPUs. `gateway`: the NVML gateway (default: the
    process's shared one, `shared_gateway(log)`); `close` shuts down only a gateway passed in. `pcie`:
    'auto' reads the cumulative PCIe byte counters and falls back to nvmlDeviceGetPcieThroughput (which
    blocks about 20 ms per direction inside NVML); 'counters' or 'throughput' force one way; 'off' skips
    PCIe.
    """

    def __init__(self, indices: Sequence[int] | None = None, log: Callable[[str], None] | None = None,
                 gateway: NvmlGateway | None = None, pcie: str = 'auto', processes: bool = True,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        if pcie not in PCIE_MODES:
            raise ValueError(f'pcie={pcie!r}: use one of {", ".join(PCIE_MODES)}')
        self._owns_gateway = gateway is not None
        self.gateway = gateway or shared_gateway(log)
        self.indices = None if indices is None else [int(i) for i in indices]
        self.pcie = pcie
        self.processes = processes
        self._clock_ns = clock_ns
        self._static: dict[int, _GpuStatic | None] = {}
        self._counters: dict[tuple[int, str], tuple[int, float]] = {}
        self._device_count: int | None = None

    def device_count(self) -> int:
        if self._device_count is None:
            count = self.gateway.call('nvmlDeviceGetCount', -1, default=0)
            self._device_count = int(count)
        return self._device_count

    def _selected(self) -> list[int]:
        if self.indices is not None:
            return self.indices
        return list(range(self.device_count()))

    def _static_for(self, index: int) -> _GpuStatic | None:
        if index in self._static:
            return self._static[index]
        gw = self.gateway
        static = None
        if index < self.device_count():
            handle = gw.call('nvmlDeviceGetHandleByIndex', index, index, default=None)
            if handle is not None:
                name = gw.call('nvmlDeviceGetName', index, handle, default='')
                uuid = gw.call('nvmlDeviceGetUUID', index, handle, default='')
                memory = gw.call('nvmlDeviceGetMemoryInfo', index, handle, default=None)
                limit_mw = gw.call('nvmlDeviceGetEnforcedPowerLimit', index, handle)
                links = gw.field_values(index, handle, [FI_NVLINK_LINK_COUNT])[0]
                static = _GpuStatic(
                    handle=handle, name=_text(name), uuid=_text(uuid),
                    memory_total_mib=memory.total / MIB if memory is not None else NAN,
                    power_limit_w=limit_mw / 1000.0,
                    nvlink_links=0 if math.isnan(links) else int(links))
        elif self.gateway.available():
            self.gateway.log_once(f'index:{index}', f'GPU index {index} requested but only '
                                                    f'{self.device_count()} GPU(s) found; it reads NaN')
        self._static[index] = static
        return static

    def _rate(self, index: int, key: str, now_ns: int, counter: float, scale: float) -> float:
        """MB/s from a cumulative counter (`scale` converts one counter unit to bytes)."""
        if math.isnan(counter):
            return NAN
        previous = self._counters.get((index, key))
        self._counters[(index, key)] = (now_ns, counter)
        if previous is None or now_ns <= previous[0] or counter < previous[1]:
            return NAN
        return (counter - previous[1]) * scale / ((now_ns - previous[0]) / 1e9) / 1e6

    def sample(self, now_ns: int | None = None) -> list[GpuSample]:
        """One sample of every selected GPU (see the module docstring for the no-GPU behaviour)."""
        now_ns = self._clock_ns() if now_ns is None else now_ns
        if not self.gateway.available():
            return [GpuSample(index=i) for i in (self.indices or [])]
        return [self._sample_one(i, now_ns) for i in self._selected()]

    def _sample_one(self, index: int, now_ns: int) -> GpuSample:
        static = self._static_for(index)
        if static is None:
            return GpuSample(index=index)
        gw, h = self.gateway, static.handle
        nvml = gw.nvml
        s = GpuSample(index=index, name=static.name, uuid=static.uuid, ok=True,
                      memory_total_mib=static.memory_total_mib, power_limit_w=static.power_limit_w,
                      nvlink_links=static.nvlink_links)
        util = gw.call('nvmlDeviceGetUtilizationRates', index, h, default=None)
        if util is not None:
            s.util_percent, s.memory_bw_util_percent = float(util.gpu), float(util.memory)
        memory = gw.call('nvmlDeviceGetMemoryInfo', index, h, default=None)
        if memory is not None:
            s.memory_used_mib = memory.used / MIB
        s.temperature_c = float(gw.call('nvmlDeviceGetTemperature', index, h, 0))  # 0: NVML_TEMPERATURE_GPU
        s.power_w = gw.call('nvmlDeviceGetPowerUsage', index, h) / 1000.0
        s.sm_clock_mhz = float(gw.call('nvmlDeviceGetClockInfo', index, h, 1))    # 1: NVML_CLOCK_SM
        s.mem_clock_mhz = float(gw.call('nvmlDeviceGetClockInfo', index, h, 2))   # 2: NVML_CLOCK_MEM
        reasons_fn = ('nvmlDeviceGetCurrentClocksEventReasons'
                      if hasattr(nvml, 'nvmlDeviceGetCurrentClocksEventReasons')
                      else 'nvmlDeviceGetCurrentClocksThrottleReasons')
        s.throttle_reasons = float(gw.call(reasons_fn, index, h))
        self._sample_pcie(s, h, now_ns)
        if static.nvlink_links > 0:
            fields = [(f, link) for f in (FI_NVLINK_THROUGHPUT_DATA_TX, FI_NVLINK_THROUGHPUT_DATA_RX)
                      for link in range(static.nvlink_links)]
            values = gw.field_values(index, h, fields)
            n = static.nvlink_links
            tx, rx = values[:n], values[n:]
            # A link that is down reports an error: sum the links that answered, NaN if none did.
            s.nvlink_tx_mbps = self._rate(index, 'nvlink_tx', now_ns, _sum_answered(tx), 1024.0)
            s.nvlink_rx_mbps = self._rate(index, 'nvlink_rx', now_ns, _sum_answered(rx), 1024.0)
        if self.processes:
            for fn in ('nvmlDeviceGetComputeRunningProcesses', 'nvmlDeviceGetGraphicsRunningProcesses'):
                for proc in gw.call(fn, index, h, default=[]) or []:
                    used = getattr(proc, 'usedGpuMemory', None)
                    s.processes_mib[int(proc.pid)] = NAN if used is None else used / MIB
        return s

    def _sample_pcie(self, s: GpuSample, handle: Any, now_ns: int) -> None:
        if self.pcie == 'off':
            return
        index, gw = s.index, self.gateway
        if self.pcie in ('auto', 'counters') and (index, 'pcie_counters_missing') not in self._counters:
            tx, rx = gw.field_values(index, handle, [FI_PCIE_COUNT_TX_BYTES, FI_PCIE_COUNT_RX_BYTES])
            if not (math.isnan(tx) and math.isnan(rx)):
                s.pcie_tx_mbps = self._rate(index, 'pcie_tx', now_ns, tx, 1.0)
                s.pcie_rx_mbps = self._rate(index, 'pcie_rx', now_ns, rx, 1.0)
                return
            # Remember that this GPU has no PCIe byte counters, so they are not asked for again.
            self._counters[(index, 'pcie_counters_missing')] = (0, 0.0)
        if self.pcie in ('auto', 'throughput'):
            # NVML_PCIE_UTIL_TX_BYTES = 0, NVML_PCIE_UTIL_RX_BYTES = 1; values in KB/s.
            s.pcie_tx_mbps = gw.call('nvmlDeviceGetPcieThroughput', index, handle, 0) / 1000.0
            s.pcie_rx_mbps = gw.call('nvmlDeviceGetPcieThroughput', index, handle, 1) / 1000.0

    def close(self) -> None:
        # The shared gateway outlives any one sampler: others in this process may still be using it.
        if self._owns_gateway:
            self.gateway.shutdown()
        self._static.clear()
        self._device_count = None
