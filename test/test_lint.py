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


# The rosdep key of each runtime dependency setup.py declares. Keys from ros/rosdistro's rosdep/python.yaml
# (snapshot 2026-08-22) except those rosdep/isaac_perf.yaml defines. A new install_requires entry fails here
# until it has a key, so pip and colcon installs cannot drift apart.
PIP_TO_ROSDEP = {
    'numpy': 'python3-numpy', 'psutil': 'python3-psutil', 'PyYAML': 'python3-yaml',
    'nvidia-ml-py': 'python3-pynvml', 'onnx': 'python3-onnx-pip', 'onnxruntime': 'python3-onnxruntime-pip',
    'rich': 'python3-rich',
}
ROSDISTRO_KEYS = {'python3-numpy', 'python3-psutil', 'python3-yaml', 'python3-pynvml',
                  'python3-onnxruntime-pip', 'python3-rich', 'python3-tqdm', 'python3-matplotlib',
                  'python3-opencv', 'mcap-ros2-support', 'python3-pytest'}
ROS_PACKAGES = {'rclpy', 'std_msgs', 'sensor_msgs', 'diagnostic_msgs', 'rcl_interfaces', 'launch',
                'launch_ros'}


def setup_py_list(name):
    import ast
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f'setup.py has no {name}')


def test_every_setup_py_dependency_has_its_rosdep_key_in_package_xml():
    deps = {e.text for e in ET.parse(ROOT / 'package.xml').getroot().findall('exec_depend')}
    for req in setup_py_list('INSTALL_REQUIRES'):
        name = re.split(r'[<>=!~;\[ ]', req, maxsplit=1)[0]
        key = PIP_TO_ROSDEP.get(name)
        assert key, f'setup.py requires {name}: add its rosdep key to PIP_TO_ROSDEP and package.xml'
        assert key in deps, f'package.xml lacks <exec_depend>{key}</exec_depend> (for {name})'


def test_every_package_xml_key_resolves_in_rosdistro_or_the_local_rosdep_file():
    import yaml
    local = yaml.safe_load((ROOT / 'rosdep' / 'isaac_perf.yaml').read_text())
    root = ET.parse(ROOT / 'package.xml').getroot()
    keys = {e.text for tag in ('exec_depend', 'depend', 'test_depend') for e in root.findall(tag)}
    unknown = sorted(keys - ROS_PACKAGES - ROSDISTRO_KEYS - set(local))
    assert unknown == [], f'rosdep cannot resolve {unknown}: define them in rosdep/isaac_perf.yaml'
    for key, rule in local.items():
        assert key not in ROSDISTRO_KEYS, f'{key} is in rosdistro now: drop it from rosdep/isaac_perf.yaml'
        assert key.endswith('-pip') and rule['*']['pip']['packages'], f'{key}: give a pip rule'
