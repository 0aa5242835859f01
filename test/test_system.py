"""System sampler on the real machine: CPU, memory, and per-process CPU/RSS found by pattern or pid."""
import math
import os
import subprocess
import sys
import time

import psutil
import pytest

from isaac_perf.core.telemetry.system import SystemSampler

S = 1_000_000_000
BUSY = 'import time\nt = time.time()\nwhile time.time() - t < 60: pass\n'   # killed by the test long before


def busy_script(folder):
    # Matched by the script's name (what the process runs under), not by an argument on its command line.
    script = folder / 'isaac_perf_h1_busy_marker.py'
    script.write_text(BUSY)
    return str(script)


@pytest.fixture
def busy_process(tmp_path):
    proc = subprocess.Popen([sys.executable, busy_script(tmp_path)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_host_cpu_and_memory():
    sampler = SystemSampler()
    time.sleep(0.1)
    s = sampler.sample(0)
    assert len(s.per_core_percent) == psutil.cpu_count()
    assert 0.0 <= s.cpu_percent <= 100.0
    assert s.cpu_max_core_percent >= s.cpu_percent - 1e-9
    assert 0.0 < s.memory_percent < 100.0 and 0.0 < s.memory_used_mib < s.memory_total_mib
    assert s.processes == {}


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def test_process_found_by_run_name_pattern_and_by_pid(busy_process):
    # The busy process gets whatever CPU a loaded box leaves it, so no figure is assumed: its own CPU
    # time, read around the sampler's two reads, bounds what the sampler may report.
    proc = psutil.Process(busy_process.pid)
    tick_s = 1.0 / os.sysconf('SC_CLK_TCK')   # resolution of the kernel's per-process CPU time
    sampler = SystemSampler(['isaac_perf_h1_busy_marker', f'pid:{busy_process.pid}', 'no_such_process_xyz'])
    wall0, cpu0 = time.monotonic(), _cpu_s(proc)
    sampler.sample(0)                          # primes the per-process counters
    wall1, cpu1 = time.monotonic(), _cpu_s(proc)
    deadline = wall1 + 30.0
    while _cpu_s(proc) - cpu1 < 20 * tick_s and time.monotonic() < deadline:
        time.sleep(0.05)                       # until the process has run measurably, however loaded
    wall2, cpu2 = time.monotonic(), _cpu_s(proc)
    s = sampler.sample(1 * S)
    wall3, cpu3 = time.monotonic(), _cpu_s(proc)
    by_name = s.processes['isaac_perf_h1_busy_marker']
    assert by_name.pids == (busy_process.pid,)
    low = 100.0 * (cpu2 - cpu1 - tick_s) / (wall3 - wall0) - 0.1   # 0.1: psutil rounds to 0.1 %
    high = 100.0 * (cpu3 - cpu0 + tick_s) / (wall2 - wall1) + 0.1
    assert cpu2 - cpu1 >= 20 * tick_s, 'the busy process got no CPU in 30 s'
    assert 0.0 < low <= by_name.cpu_percent <= high
    assert by_name.rss_mib > 1.0
    assert s.processes[f'pid:{busy_process.pid}'].pids == (busy_process.pid,)
    missing = s.processes['no_such_process_xyz']
    assert missing.count == 0 and math.isnan(missing.cpu_percent)


def test_rescan_runs_on_its_period_and_dead_processes_drop_out(tmp_path):
    sampler = SystemSampler(['isaac_perf_h1_busy_marker'], rescan_s=5.0)
    assert sampler.sample(0).processes['isaac_perf_h1_busy_marker'].count == 0
    proc = subprocess.Popen([sys.executable, busy_script(tmp_path)])
    try:
        time.sleep(0.2)
        assert sampler.sample(4 * S).processes['isaac_perf_h1_busy_marker'].count == 0   # no rescan yet
        assert sampler.sample(5 * S).processes['isaac_perf_h1_busy_marker'].count == 1   # rescanned
    finally:
        proc.kill()
        proc.wait()
    assert sampler.sample(6 * S).processes['isaac_perf_h1_busy_marker'].count == 0
