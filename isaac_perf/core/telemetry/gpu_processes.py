"""GPU memory and utilization of the pipeline's own processes, matched by the pids of this graph's nodes.

NVML answers per process id: `nvmlDeviceGetComputeRunningProcesses` (and the graphics list) gives each
pid's GPU memory, `nvmlDeviceGetProcessUtilization(handle, last_seen)` each pid's SM and memory-controller
utilization samples since `last_seen` (NVML keeps a short history; no sample since then is "not found",
which here means 0%, not a fault).

Which pids are the pipeline's: ROS has no pid query, so (1) every isaac_perf node states its pid in its
diagnostics values (`pid`, with `node`), which the monitor reads off /diagnostics; (2) for nodes that do not
(camera drivers, third-party nodes), a local process is matched to a node name of this graph when its
command line carries `__node:=<name>` or its executable is named like the node. Never by substrings of
command lines host-wide: another user's `python train.py` on the same GPU is not the pipeline.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from isaac_perf.core.telemetry.gpu import ERROR_NOT_SUPPORTED, MIB, NvmlGateway

NAN = float('nan')
NOT_FOUND = 6       # NVML_ERROR_NOT_FOUND: no utilization sample since the timestamp asked for


@dataclass(frozen=True)
class GpuProcess:
    """One process on one GPU."""
    pid: int
    gpu_index: int
    memory_mib: float = NAN
    sm_util_percent: float = NAN    # mean of NVML's samples since the previous call; 0 when none came
    mem_util_percent: float = NAN


class GpuProcessSampler:
    """Per-process GPU memory and utilization of the requested GPUs through the shared NVML gateway."""

    def __init__(self, gateway: NvmlGateway, indices: Sequence[int] | None = None):
        self.gateway = gateway
        self.indices = None if indices is None else [int(i) for i in indices]
        self._last_seen: dict[int, int] = {}      # GPU index -> newest sample timestamp (us)
        self._no_utilization: set[int] = set()

    def _selected(self) -> list[int]:
        if self.indices is not None:
            return self.indices
        return list(range(int(self.gateway.call('nvmlDeviceGetCount', -1, default=0))))

    def sample(self) -> list[GpuProcess]:
        if not self.gateway.available():
            return []
        out = []
        for index in self._selected():
            handle = self.gateway.call('nvmlDeviceGetHandleByIndex', index, index, default=None)
            if handle is not None:
                out.extend(self._sample_gpu(index, handle))
        return out

    def _sample_gpu(self, index: int, handle) -> list[GpuProcess]:
        gw = self.gateway
        memory: dict[int, float] = {}
        for fn in ('nvmlDeviceGetComputeRunningProcesses', 'nvmlDeviceGetGraphicsRunningProcesses'):
            for proc in gw.call(fn, index, handle, default=[]) or []:
                used = getattr(proc, 'usedGpuMemory', None)
                memory[int(proc.pid)] = NAN if used is None else used / MIB
        util = self._utilization(index, handle)
        idle = (NAN, NAN) if util is None else (0.0, 0.0)
        util = util or {}
        return [GpuProcess(pid, index, memory.get(pid, NAN), *util.get(pid, idle))
                for pid in sorted(memory.keys() | util.keys())]

    def _utilization(self, index: int, handle) -> dict[int, tuple[float, float]] | None:
        """pid -> (mean SM util, mean memory util) over NVML's samples since the previous call; None when
        NVML cannot tell."""
        if index in self._no_utilization:
            return None
        try:
            samples = self.gateway.nvml.nvmlDeviceGetProcessUtilization(handle, self._last_seen.get(index, 0))
        except Exception as exc:
            code = getattr(exc, 'value', None)
            if code in (0, NOT_FOUND):       # no sample since last time: the processes were idle
                return {}
            if code == ERROR_NOT_SUPPORTED:
                self._no_utilization.add(index)
            self.gateway.log_once(f'process_util:{index}:{code}', f'GPU {index}: per-process utilization '
                                  f'unavailable ({exc}); process SM utilization reads NaN')
            return None
        sums: dict[int, list[float]] = {}
        for s in samples or []:
            acc = sums.setdefault(int(s.pid), [0.0, 0.0, 0])
            acc[0] += s.smUtil
            acc[1] += s.memUtil
            acc[2] += 1
            self._last_seen[index] = max(self._last_seen.get(index, 0), int(s.timeStamp))
        return {pid: (a[0] / a[2], a[1] / a[2]) for pid, a in sums.items()}


@dataclass(frozen=True)
class NodeGpuUse:
    """The GPU use of one node of the graph (its process, summed over GPUs)."""
    node: str
    pid: int
    pid_source: str                 # 'diagnostics' (the node said) or 'process name'
    memory_mib: float
    sm_util_percent: float
    gpus: tuple[int, ...]


def match_node_pids(node_names: Iterable[str], stated: Mapping[str, int],
                    processes: Iterable[tuple[int, str, Sequence[str]]],
                    host_pid: int | None = None) -> dict[str, tuple[int, str]]:
    """node name -> (pid, how it was found) for the nodes of this graph.

    `stated`: node -> pid the nodes published themselves (diagnostics `pid`), used as given. `processes`:
    (pid, name, cmdline) of local processes, matched for the remaining nodes: `__node:=<name>` in the
    command line, else an executable (process name or argv[0]'s base name) equal to the node name.
    `host_pid`: this process's pid, reported for nodes that live here (composed in one process).
    """
    names = list(dict.fromkeys(node_names))
    found = {n: (int(stated[n]), 'diagnostics') for n in names if n in stated}
    rest = [n for n in names if n not in found]
    if not rest:
        return found
    by_remap: dict[str, int] = {}
    by_exe: dict[str, int] = {}
    for pid, name, cmdline in processes:
        for arg in cmdline:
            if arg.startswith('__node:=') or arg.startswith('__name:='):
                by_remap.setdefault(arg.split(':=', 1)[1], pid)
        exe = os.path.basename(cmdline[0]) if cmdline else ''
        for key in {name, exe} - {''}:
            by_exe.setdefault(key, pid)
    for n in rest:
        if n in by_remap:
            found[n] = (by_remap[n], 'process name')
        elif n in by_exe:
            found[n] = (by_exe[n], 'process name')
    return found


def node_gpu_use(node_pids: Mapping[str, tuple[int, str]], procs: Sequence[GpuProcess]) -> list[NodeGpuUse]:
    """GPU memory and SM utilization per node (summed over the GPUs its process uses), nodes sorted."""
    by_pid: dict[int, list[GpuProcess]] = {}
    for p in procs:
        by_pid.setdefault(p.pid, []).append(p)
    out = []
    for node in sorted(node_pids):
        pid, source = node_pids[node]
        mine = by_pid.get(pid, [])
        memory = [p.memory_mib for p in mine if not math.isnan(p.memory_mib)]
        util = [p.sm_util_percent for p in mine if not math.isnan(p.sm_util_percent)]
        out.append(NodeGpuUse(node, pid, source, math.fsum(memory) if memory else (0.0 if not mine else NAN),
                              math.fsum(util) if util else (0.0 if not mine else NAN),
                              tuple(sorted({p.gpu_index for p in mine}))))
    return out
