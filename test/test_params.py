"""ParamSpec validation (pure) and declare_params on a real node (descriptors, ranges, refusals)."""
import rclpy
from rclpy.parameter import Parameter

from isaac_perf.core.params import ParamSpec, spec_defaults, validate_all
from isaac_perf.ros.params import declare_params

SPECS = [
    ParamSpec('rate_hz', 30.0, 'Frames per second.', min=0.1, max=1000.0),
    ParamSpec('depth', 5, 'Queue depth.', min=1, max=100),
    ParamSpec('backend', 'auto', 'Inference backend.', choices=('auto', 'onnxruntime', 'torch')),
    ParamSpec('topics', [], 'Topics to watch.',
              check=lambda v: '' if all(t.startswith('/') for t in v) else 'topics must be absolute'),
]


def test_validate_reports_what_to_fix():
    assert validate_all(SPECS, {'rate_hz': 30.0, 'backend': 'torch', 'topics': ['/a']}) == []
    assert validate_all(SPECS, {'rate_hz': 0.0}) == ['rate_hz=0.0 is below its minimum 0.1']
    assert validate_all(SPECS, {'depth': 101}) == ['depth=101 is above its maximum 100']
    assert validate_all(SPECS, {'backend': 'tvm'}) == ["backend='tvm' is not one of auto, onnxruntime, torch"]
    assert validate_all(SPECS, {'topics': ['a']}) == ['topics must be absolute']
    assert spec_defaults(SPECS)['depth'] == 5


def test_declare_params_enforces_ranges_choices_and_applies_changes(ros_context):
    node = rclpy.create_node('params_test', context=ros_context)
    applied = []
    try:
        values = declare_params(node, SPECS, on_change=applied.append)
        assert values == {'rate_hz': 30.0, 'depth': 5, 'backend': 'auto', 'topics': []}
        desc = node.describe_parameter('depth')
        assert desc.integer_range[0].from_value == 1 and desc.integer_range[0].to_value == 100
        assert 'One of: auto, onnxruntime, torch' in node.describe_parameter('backend').description

        out_of_range = node.set_parameters([Parameter('rate_hz', value=5000.0)])[0]
        assert not out_of_range.successful and 'out of range' in out_of_range.reason
        bad_choice = node.set_parameters([Parameter('backend', value='tvm')])[0]
        assert not bad_choice.successful and 'not one of' in bad_choice.reason
        assert node.get_parameter('backend').value == 'auto' and applied == []

        assert node.set_parameters([Parameter('topics', value=['/cam0'])])[0].successful
        assert applied == [{'topics': ['/cam0']}]
    finally:
        node.destroy_node()
