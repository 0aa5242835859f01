"""CPU / host memory (psutil) and GPU / GPU memory (the shared NVML gateway) utilisation during a bench run,
sampled on a thread; ros2_benchmark's *_UTILIZATION names."""
from __future__ import annotations

import math
import threading
import time


class ResourceSampler:
    """CPU / host memory (psutil) and GPU / GPU memory (NVML) utilisation, sampled on a thread."""

    def __init__(self, period_s: float = 0.1):
        import psutil

        from isaac_perf.core.telemetry.gpu import GpuSampler
        self.psutil = psutil
        self.period_s = period_s
        # The process's shared NVML gateway: no driver means no GPU fields, logged once, CPU figures kept.
        self._gpus = GpuSampler(pcie='off', processes=False)
        self._samples: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, float]:
        out = {'OVERALL_CPU_UTILIZATION': float(self.psutil.cpu_percent(interval=None)),
               'HOST_MEMORY_UTILIZATION': float(self.psutil.virtual_memory().percent)}
        gpus = [g for g in self._gpus.sample() if g.ok]
        util = [g.util_percent for g in gpus if not math.isnan(g.util_percent)]
        memory = [100.0 * g.memory_used_fraction for g in gpus if not math.isnan(g.memory_used_fraction)]
        if util and memory:  # a GPU that stops answering: keep the CPU figures
            out['DEVICE_UTILIZATION'] = float(max(util))
            out['DEVICE_MEMORY_UTILIZATION'] = float(max(memory))
        return out

    def baseline(self, seconds: float = 0.5) -> dict[str, float]:
        """Idle utilisation, before any traffic (ros2_benchmark's BASELINE_*)."""
        self.psutil.cpu_percent(interval=None)
        time.sleep(seconds)
        return self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            for k, v in self.sample().items():
                self._samples.setdefault(k, []).append(v)

    def start(self) -> None:
        self._samples = {}
        self._stop.clear()
        self.psutil.cpu_percent(interval=None)  # the next call measures from now
        self._thread = threading.Thread(target=self._run, name='bench-resources', daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, list[float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self._samples

    def close(self) -> None:
        self._gpus.close()
