"""The architecture as tests: which part of the tree may import which (read from the code with ast)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'isaac_perf'


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            mods.add(node.module)
            mods.update(f'{node.module}.{a.name}' for a in node.names)
    return mods


def offenders(folder: Path, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted(folder.rglob('*.py')):
        bad = sorted(m for m in imported_modules(path) if m.split('.')[0] in forbidden
                     or any(m == f or m.startswith(f + '.') for f in forbidden))
        if bad:
            found[str(path.relative_to(folder))] = bad
    return found


def test_imported_modules_sees_lazy_imports(tmp_path):
    sample = tmp_path / 'sample.py'
    sample.write_text('import os\n\ndef f():\n    from isaac_perf.nodes import inference\n')
    assert 'isaac_perf.nodes.inference' in imported_modules(sample)
    assert offenders(tmp_path, ('isaac_perf.nodes',)) != {}


def test_telemetry_imports_no_inference_batching_or_torch():
    found = offenders(PKG / 'core' / 'telemetry', ('isaac_perf.core.inference', 'isaac_perf.core.batching',
                                                   'torch', 'rclpy'))
    assert found == {}, f'telemetry must stand alone (monitor-only installs): {found}'


def test_core_imports_no_ros_layer():
    found = offenders(PKG / 'core', ('isaac_perf.nodes', 'isaac_perf.ros', 'isaac_perf.app', 'rclpy'))
    assert found == {}, f'isaac_perf/core is the ROS-free library: {found}'


def test_launch_files_import_no_app_module():
    """Launch files wire nodes through isaac_perf.core.pipeline_graph, never through the CLI's modules."""
    launch_files = sorted((ROOT / 'launch').glob('*.py'))
    assert launch_files
    found = {p.name: sorted(m for m in imported_modules(p) if m == 'isaac_perf.app'
                            or m.startswith('isaac_perf.app.'))
             for p in launch_files}
    assert {k: v for k, v in found.items() if v} == {}, 'launch files must not import isaac_perf.app'


def node_cross_imports(folder: Path) -> dict[str, list[str]]:
    """Which node module in `folder` imports which other node module of it."""
    found: dict[str, list[str]] = {}
    for stem in sorted(p.stem for p in folder.glob('*.py') if p.stem != '__init__'):
        importers = offenders(folder, (f'isaac_perf.nodes.{stem}',))
        importers.pop(f'{stem}.py', None)
        for name, mods in importers.items():
            found.setdefault(name, []).extend(mods)
    return found


def test_node_cross_imports_finds_a_node_importing_a_node(tmp_path):
    (tmp_path / 'inference.py').write_text('import numpy\n')
    (tmp_path / 'stream_batcher.py').write_text('def f():\n    from isaac_perf.nodes import inference\n')
    assert node_cross_imports(tmp_path) == {'stream_batcher.py': ['isaac_perf.nodes.inference']}


def test_no_node_imports_another_node():
    found = node_cross_imports(PKG / 'nodes')
    assert found == {}, f'a node imports another node; move what they share to ros/ or core/: {found}'
