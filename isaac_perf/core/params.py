"""Parameter specifications shared by every node: one table per node, no rclpy here.

A node declares its parameters from a list of `ParamSpec`; `isaac_perf.ros.params` turns each into a
`declare_parameter` call with a ParameterDescriptor, so `ros2 param describe` shows the description and
range, and rclpy itself refuses out-of-range values. `validate` covers what descriptors cannot express
(choices, list contents) and is called from the on-set callback.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False
    # Extra rule on the value: returns an error message, or '' when the value is fine.
    check: Callable[[Any], str] | None = field(default=None, compare=False)

    def validate(self, value: Any) -> str:
        """Return '' when `value` is acceptable, else a message saying what to fix."""
        if self.choices and value not in self.choices:
            return f'{self.name}={value!r} is not one of {", ".join(self.choices)}'
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                return f'{self.name}={value} is below its minimum {self.min}'
            if self.max is not None and value > self.max:
                return f'{self.name}={value} is above its maximum {self.max}'
        if self.check is not None:
            return self.check(value)
        return ''


def validate_all(specs: Iterable[ParamSpec], values: dict[str, Any]) -> list[str]:
    """Check `values` (name -> new value) against their specs; unknown names are left alone."""
    by_name = {s.name: s for s in specs}
    errors = []
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is not None:
            message = spec.validate(value)
            if message:
                errors.append(message)
    return errors


def spec_defaults(specs: Iterable[ParamSpec]) -> dict[str, Any]:
    return {s.name: s.default for s in specs}
