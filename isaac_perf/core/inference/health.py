"""The /diagnostics level of the camera and inference nodes, as pure functions over their state.

Each fills a `core.telemetry.health.Status` (level and message); the node adds its key/values. Kept here
so the rules (no engine is an error, a fallback is a warning, ...) are tested without ROS.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.health import Status


def engine_summary(status: Status, engine_error: str, loaded: bool) -> bool:
    """Summarise a node without a usable engine; True when it did (the caller's checks then stop)."""
    if engine_error:
        status.summary(Level.ERROR, f'no engine: {engine_error}')
        return True
    if not loaded:
        status.summary(Level.WARN, 'loading the engine')
        return True
    return False


def inference_summary(status: Status, *, engine_error: str, loaded: bool, running_on: str,
                      last_error: str, drops_by_reason: Mapping[str, int], warnings: Sequence[str]) -> None:
    """inference_node: frames lost to bad input or a failing engine are an error; a fallback taken at
    load (no GPU, no TensorRT) a warning; queue overflow alone is load, not a fault."""
    if engine_summary(status, engine_error, loaded):
        return
    if last_error and (drops_by_reason.get('bad_input') or drops_by_reason.get('engine_error')):
        status.summary(Level.ERROR, last_error)
    elif warnings:
        status.summary(Level.WARN, warnings[-1])
    else:
        status.summary(Level.OK, f'running on {running_on}')


def source_summary(status: Status, source_error: str, cameras: int) -> None:
    """image_source: a source that cannot be opened is an error (the node publishes nothing)."""
    if source_error:
        status.summary(Level.ERROR, source_error)
    else:
        status.summary(Level.OK, f'publishing {cameras} camera(s)')
