"""rclpy differences between Humble (rclpy 3.3), Jazzy (7.x) and Kilted (9.x), feature-detected in one place.

Checked against rclpy's humble branch (rclpy/rclpy/node.py, __init__.py, utilities.py,
src/rclpy/subscription.cpp):
- `Node.add_post_set_parameters_callback` is Iron+. Humble only has on-set callbacks, run *before* the
  values are stored. Every Humble set path (declare, set_parameters, set_parameters_atomically, the
  parameter services) ends in `Node._set_parameters_atomically`, so the post-set contract is kept by
  calling the callbacks after that method succeeds.
- `rclpy.try_shutdown` is Iron+; `rclpy.utilities.try_shutdown` exists on every distro.
- Humble's `take_message` returns `(msg, {'source_timestamp', 'received_timestamp'})`: no
  `publication_sequence_number` and no `publisher_gid` (topic_watch then counts drops from stamps).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import try_shutdown as _try_shutdown

PostSetCallback = Callable[[list[Parameter]], None]
_EMULATED = '_isaac_perf_post_set_callbacks'


def has_post_set_callbacks(node: Node) -> bool:
    """True where rclpy itself has post-set parameter callbacks (Iron and later)."""
    return callable(getattr(node, 'add_post_set_parameters_callback', None))


def add_post_set_parameters_callback(node: Node, callback: PostSetCallback) -> None:
    """`node.add_post_set_parameters_callback(callback)`, or its equivalent on Humble.

    The callback sees the parameters of each accepted set, after they are stored (so `get_parameter`
    inside it returns the new values), on every distro.
    """
    if has_post_set_callbacks(node):
        node.add_post_set_parameters_callback(callback)
        return
    callbacks: list[PostSetCallback] | None = node.__dict__.get(_EMULATED)
    if callbacks is None:
        inner = getattr(node, '_set_parameters_atomically', None)
        if inner is None:
            raise RuntimeError('this rclpy has neither Node.add_post_set_parameters_callback (Iron+) nor '
                               "Humble's Node._set_parameters_atomically: use rclpy from Humble, Jazzy or "
                               'Kilted')
        callbacks = []

        def set_then_notify(parameter_list: list[Parameter], *args: Any, **kwargs: Any):
            result = inner(parameter_list, *args, **kwargs)
            if result.successful:
                for cb in list(callbacks):
                    cb(parameter_list)
            return result
        setattr(node, _EMULATED, callbacks)
        node._set_parameters_atomically = set_then_notify  # type: ignore[method-assign]
    callbacks.append(callback)


def try_shutdown(context=None) -> None:
    """Shut `context` (default: the global one) down unless it already is; every distro."""
    _try_shutdown(context=context)
