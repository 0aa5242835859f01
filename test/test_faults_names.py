"""Topic names that pass a type check but not rcl: refused by rclpy's own rules with the reason, so the
on-set callback can answer instead of the node dying when it recreates the subscription."""
import pytest

from isaac_perf.core.params import ParamSpec
from isaac_perf.ros.names import topic_check, topic_name_error

pytest.importorskip('rclpy')


@pytest.mark.parametrize(('name', 'words'), [
    ('#', "must not contain characters other than alphanumerics"),
    ('a b', 'must not contain characters'),
    ('/a//b', "must not contain repeated '/'"),
    ('1abc', 'must not start with a number'),
    ('/' + 'a' * 300, 'should not exceed 247 characters'),
    ('/a/', 'must not end with a forward slash'),
    ('{bogus}/x', 'unknown substitution'),
    ('', 'is empty'),
    (5, 'is not a string'),
])
def test_invalid_topic_names_are_refused_with_the_reason(name, words):
    error = topic_name_error(name, 'inference_node', '/')
    assert words in error, error
    assert '/project/src' not in error and '\n' not in error


@pytest.mark.parametrize('name', ['/a/b', 'relative', '~/private', '{node}/out', '/camera_0/image_raw'])
def test_valid_names_pass(name):
    assert topic_name_error(name, 'inference_node', '/ns') == ''


def test_a_long_namespace_makes_a_relative_name_too_long():
    assert 'should not exceed' in topic_name_error('x' * 200, 'n', '/' + 'n' * 60)


def test_topic_check_as_a_param_spec_rule():
    spec = ParamSpec('input_topics', ['/a'], 'topics', check=topic_check('input_topics', 'inference_node'))
    assert spec.validate(['/a', '/b']) == ''
    assert spec.validate(['/a', '#']).startswith("input_topics '#' is not a valid ROS topic name")
    optional = topic_check('output_topic', allow_empty=True)
    assert optional('') == '' and 'is not a valid' in optional('a//b')
