"""`colcon build` of the package (colcon from PyPI) and the install tree ROS tools rely on."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODES = ['perf_monitor', 'inference_node', 'stream_batcher', 'qos_tuner', 'image_source']


@pytest.fixture(scope='module')
def install_tree(tmp_path_factory):
    colcon = shutil.which('colcon') or str(Path(sys.executable).parent / 'colcon')
    ws = tmp_path_factory.mktemp('ws')
    src = ws / 'src' / 'isaac_perf'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.venv-*', '.mypy_cache', '.git', 'build', 'install', 'log', '*.egg-info', '__pycache__',
        '.whl', 'results'))
    env = dict(os.environ, PATH=f'{Path(sys.executable).parent}:{os.environ["PATH"]}')
    result = subprocess.run([colcon, 'build'], cwd=ws, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / 'install' / 'isaac_perf'


@pytest.mark.parametrize('node', NODES)
def test_every_node_is_an_executable_under_lib(install_tree, node):
    exe = install_tree / 'lib' / 'isaac_perf' / node
    assert exe.is_file() and os.access(exe, os.X_OK), f'{exe} missing: ros2 run would not find {node}'


def test_share_has_package_xml_launch_and_config(install_tree):
    share = install_tree / 'share' / 'isaac_perf'
    assert (share / 'package.xml').is_file()
    assert sorted(p.name for p in (share / 'launch').glob('*.launch.py'))
    assert sorted(p.name for p in (share / 'config').glob('*.yaml'))


def test_ament_index_marker(install_tree):
    marker = install_tree / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'isaac_perf'
    assert marker.is_file()
