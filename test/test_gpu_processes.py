"""Per-process GPU use of the pipeline's nodes: pids from the nodes themselves or their process names,
NVML per-process memory and utilization (stand-in NVML here; the `gpu` test reads the real one)."""
import math
import os
import types

import pytest

from isaac_perf.core.telemetry.gpu import NvmlGateway
from isaac_perf.core.telemetry.gpu_processes import (
    GpuProcess,
    GpuProcessSampler,
    match_node_pids,
    node_gpu_use,
)

MIB = 1024 * 1024


class NvmlError(Exception):
    def __init__(self, value):
        super().__init__(f'NVML error {value}')
        self.value = value


class StandInNvml:
    def __init__(self):
        self.samples = [types.SimpleNamespace(pid=101, timeStamp=10, smUtil=40, memUtil=10),
                        types.SimpleNamespace(pid=101, timeStamp=20, smUtil=60, memUtil=30),
                        types.SimpleNamespace(pid=202, timeStamp=15, smUtil=5, memUtil=1)]
        self.asked = []

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [types.SimpleNamespace(pid=101, usedGpuMemory=512 * MIB),
                types.SimpleNamespace(pid=303, usedGpuMemory=None)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return []

    def nvmlDeviceGetProcessUtilization(self, h, last_seen):
        self.asked.append(last_seen)
        fresh = [s for s in self.samples if s.timeStamp > last_seen]
        if not fresh:
            raise NvmlError(6)    # NOT_FOUND: nothing since last_seen
        return fresh


def test_memory_and_utilization_per_pid_since_the_last_call():
    nvml, lines = StandInNvml(), []
    sampler = GpuProcessSampler(NvmlGateway(log=lines.append, module=nvml))
    first = {p.pid: p for p in sampler.sample()}
    assert first[101] == GpuProcess(101, 0, 512.0, 50.0, 20.0)
    assert math.isnan(first[202].memory_mib) and first[202].sm_util_percent == 5.0
    assert math.isnan(first[303].memory_mib) and first[303].sm_util_percent == 0.0
    second = {p.pid: p for p in sampler.sample()}   # no sample since timestamp 20: idle, not a fault
    assert nvml.asked == [0, 20] and second[101].sm_util_percent == 0.0 and lines == []


def test_unsupported_utilization_reads_nan_and_logs_once():
    nvml, lines = StandInNvml(), []

    def unsupported(h, last_seen):
        raise NvmlError(3)
    nvml.nvmlDeviceGetProcessUtilization = unsupported
    sampler = GpuProcessSampler(NvmlGateway(log=lines.append, module=nvml))
    for _ in range(3):
        procs = {p.pid: p for p in sampler.sample()}
    assert procs[101].memory_mib == 512.0 and math.isnan(procs[101].sm_util_percent)
    assert len(lines) == 1 and 'per-process utilization unavailable' in lines[0]


def test_node_pids_stated_first_then_by_process_name_never_by_substring():
    processes = [
        (11, 'python3', ['/usr/bin/python3', '/ws/lib/isaac_perf/inference_node', '--ros-args']),
        (12, 'camera_driver', ['/opt/ros/lib/camera/camera_driver', '--ros-args', '-r',
                               '__node:=front_cam']),
        (13, 'stream_batcher', ['/ws/lib/isaac_perf/stream_batcher']),
        (14, 'python', ['python', 'train.py', '--name', 'perf_monitor_inference_node']),  # someone else's
    ]
    found = match_node_pids(['inference_node', 'front_cam', 'stream_batcher', 'perf_monitor', 'lidar'],
                            stated={'inference_node': 4242, 'perf_monitor': os.getpid()},
                            processes=processes)
    assert found == {'inference_node': (4242, 'diagnostics'), 'perf_monitor': (os.getpid(), 'diagnostics'),
                     'front_cam': (12, 'process name'), 'stream_batcher': (13, 'process name')}


def test_node_gpu_use_sums_a_process_over_its_gpus():
    procs = [GpuProcess(4242, 0, 1000.0, 30.0, 5.0), GpuProcess(4242, 1, 24.0, 2.0, 1.0),
             GpuProcess(999, 0, 8000.0, 90.0, 50.0)]     # not the pipeline's
    use = node_gpu_use({'inference_node': (4242, 'diagnostics'), 'image_source': (77, 'process name')},
                       procs)
    assert [(u.node, u.memory_mib, u.sm_util_percent, u.gpus) for u in use] == [
        ('image_source', 0.0, 0.0, ()), ('inference_node', 1024.0, 32.0, (0, 1))]


@pytest.mark.gpu
def test_this_process_is_seen_on_the_gpu_it_uses():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    x = torch.randn(4096, 4096, device='cuda')
    for _ in range(50):
        x = x @ x / 4096
    torch.cuda.synchronize()
    procs = GpuProcessSampler(NvmlGateway()).sample()
    mine = [p for p in procs if p.pid == os.getpid()]
    assert mine and mine[0].memory_mib > 64.0, procs
    use = node_gpu_use(match_node_pids(['me'], {'me': os.getpid()}, []), procs)
    assert use[0].memory_mib > 64.0 and use[0].gpus
