"""Declare a node's parameters from `ParamSpec` tables, with descriptors, ranges and validation."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from isaac_perf.core.params import ParamSpec
from isaac_perf.ros.compat import add_post_set_parameters_callback
from isaac_perf.ros.names import topic_name_error
from isaac_perf.ros.node_main import StartupError


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    text = spec.description
    if spec.choices:
        text += f' One of: {", ".join(spec.choices)}.'
    desc = ParameterDescriptor(description=text, read_only=spec.read_only)
    is_number = isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool)
    if is_number and (spec.min is not None or spec.max is not None):
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(
                from_value=int(spec.min if spec.min is not None else -2**31),
                to_value=int(spec.max if spec.max is not None else 2**31 - 1),
                step=int(spec.step or 0))]
        else:
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min if spec.min is not None else -1e300),
                to_value=float(spec.max if spec.max is not None else 1e300),
                step=float(spec.step or 0.0))]
    return desc


def _declare(node: Node, spec: ParamSpec) -> None:
    default = spec.default
    if isinstance(default, (list, tuple)) and len(default) == 0:
        # An empty list has no type of its own: declare it as a string array.
        node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor_for(spec))
        if node.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:  # no override given
            node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
    else:
        node.declare_parameter(spec.name, list(default) if isinstance(default, tuple) else default,
                               descriptor_for(spec))


NOT_ROS_TOPICS = {'source_topic'}  # a topic inside an MCAP file, never subscribed over ROS


def topic_errors(node: Node, specs: Iterable[ParamSpec], values: dict[str, Any]) -> list[str]:
    """Topic-name parameters (named *_topic, *_topics, topic_pattern, output_suffix) checked by rclpy's
    own rules against this node's name and namespace, so a name rcl would refuse when the subscription is
    (re)created is refused here, with the reason, and the node lives on. '' entries mean "none"/"default";
    '{i}' stands for a camera index."""
    errors = []
    for spec in specs:
        name = spec.name
        if name not in values or name in NOT_ROS_TOPICS:
            continue
        if name == 'output_suffix':
            if values[name]:
                error = topic_name_error(f'/camera/{values[name]}', node.get_name(), node.get_namespace(),
                                         what='output_suffix')
                if error:
                    errors.append(error.replace("'/camera/", "'.../"))
            continue
        if not (name.endswith(('_topic', '_topics')) or name == 'topic_pattern'):
            continue
        value = values[name]
        for topic in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(topic, str) and topic:
                error = topic_name_error(topic.replace('{i}', '0'), node.get_name(), node.get_namespace(),
                                         what=name)
                if error:
                    errors.append(error.replace(repr(topic.replace('{i}', '0')), repr(topic)))
                    break
    return errors


def declare_params(node: Node, specs: Iterable[ParamSpec],
                   on_change: Callable[[dict[str, Any]], None] | None = None,
                   extra_check: Callable[[dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
    """Declare every spec on `node` and return the current values by name.

    Values set later are validated per spec (and by `extra_check` for cross-field rules) in the on-set
    callback, which has no side effects; accepted changes reach `on_change` in the post-set callback.
    """
    specs = list(specs)
    by_name = {s.name: s for s in specs}
    for spec in specs:
        try:
            _declare(node, spec)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            # An override of the wrong type or out of its range: one line saying which, no traceback.
            raise StartupError(f'invalid start-up parameters: {exc}') from exc

    def on_set(params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in by_name}
        errors = [m for s in specs if s.name in changes for m in [s.validate(changes[s.name])] if m]
        errors += topic_errors(node, specs, changes)
        if not errors and extra_check is not None:
            errors = extra_check(changes)
        if errors:
            return SetParametersResult(successful=False, reason='; '.join(errors))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    if on_change is not None:
        def post_set(params: list[Parameter]) -> None:
            changes = {p.name: p.value for p in params if p.name in by_name}
            if changes:
                on_change(changes)
        add_post_set_parameters_callback(node, post_set)  # Humble: emulated
    values = {s.name: node.get_parameter(s.name).value for s in specs}
    errors = [m for s in specs for m in [s.validate(values[s.name])] if m]
    errors += topic_errors(node, specs, values)
    if errors:
        raise StartupError('invalid start-up parameters: ' + '; '.join(errors))  # a ValueError: exit 2
    return values
