"""Cost of one GPU sample through NVML (isaac_perf's GpuSampler) vs one `nvidia-smi --query-gpu` call.

Same run, same GPU(s): the median wall time of
- `GpuSampler.sample()` with every field (utilization, memory, memory-bandwidth utilization, temperature,
  power, clocks, throttle reasons, PCIe counters, NVLink counters, per-process memory), 'counters' PCIe;
- the same with pcie='throughput' (nvmlDeviceGetPcieThroughput, which samples inside NVML for ~20 ms);
- a minimal 5-field NVML read (utilization, memory, temperature) as the floor of the binding;
- `nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw
  --format=csv,noheader,nounits`, the subprocess GPUtil-style monitors run every period.
It also prints one full sample, so the fields the GPU supports are visible. Without NVML it says so and
writes a JSON file that records the absence.

    python3 benchmarks/gpu_sampler.py [--samples 300] [--smi-calls 30] [--out results/gpu_sampler.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isaac_perf.core.telemetry.gpu import GpuSampler  # noqa: E402
from isaac_perf.core.telemetry.stats import percentile  # noqa: E402

SMI_QUERY = 'utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw'


def median_ms(fn, n: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return {'median_ms': percentile(times, 50), 'p90_ms': percentile(times, 90), 'min_ms': min(times), 'n': n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--samples', type=int, default=300)
    parser.add_argument('--smi-calls', type=int, default=30)
    parser.add_argument('--out', default='results/gpu_sampler.json')
    args = parser.parse_args()
    result: dict = {'benchmark': 'gpu_sampler', 'date': time.strftime('%Y-%m-%d %H:%M:%S'),
                    'machine': {'platform': platform.platform(), 'python': platform.python_version()}}
    log: list[str] = []
    sampler = GpuSampler(pcie='counters', log=log.append)
    if not sampler.gateway.available():
        print(f'NVML unavailable: {log[0] if log else "unknown reason"}')
        result['nvml_available'] = False
        result['log'] = log
    else:
        result['nvml_available'] = True
        sampler.sample()
        time.sleep(0.2)
        samples = sampler.sample()
        result['gpus'] = [{**dataclasses.asdict(s), 'memory_used_fraction': s.memory_used_fraction,
                           'throttle_reason_names': list(s.throttle_reason_names),
                           'processes_mib': {str(k): v for k, v in s.processes_mib.items()}}
                          for s in samples]
        unsupported = {g['index']: [k for k, v in g.items() if isinstance(v, float) and math.isnan(v)]
                       for g in result['gpus']}
        result['fields_nan'] = unsupported
        result['log'] = log
        print(f'{len(samples)} GPU(s); one full sample:')
        for g in result['gpus']:
            for key, value in g.items():
                print(f'  gpu{g["index"]}.{key} = {value}')
        print(f'fields NaN (not supported / need two samples): {unsupported}')
        timings = {'nvml_all_fields_counters': median_ms(sampler.sample, args.samples)}
        throughput = GpuSampler(pcie='throughput', gateway=sampler.gateway)
        timings['nvml_all_fields_pcie_throughput_api'] = median_ms(throughput.sample,
                                                                   max(10, args.samples // 20))
        nvml = sampler.gateway.nvml
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

        def five_fields():
            for h in handles:
                nvml.nvmlDeviceGetUtilizationRates(h)
                nvml.nvmlDeviceGetMemoryInfo(h)
                nvml.nvmlDeviceGetTemperature(h, 0)
        timings['nvml_5_fields'] = median_ms(five_fields, args.samples)
        result['timings'] = timings
    smi = shutil.which('nvidia-smi')
    if smi:
        cmd = [smi, f'--query-gpu={SMI_QUERY}', '--format=csv,noheader,nounits']
        result.setdefault('timings', {})['nvidia_smi_subprocess'] = median_ms(
            lambda: subprocess.run(cmd, capture_output=True, check=True), args.smi_calls, warmup=2)
        result['nvidia_smi_output'] = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    timings = result.get('timings', {})
    if timings:
        print(f'\n{"method":<40}{"median ms":>12}{"p90 ms":>10}{"n":>6}')
        for name, t in timings.items():
            print(f'{name:<40}{t["median_ms"]:>12.4f}{t["p90_ms"]:>10.4f}{t["n"]:>6}')
    if 'nvidia_smi_subprocess' in timings and 'nvml_all_fields_counters' in timings:
        result['ratio_smi_over_nvml_all_fields'] = (timings['nvidia_smi_subprocess']['median_ms']
                                                    / timings['nvml_all_fields_counters']['median_ms'])
        result['ratio_smi_over_nvml_5_fields'] = (timings['nvidia_smi_subprocess']['median_ms']
                                                  / timings['nvml_5_fields']['median_ms'])
        print(f'\nnvidia-smi call / full NVML sample: {result["ratio_smi_over_nvml_all_fields"]:.0f}x; '
              f'/ 5-field NVML read: {result["ratio_smi_over_nvml_5_fields"]:.0f}x')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
