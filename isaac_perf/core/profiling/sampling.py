"""Where Python time goes in a running node: py-spy, a thread sampler and cProfile, reduced to hot functions.
"""
from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


# --- Python-side sampling ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HotFunction:
    """One function's share of the sampled time."""
    function: str  # 'name (file:line)' as py-spy prints it
    self_fraction: float  # share of samples with this function on top of the stack
    total_fraction: float  # share of samples with this function anywhere on the stack
    samples: int  # samples (py-spy / thread sampler) or primitive calls (cProfile) on top


@dataclass
class SamplingResult:
    source: str  # 'py-spy', 'thread-sampler' or 'cProfile'
    samples: int  # total samples (or total calls for cProfile)
    functions: list[HotFunction] = field(default_factory=list)
    note: str = ''

    def to_dict(self) -> dict[str, Any]:
        return {'source': self.source, 'samples': self.samples, 'note': self.note,
                'functions': [asdict(f) for f in self.functions]}


# Leaf functions of a thread that is waiting, not working (an idle executor, a sleeping publisher).
IDLE_LEAVES = frozenset({'wait', 'select', 'poll', 'epoll', 'sleep', '_wait_for_ready_callbacks', 'accept',
                         'recv', 'recv_into', '_wait_for_tstate_lock'})


def _function_name(label: str) -> str:
    return label.split(' (', 1)[0]


def parse_collapsed(text: str, top: int = 15, skip_idle: bool = True) -> SamplingResult:
    """Hot functions from collapsed stacks (`frame;frame;leaf COUNT` per line, root first).

    py-spy's `record --format raw` writes this, and so does `ThreadSampler`. With `skip_idle`, stacks
    whose leaf is a wait (`IDLE_LEAVES`: an idle executor thread, a sleeping publisher) do not count, so
    the shares are of busy time. Self share: the function was on top of the stack; total: anywhere on it.
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(' ')
        try:
            count = int(count_text)
        except ValueError:
            continue  # not a sample line
        frames = [f for f in stack.split(';') if f]
        if not frames:
            continue
        if skip_idle and _function_name(frames[-1]) in IDLE_LEAVES:
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    functions = [HotFunction(name, n / total, total_counts[name] / total, n)
                 for name, n in self_counts.most_common(top)] if total else []
    return SamplingResult('py-spy', total, functions)


def py_spy_path() -> str | None:
    """The py-spy executable next to this Python or on PATH, or None."""
    beside = os.path.join(os.path.dirname(sys.executable), 'py-spy')
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which('py-spy')


def sample_pid(pid: int, duration_s: float = 5.0, rate_hz: int = 100, top: int = 15,
               py_spy: str | None = None, subprocesses: bool = False) -> SamplingResult:
    """Sample a running Python process (any node, by PID) with `py-spy record`; no code change needed.

    Raises RuntimeError saying what to do when py-spy is missing or cannot attach (it needs ptrace:
    run as the same user with kernel.yama.ptrace_scope=0, as root, or in a container with SYS_PTRACE).
    """
    exe = py_spy or py_spy_path()
    if exe is None or not os.access(exe, os.X_OK):
        raise RuntimeError('py-spy is not installed: `pip install py-spy`, or sample in-process with '
                           'ThreadSampler / CProfileSampler')
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'stacks.txt')
        cmd = [exe, 'record', '--pid', str(pid), '--duration', str(max(1, int(round(duration_s)))),
               '--rate', str(int(rate_hz)), '--format', 'raw', '--output', out, '--nonblocking',
               '--function']  # aggregate by function (first line), not by the line being run
        if subprocesses:
            cmd.append('--subprocesses')
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f'py-spy could not sample pid {pid} (exit {proc.returncode}): '
                               f'{(proc.stderr or proc.stdout).strip()[-400:]}; it needs ptrace permission '
                               '(same user and ptrace_scope=0, root, or SYS_PTRACE in a container)')
        with open(out) as f:
            result = parse_collapsed(f.read(), top=top)
    result.source = 'py-spy'
    return result


def _frame_label(code: Any, lineno: int) -> str:
    return f'{code.co_name} ({os.path.basename(code.co_filename)}:{lineno})'


class ThreadSampler:
    """Samples the stacks of all threads of this process at `rate_hz` (a py-spy for the inside).

    Unlike cProfile, it sees every executor thread and costs nothing between samples; the sampling thread
    holds the GIL for ~20 us per sample per thread.
    """

    def __init__(self, rate_hz: float = 200.0, max_depth: int = 64):
        self.interval_s = 1.0 / rate_hz
        self.max_depth = max_depth
        self._stacks: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0   # sampling rounds taken: lets a caller run until enough samples, not for a time

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval_s):
            self.rounds += 1
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                names = []
                depth = 0
                while frame is not None and depth < self.max_depth:
                    names.append(_frame_label(frame.f_code, frame.f_code.co_firstlineno))
                    frame = frame.f_back
                    depth += 1
                self._stacks[';'.join(reversed(names))] += 1

    def start(self) -> ThreadSampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name='isaac_perf-sampler', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ThreadSampler:
        return self.start()

    def __exit__(self, *exc: object) -> bool:
        self.stop()
        return False

    def collapsed(self) -> str:
        return '\n'.join(f'{stack} {n}' for stack, n in self._stacks.items())

    def result(self, top: int = 15) -> SamplingResult:
        result = parse_collapsed(self.collapsed(), top=top)
        result.source = 'thread-sampler'
        return result


class CProfileSampler:
    """cProfile around a block of the calling thread (deterministic; adds per-call overhead).

    `timer` replaces cProfile's wall clock, e.g. `time.process_time` to count only this process's CPU time
    (a busy machine's preemptions then land on no function).
    """

    def __init__(self, timer: Callable[[], float] | None = None) -> None:
        self._profile = cProfile.Profile(timer) if timer is not None else cProfile.Profile()

    def __enter__(self) -> CProfileSampler:
        self._profile.enable()
        return self

    def __exit__(self, *exc: object) -> bool:
        self._profile.disable()
        return False

    def result(self, top: int = 15) -> SamplingResult:
        stats = pstats.Stats(self._profile)
        raw = stats.stats  # {(file, line, name): (primitive calls, calls, tottime, cumtime, callers)}
        if not raw:
            return SamplingResult('cProfile', 0, [], note='nothing was profiled')
        # Total = the largest cumulative time (the outermost call); self shares are of that.
        total_time = max(v[3] for v in raw.values()) or 1e-12
        rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        functions = [HotFunction(f'{name} ({os.path.basename(file)}:{line})', tt / total_time,
                                 ct / total_time, int(cc))
                     for (file, line, name), (cc, _nc, tt, ct, _callers) in rows]
        calls = int(sum(v[1] for v in raw.values()))
        return SamplingResult('cProfile', calls, functions, note=f'total {total_time * 1e3:.1f} ms')


@contextlib.contextmanager
def sample_python(rate_hz: float = 200.0, top: int = 15) -> Iterator[list[SamplingResult]]:
    """Sample this process's Python threads around a block; yields a list that holds the result after."""
    holder: list[SamplingResult] = []
    sampler = ThreadSampler(rate_hz).start()
    try:
        yield holder
    finally:
        sampler.stop()
        holder.append(sampler.result(top))
