"""`pip install .` into a fresh venv holding only the ROS 2 wheels gives console scripts that work.

This is the install a Python user does: no Makefile, no requirements/base.txt. The package's own
dependencies must come from setup.py. Slow (a venv, the ROS wheels and onnxruntime from the local index),
and part of the suite on purpose.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Float32MultiArray

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def pip_venv(tmp_path_factory):
    distro = os.environ.get('ROS_DISTRO', 'kilted')
    ros_wheels = ROOT / 'requirements' / f'ros-{distro}.txt'
    assert ros_wheels.is_file(), f'no {ros_wheels.name} for ROS_DISTRO={distro}: use kilted or jazzy'
    tmp = tmp_path_factory.mktemp('pipvenv')
    src = tmp / 'src'  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.venv-*', '.git', 'build', 'install', 'log', '*.egg-info', '__pycache__', '.whl', 'results',
        '.mypy_cache', '.pytest_cache', '.ruff_cache'))
    venv = tmp / 'venv'
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    base_python = getattr(sys, '_base_executable', sys.executable)
    subprocess.run([base_python, '-m', 'venv', str(venv)], check=True, timeout=120, env=env)
    py = str(venv / 'bin' / 'python')
    for args in (['-r', str(ros_wheels)], [str(src)]):
        result = subprocess.run([py, '-m', 'pip', 'install', '-q', *args], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f'pip install {" ".join(args)} failed:\n{result.stderr[-3000:]}'
    return venv, env


@pytest.mark.slow
def test_pip_install_gives_a_perf_monitor_that_publishes_metrics(pip_venv, ros_context):
    venv, env = pip_venv
    script = venv / 'bin' / 'perf_monitor'
    assert script.is_file(), 'pip install . made no perf_monitor console script'
    freeze = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'freeze'], env=env,
                            capture_output=True, text=True, timeout=60).stdout.lower()
    for dep in ('psutil', 'onnxruntime', 'nvidia-ml-py', 'pyyaml'):  # from setup.py, nothing else
        assert dep in freeze, f'pip install . did not install {dep}'
    node = rclpy.create_node('pip_install_probe', context=ros_context)
    got = []
    node.create_subscription(Float32MultiArray, '/performance_metrics', got.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    proc = subprocess.Popen([str(script), '--ros-args', '-p', 'publish_period_s:=0.2'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not got and proc.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert proc.poll() is None, f'perf_monitor exited {proc.returncode}:\n{proc.stdout.read()[-3000:]}'
        assert got, 'the pip-installed perf_monitor published nothing on /performance_metrics'
        assert got[0].layout.dim and got[0].layout.dim[0].label  # the labelled layout, not an empty array
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        executor.shutdown()
        node.destroy_node()
    assert rc == 0, f'perf_monitor exited {rc} on SIGINT:\n{proc.stdout.read()[-3000:]}'
