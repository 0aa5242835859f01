"""Topic names checked by rclpy's own rules, for on-set parameter callbacks.

A name that rcl refuses (`#`, `a b`, `/a//b`, a digit first, longer than 255 after expansion) used to
pass parameter validation and kill the node when the subscription was recreated in the post-set callback,
so the `ros2 param set` request never answered. `topic_name_error` runs the same checks rcl will run
(validate_topic_name, then expand against the node's name and namespace, then validate_full_topic_name)
and returns the reason as one line, to be returned from the on-set callback instead.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from rclpy.exceptions import NameValidationException
from rclpy.expand_topic_name import expand_topic_name
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_topic_name import validate_topic_name

HINT = 'use letters, digits, _ and / (not starting with a digit, no //, at most 247 characters once expanded)'


def _reason(exc: NameValidationException) -> str:
    lines = str(exc).splitlines()
    head = lines[0].rstrip(':')
    if head.startswith('Invalid topic name: '):
        head = head[len('Invalid topic name: '):]
    head = head.replace("'255U - 8U'", '247 characters')
    caret = lines[2].index('^') - 3 if len(lines) > 2 and '^' in lines[2] else -1
    return head + (f' (character {caret + 1})' if caret >= 0 else '')


def topic_name_error(name: Any, node_name: str = 'node', namespace: str = '/', what: str = 'topic') -> str:
    """'' when rcl accepts `name` as a topic name for a node `node_name` in `namespace`, else why not."""
    if not isinstance(name, str):
        return f'{what} {name!r} is not a string'
    if not name:
        return f'{what} is empty: give a topic name such as /camera/image_raw'
    shown = name if len(name) <= 60 else name[:57] + '...'
    try:
        validate_topic_name(name)
        full = expand_topic_name(name, node_name, namespace)
        validate_full_topic_name(full)
    except NameValidationException as exc:
        return f'{what} {shown!r} is not a valid ROS topic name: {_reason(exc)}; {HINT}'
    except (ValueError, RuntimeError) as exc:  # expansion refuses e.g. an unknown {substitution}
        text = re.sub(r',? at /\S+:\d+', '', ' '.join(str(exc).split()))  # drop rcl's C source location
        return f'{what} {shown!r} is not a valid ROS topic name: {text}; {HINT}'
    return ''


def topic_names_error(names: Iterable[Any], node_name: str = 'node', namespace: str = '/',
                      what: str = 'topic', allow_empty: bool = False) -> str:
    """The first `topic_name_error` of a list of names ('' entries skipped when `allow_empty`)."""
    for name in names:
        if allow_empty and name == '':
            continue
        error = topic_name_error(name, node_name, namespace, what)
        if error:
            return error
    return ''


def topic_check(param: str, node_name: str = 'node', namespace: str = '/',
                allow_empty: bool = False) -> Callable[[Any], str]:
    """A `ParamSpec.check` for a string or string-array parameter holding topic names."""
    def check(value: Any) -> str:
        values = value if isinstance(value, (list, tuple)) else [value]
        return topic_names_error(values, node_name, namespace, what=param, allow_empty=allow_empty)
    return check
