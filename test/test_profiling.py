"""StageProfiler: exact stage timing with a fake clock, disabled mode, bounded storage, NVTX failure
safety, allocation tracking and the Python-side samplers (collapsed stacks, thread sampler, cProfile,
py-spy on a real child process)."""
import subprocess
import sys
import textwrap
import threading
import time
import types

import numpy as np
import pytest

from isaac_perf.core.profiling import profiler as profiling
from isaac_perf.core.profiling.profiler import StageProfiler
from isaac_perf.core.profiling.sampling import (
    CProfileSampler,
    ThreadSampler,
    parse_collapsed,
    py_spy_path,
    sample_pid,
)


class FakeClock:
    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now


def test_stage_and_frame_times_exact():
    clock = FakeClock()
    prof = StageProfiler(clock=clock, gpu='off')
    for frame in range(3):
        with prof.frame():
            with prof.stage('pre'):
                clock.now += 2_000_000
            with prof.stage('infer'):
                clock.now += 5_000_000 + frame * 1_000_000
            clock.now += 1_000_000  # untimed work inside the frame
    d = prof.to_dict()
    assert d['stage_order'] == ['pre', 'infer']
    assert d['stages']['pre']['wall_ms'] == [2.0, 2.0, 2.0]
    assert d['stages']['infer']['wall_ms'] == [5.0, 6.0, 7.0]
    assert d['stages']['infer']['frame'] == [0, 1, 2]
    assert d['frames']['wall_ms'] == [8.0, 9.0, 10.0]
    assert d['frames']['count'] == 3
    assert d['gpu_timing'] == 'none' and d['stages']['pre']['gpu_ms'] == []


def test_record_and_end_frame_without_context_managers():
    prof = StageProfiler(gpu='off', nvtx_ranges=False)
    prof.record('pre', 1.5)
    prof.record('infer', 2.25, gpu_ms=2.0)
    prof.end_frame()  # wall = sum of this frame's stages
    prof.record('pre', 1.0)
    prof.end_frame(wall_ms=4.0)
    d = prof.to_dict()
    assert d['frames']['wall_ms'] == [3.75, 4.0]
    assert d['stages']['infer']['gpu_ms'] == [2.0]
    assert d['stages']['pre']['frame'] == [0, 1]


def test_storage_is_bounded_and_keeps_the_newest_in_order():
    clock = FakeClock()
    prof = StageProfiler(capacity=3, clock=clock, gpu='off')
    for ms in range(1, 6):
        with prof.stage('s'):
            clock.now += ms * 1_000_000
    d = prof.to_dict()
    assert d['stages']['s']['wall_ms'] == [3.0, 4.0, 5.0]
    assert d['stages']['s']['calls'] == 5
    assert np.array_equal(prof.samples_ms('s'), [3.0, 4.0, 5.0])


def test_disabled_profiler_is_a_shared_no_op():
    prof = StageProfiler(enabled=False)
    a, b = prof.stage('pre'), prof.stage('infer')
    assert a is b and prof.frame() is a  # no allocation per call
    with prof.frame():
        with prof.stage('pre'):
            pass
    prof.record('x', 1.0)
    prof.end_frame()
    d = prof.to_dict()
    assert d['stages'] == {} and d['frames']['count'] == 0


def test_exceptions_inside_a_stage_propagate_and_are_still_timed():
    clock = FakeClock()
    prof = StageProfiler(clock=clock, gpu='off')
    with pytest.raises(KeyError):
        with prof.stage('pre'):
            clock.now += 1_000_000
            raise KeyError('boom')
    assert prof.to_dict()['stages']['pre']['wall_ms'] == [1.0]


def test_concurrent_stages_from_several_threads_are_all_counted():
    prof = StageProfiler(gpu='off')

    def work():
        for _ in range(500):
            with prof.stage('cb'):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d = prof.to_dict()
    assert d['stages']['cb']['calls'] == 2000
    assert len(d['stages']['cb']['wall_ms']) == 2000
    assert min(d['stages']['cb']['wall_ms']) >= 0.0


def test_nvtx_ranges_with_the_real_package():
    pytest.importorskip('nvtx')
    prof = StageProfiler(gpu='off')
    assert prof._nvtx.ok  # a domain was created; without a tool attached pushes are no-ops
    with prof.frame():
        with prof.stage('infer'):
            pass
    assert prof._nvtx.ok and prof.to_dict()['stages']['infer']['calls'] == 1


def test_nvtx_failures_never_break_the_pipeline(monkeypatch):
    broken = types.ModuleType('nvtx')

    def no_domain(name):
        raise RuntimeError('libnvToolsExt not found')

    broken.get_domain = no_domain
    monkeypatch.setitem(sys.modules, 'nvtx', broken)
    prof = StageProfiler(gpu='off')
    assert not prof._nvtx.ok
    with prof.stage('pre'):
        pass
    assert prof.to_dict()['stages']['pre']['calls'] == 1

    class FailingDomain:
        def get_event_attributes(self, message):
            return message

        def push_range(self, attr):
            raise OSError('tool crashed')

        def pop_range(self):
            raise OSError('tool crashed')

    broken.get_domain = lambda name: FailingDomain()
    prof = StageProfiler(gpu='off')
    assert prof._nvtx.ok
    for _ in range(3):
        with prof.stage('pre'):
            pass
    assert not prof._nvtx.ok  # disabled after the first failure
    assert prof.to_dict()['stages']['pre']['calls'] == 3


def test_python_allocation_tracking():
    prof = StageProfiler(gpu='off', allocations='python')
    keep = []
    try:
        for _ in range(3):
            with prof.stage('alloc'):
                buf = np.ones(4 << 20, dtype=np.uint8)  # 4 MiB transient
                keep.append(buf[:10].copy())
                del buf
            with prof.stage('quiet'):
                pass
        d = prof.to_dict()
    finally:
        prof.close()
    assert d['allocation_tracking'] == 'python'
    assert min(d['stages']['alloc']['alloc_bytes']) >= 4 << 20
    assert max(d['stages']['quiet']['alloc_bytes']) < 64 << 10


def test_bad_arguments_say_what_to_use():
    with pytest.raises(ValueError, match="'auto', 'torch' or 'off'"):
        StageProfiler(gpu='cupy')
    with pytest.raises(ValueError, match="'off', 'python' or 'cuda'"):
        StageProfiler(allocations='all')
    with pytest.raises(ValueError, match='at least 1 sample'):
        StageProfiler(capacity=0)


def test_gpu_request_without_cuda_warns_instead_of_failing():
    prof = StageProfiler(gpu='torch')
    if profiling._torch_cuda() is None:
        assert prof.warnings and 'GPU times are not recorded' in prof.warnings[0]
        assert prof.to_dict()['gpu_timing'] == 'none'


@pytest.mark.gpu
def test_cuda_event_gpu_times():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    prof = StageProfiler(gpu='torch')
    a = torch.randn(2048, 2048, device='cuda')
    for _ in range(5):
        with prof.frame():
            with prof.stage('matmul'):
                a @ a
    d = prof.to_dict()
    assert d['gpu_timing'] == 'cuda-events'
    assert len(d['stages']['matmul']['gpu_ms']) == 5 and min(d['stages']['matmul']['gpu_ms']) > 0


def test_parse_collapsed_exact_shares():
    text = textwrap.dedent("""\
        main (app.py:1);run (app.py:5);preprocess (pre.py:3) 30
        main (app.py:1);run (app.py:5);infer (eng.py:9) 60
        main (app.py:1);run (app.py:5) 10
        main (app.py:1);spin (executors.py:1);wait (threading.py:300) 400
        garbage line
    """)
    result = parse_collapsed(text)
    assert result.samples == 100  # the 400 idle samples (leaf 'wait') do not count
    rows = {f.function: f for f in result.functions}
    assert [f.function for f in result.functions] == ['infer (eng.py:9)', 'preprocess (pre.py:3)',
                                                      'run (app.py:5)']
    assert rows['infer (eng.py:9)'].self_fraction == 0.6
    assert rows['run (app.py:5)'].self_fraction == 0.1
    assert rows['run (app.py:5)'].total_fraction == 1.0
    assert parse_collapsed(text, skip_idle=False).samples == 500


def _spin_hot(iterations):
    total = 0
    for _ in range(iterations):
        total += sum(i * i for i in range(200))
    return total


def _spin_hot_until(stop):
    while not stop.is_set():
        _spin_hot(50)


def test_thread_sampler_names_the_busy_function():
    # Runs until the sampler has taken 40 rounds, however long a loaded machine takes to give them.
    stop = threading.Event()
    worker = threading.Thread(target=_spin_hot_until, args=(stop,))
    with ThreadSampler(rate_hz=200) as sampler:
        worker.start()
        deadline = time.monotonic() + 60.0
        while sampler.rounds < 40 and time.monotonic() < deadline:
            stop.wait(0.01)
        stop.set()
        worker.join()
    result = sampler.result()
    assert sampler.rounds >= 40, 'the sampling thread got no time in 60 s'
    assert result.source == 'thread-sampler' and result.samples > 5
    names = ' '.join(f.function for f in result.functions[:3])
    assert '_spin_hot' in names or '<genexpr>' in names
    top_total = max(f.total_fraction for f in result.functions if '_spin_hot' in f.function
                    or '<genexpr>' in f.function)
    assert top_total > 0.5


def test_cprofile_sampler_names_the_busy_function():
    # A fixed amount of work, timed in this process's CPU time: preemption by a busy machine counts nowhere.
    with CProfileSampler(timer=time.process_time) as sampler:
        _spin_hot(300)
    result = sampler.result(top=5)
    assert result.source == 'cProfile'
    assert any('_spin_hot' in f.function for f in result.functions)
    assert any('<genexpr>' in f.function and f.self_fraction > 0.2 for f in result.functions)


def test_py_spy_samples_a_running_process():
    if py_spy_path() is None:
        pytest.skip('py-spy is not installed (pip install -r requirements/test.txt)')
    script = textwrap.dedent("""\
        import time
        def crunch_numbers():
            return sum(i * i for i in range(20000))
        end = time.time() + 8
        while time.time() < end:
            crunch_numbers()
    """)
    child = subprocess.Popen([sys.executable, '-c', script])
    try:
        time.sleep(0.5)
        try:
            result = sample_pid(child.pid, duration_s=1, rate_hz=100)
        except RuntimeError as exc:
            if 'ptrace' in str(exc) and ('ermission' in str(exc) or 'not permitted' in str(exc)):
                pytest.skip(f'py-spy may not attach here: {exc}')
            raise
    finally:
        child.kill()
        child.wait()
    assert result.source == 'py-spy' and result.samples > 20
    assert any('crunch_numbers' in f.function for f in result.functions[:3])


def test_sample_pid_without_py_spy_says_what_to_install(tmp_path):
    with pytest.raises(RuntimeError, match='pip install py-spy'):
        sample_pid(1, py_spy=str(tmp_path / 'no-such-py-spy'))


def test_sample_pid_of_a_gone_process_says_why():
    if py_spy_path() is None:
        pytest.skip('py-spy is not installed')
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    with pytest.raises(RuntimeError, match=f'could not sample pid {child.pid}'):
        sample_pid(child.pid, duration_s=1)
