"""Linters as tests: ruff over the code, and package.xml against what setup.py installs."""
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which('ruff') or str(Path(sys.executable).parent / 'ruff')
    result = subprocess.run([ruff, 'check', 'isaac_perf', 'test', 'benchmarks', 'launch', 'scripts'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_xml_is_format3_ament_python_with_runtime_deps():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'isaac_perf'
    assert root.find('export/build_type').text == 'ament_python'
    deps = {e.text for e in root.findall('exec_depend')}
    for needed in ('rclpy', 'std_msgs', 'sensor_msgs', 'diagnostic_msgs', 'rcl_interfaces',
                   'python3-numpy', 'python3-psutil', 'python3-yaml'):
        assert needed in deps, f'package.xml lacks <exec_depend>{needed}</exec_depend>'


def test_core_never_imports_rclpy():
    imports_rclpy = re.compile(r'^\s*(import|from)\s+rclpy', re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / 'isaac_perf' / 'core').rglob('*.py')
                 if imports_rclpy.search(p.read_text())]
    assert offenders == [], f'isaac_perf/core must stay free of rclpy: {offenders}'
