"""System sampler on the real machine: CPU, memory, and per-process CPU/RSS found by pattern or pid."""
import math
import subprocess
import sys
import time

import psutil
import pytest

from isaac_perf.core.telemetry.system import SystemSampler

S = 1_000_000_000
BUSY = 'import time\nt = time.time()\nwhile time.time() - t < 8: pass\n'


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


def test_process_found_by_run_name_pattern_and_by_pid(busy_process):
    sampler = SystemSampler(['isaac_perf_h1_busy_marker', f'pid:{busy_process.pid}', 'no_such_process_xyz'])
    sampler.sample(0)
    time.sleep(0.6)
    s = sampler.sample(1 * S)
    by_name = s.processes['isaac_perf_h1_busy_marker']
    assert by_name.pids == (busy_process.pid,)
    assert by_name.cpu_percent > 30.0          # a busy loop uses most of one core
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
