"""The one ROS-side decode of a stage-time report (std_msgs/Float64MultiArray -> core StageReport)."""
from __future__ import annotations

from typing import Any

from isaac_perf.core.telemetry.stage_times import StageReport, decode


def stage_report_from_msg(msg: Any) -> StageReport:
    """The report a `.../stage_times` message carries; ValueError saying what is wrong when malformed."""
    return decode([d.label for d in msg.layout.dim], list(msg.data))
