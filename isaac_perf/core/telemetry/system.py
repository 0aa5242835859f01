"""Host telemetry through psutil: CPU (total and per core), memory, and CPU/RSS of the pipeline's processes.

psutil's CPU percentages are "since the previous call", so the sampler is meant to be called on a fixed
period; the first call primes the counters and reports 0 for CPU. Process lookup (a scan of every process)
is the expensive part, so it runs only every `rescan_s` seconds; between scans the known processes are
re-read directly.

A process pattern matches a process when it equals the process id (`pid:1234` or `1234`), or is a
substring of one of the names the process runs under: its process name, its program (argv[0]), the
script or `-m` module a Python interpreter runs, and a `__node:=` remapping (e.g. `perf_monitor` matches
`python3 .../lib/isaac_perf/perf_monitor --ros-args ...`). The rest of the command line is not searched:
an editor or a test runner with `qos_tuner` among its arguments is not a qos_tuner.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

NAN = float('nan')
MIB = 1024 * 1024
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class ProcessGroup:
    """The processes matching one pattern, summed."""
    pattern: str
    pids: tuple[int, ...] = ()
    cpu_percent: float = NAN   # 100 = one full core
    rss_mib: float = NAN

    @property
    def count(self) -> int:
        return len(self.pids)


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float                       # all cores, 0-100
    per_core_percent: tuple[float, ...]
    memory_percent: float
    memory_used_mib: float
    memory_total_mib: float
    load_1m: float
    processes: dict[str, ProcessGroup] = field(default_factory=dict)

    @property
    def cpu_max_core_percent(self) -> float:
        return max(self.per_core_percent, default=NAN)


def pattern_error(patterns: Sequence[str]) -> str:
    """'' when every pattern is usable, else what is wrong with the first bad one."""
    for pattern in patterns:
        if pattern.startswith('pid:') and not pattern[4:].isdigit():
            return (f'process_patterns entry {pattern!r}: pid: must be followed by a process id '
                    '(pid:1234); to match by name drop the pid: prefix')
    return ''


def run_names(name: str, argv: Sequence[str]) -> list[str]:
    """The names a process runs under (see the module docstring), from its name and argv."""
    names = [name]
    if argv:
        names.append(os.path.basename(argv[0]))
        if 'python' in os.path.basename(argv[0]):
            rest = list(argv[1:])
            while rest and rest[0].startswith('-') and rest[0] != '-m':
                rest.pop(0)
            if rest[:1] == ['-m'] and len(rest) > 1:
                names += [rest[1], rest[1].rsplit('.', 1)[-1]]
            elif rest:
                names.append(os.path.basename(rest[0]))
        names += [a.split(':=', 1)[1] for a in argv if a.startswith('__node:=')]
    return [n for n in names if n]


def _pid_pattern(pattern: str) -> int | None:
    text = pattern[4:] if pattern.startswith('pid:') else pattern
    return int(text) if text.isdigit() else None


class SystemSampler:
    def __init__(self, patterns: Sequence[str] = (), rescan_s: float = 5.0, exclude_self: bool = False):
        self.patterns = [p for p in patterns if p]
        self.rescan_s = rescan_s
        self.exclude_self = exclude_self
        self._procs: dict[int, psutil.Process] = {}
        self._matches: dict[str, list[int]] = {p: [] for p in self.patterns}
        self._last_scan_ns: int | None = None
        psutil.cpu_percent(percpu=True)   # prime the since-last-call counters
        psutil.cpu_percent()

    def set_patterns(self, patterns: Sequence[str]) -> None:
        self.patterns = [p for p in patterns if p]
        self._matches = {p: [] for p in self.patterns}
        self._last_scan_ns = None

    def _matches_pattern(self, pattern: str, proc: psutil.Process, cmdline: list[str]) -> bool:
        pid = _pid_pattern(pattern)
        if pid is not None:
            return proc.pid == pid
        return any(pattern in name for name in run_names(proc.info['name'] or '', cmdline))

    def _scan(self) -> None:
        """Find the processes matching each pattern (expensive: reads every process once)."""
        matches: dict[str, list[int]] = {p: [] for p in self.patterns}
        me = os.getpid()
        for proc in psutil.process_iter(['name', 'cmdline']):
            if self.exclude_self and proc.pid == me:
                continue
            cmdline = list(proc.info['cmdline'] or ())
            for pattern in self.patterns:
                if self._matches_pattern(pattern, proc, cmdline):
                    matches[pattern].append(proc.pid)
                    if proc.pid not in self._procs:
                        self._procs[proc.pid] = proc
                        proc.cpu_percent(None)   # prime; the next read covers the time since now
        self._matches = matches
        wanted = {pid for pids in matches.values() for pid in pids}
        for pid in [pid for pid in self._procs if pid not in wanted]:
            del self._procs[pid]

    def sample(self, now_ns: int) -> SystemSample:
        if self.patterns and (self._last_scan_ns is None
                              or now_ns - self._last_scan_ns >= self.rescan_s * NS_PER_S):
            self._scan()
            self._last_scan_ns = now_ns
        per_core = tuple(float(v) for v in psutil.cpu_percent(percpu=True))
        memory = psutil.virtual_memory()
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = NAN
        groups = {}
        for pattern in self.patterns:
            pids, cpu, rss = [], 0.0, 0.0
            for pid in self._matches.get(pattern, []):
                proc = self._procs.get(pid)
                if proc is None:
                    continue
                try:
                    with proc.oneshot():
                        cpu += proc.cpu_percent(None)
                        rss += proc.memory_info().rss / MIB
                    pids.append(pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    self._procs.pop(pid, None)   # gone: the next rescan finds its successor
            groups[pattern] = ProcessGroup(pattern, tuple(pids), cpu if pids else NAN, rss if pids else NAN)
        cpu_total = sum(per_core) / len(per_core) if per_core else NAN
        return SystemSample(
            cpu_percent=cpu_total, per_core_percent=per_core, memory_percent=float(memory.percent),
            memory_used_mib=(memory.total - memory.available) / MIB, memory_total_mib=memory.total / MIB,
            load_1m=float(load), processes=groups)
