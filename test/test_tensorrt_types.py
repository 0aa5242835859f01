"""The TensorRT backend held against TensorRT's real Python API by a type checker (tensorrt-stubs 10.13).

TensorRT cannot be installed here, so this is as far as its API use can be checked without running it:
mypy reads tensorrt_engine.py with `trt` typed by the stubs, and a deliberate misuse shows the check bites.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# found, not spelled out: core/ is being regrouped into subpackages (core/inference/engines/ ...)
ENGINE = next(ROOT.glob('isaac_perf/core/**/engines/tensorrt_engine.py'))

# tensorrt-stubs 10.13.0.35.1 ships a few lines that are not valid Python (pybind11-stubgen output): a
# parameter named `in` (a keyword) in plugin methods, and a non-default parameter after defaults in
# INetworkDefinition.add_scale_nd. mypy refuses the whole file for them, so a copy is repaired; the rest
# of the stubs is used as shipped.
STUB_REPAIRS = [
    (re.compile(r'(^\s*def [^\n]*?[(,] ?)in:', re.MULTILINE), r'\1in_:'),
    (re.compile(r'(power: Weights = None, channel_axis: int)\)'), r'\1 = ...)'),
]


@pytest.fixture(scope='module')
def stubs_dir(tmp_path_factory):
    for needed in ('mypy', 'tensorrt_stubs'):
        assert importlib.util.find_spec(needed), (f'{needed} is not installed: pip install -r '
                                                  'requirements/test.txt (tensorrt-stubs with --no-deps)')
    site = Path(importlib.util.find_spec('tensorrt_stubs').origin).parents[1]
    out = tmp_path_factory.mktemp('trt-stubs')
    for pkg in ('tensorrt', 'tensorrt_bindings'):
        shutil.copytree(site / pkg, out / pkg)
    pyi = out / 'tensorrt_bindings' / 'tensorrt.pyi'
    text = pyi.read_text()
    for pattern, repl in STUB_REPAIRS:
        text = pattern.sub(repl, text)
    pyi.write_text(text)
    return out


def mypy(stubs: Path, *files: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MYPYPATH=str(stubs))
    return subprocess.run([sys.executable, '-m', 'mypy', '--config-file', str(ROOT / 'setup.cfg'),
                           '--no-incremental', *map(str, files)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_tensorrt_engine_type_checks_against_the_tensorrt_stubs(stubs_dir):
    result = mypy(stubs_dir, ENGINE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert 'Success' in result.stdout


def test_a_misused_tensorrt_call_is_reported(stubs_dir, tmp_path):
    snippet = tmp_path / 'misuse.py'
    snippet.write_text(
        'from __future__ import annotations\n'
        'from typing import TYPE_CHECKING\n'
        'if TYPE_CHECKING:\n'
        '    import tensorrt as trt\n\n\n'
        'def build(logger: trt.Logger) -> None:\n'
        '    builder = trt.Builder(logger)\n'
        '    builder.build_engine_from_onnx("model.onnx")\n'          # no such IBuilder method
        '    config = builder.create_builder_config()\n'
        '    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, "1 GiB")\n')  # wrong argument type
    result = mypy(stubs_dir, snippet)
    assert result.returncode == 1, result.stdout
    assert '"Builder" has no attribute "build_engine_from_onnx"' in result.stdout
    assert 'set_memory_pool_limit' in result.stdout and 'incompatible type "str"' in result.stdout
