"""Every `ros2 param set <node> <param> <value>` in README.md and docs/*.md names a declared parameter of
that node and a value its spec accepts (the specs the nodes declare: isaac_perf/nodes/*.PARAMS)."""
import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
# ROS node name (the default each node takes) -> module declaring its PARAMS
NODE_MODULES = {'perf_monitor': 'perf_monitor', 'inference_node': 'inference',
                'stream_batcher': 'stream_batcher', 'qos_tuner': 'qos_tuner', 'image_source': 'image_source'}
PARAM_SET = re.compile(r'ros2 param set (\S+) (\S+)(?: (.*))?')


def param_set_commands():
    for doc in DOCS:
        for lineno, line in enumerate(doc.read_text().splitlines(), 1):
            m = PARAM_SET.search(line.split('#')[0] if not line.lstrip().startswith('|') else line)
            if m and m.group(1).startswith('/'):
                yield pytest.param(m.group(1), m.group(2), (m.group(3) or '').strip().strip('`'),
                                   id=f'{doc.name}:{lineno}')


def problem_with(node: str, param: str, value: str) -> str:
    """What is wrong with `ros2 param set <node> <param> <value>`, or ''."""
    module = NODE_MODULES.get(node.lstrip('/'))
    if module is None:
        return f'no node {node}: this package has {", ".join(sorted(NODE_MODULES))}'
    specs = {s.name: s for s in importlib.import_module(f'isaac_perf.nodes.{module}').PARAMS}
    if param not in specs:
        return f'{node} has no parameter {param!r}; it has: {", ".join(sorted(specs))}'
    if not value:
        return ''
    parsed = yaml.safe_load(shlex.split(value)[0])  # ros2 param set reads the value as YAML
    problem = specs[param].validate(parsed)
    return f'ros2 param set {node} {param} {value}: {problem}' if problem else ''


def test_the_docs_have_param_set_commands_to_check():
    assert len(list(param_set_commands())) >= 3


@pytest.mark.parametrize(('node', 'param', 'value'), list(param_set_commands()))
def test_param_set_command_names_a_declared_parameter_and_a_valid_value(node, param, value):
    assert problem_with(node, param, value) == ''


def test_the_check_catches_a_wrong_name_node_or_value():
    assert "no parameter 'min_fps'" in problem_with('/perf_monitor', 'min_fps', '25.0')  # README's old line
    assert 'no node /perf_monitr' in problem_with('/perf_monitr', 'min_fps_warn', '25.0')
    assert 'below its minimum' in problem_with('/perf_monitor', 'publish_period_s', '0.0')
    assert problem_with('/perf_monitor', 'min_fps_warn', '25.0') == ''
