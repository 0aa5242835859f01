"""The large-frame DDS configuration: where the shipped Fast DDS profile is, and the environment to apply.

Camera frames (0.9 MB at 640x480 rgb8, 6.2 MB at 1920x1080) do not fit Fast DDS's default 512 KiB
shared-memory segment, so between processes they go fragmented over UDP loopback and are lost or stall
(BENCHMARKS.md, "The pipeline as ros2 launch runs it"). `config/fastdds_large_frames.xml` gives each
participant a 128 MiB segment. Fast DDS reads it from `FASTDDS_DEFAULT_PROFILES_FILE` when a participant
is created, so the variable must be in a process's environment before `rclpy.init`: launch files set it
on the nodes they start, `isaac-perf run` sets it in its own process before initialising rclpy.

Rules (`profile_environment`), in order:

- `ISAAC_PERF_DDS_PROFILE=off` (or 0/false/no/none): nothing is applied;
- a user's own `FASTDDS_DEFAULT_PROFILES_FILE` (or the deprecated `FASTRTPS_DEFAULT_PROFILES_FILE`) is
  kept as it is: their profile wins;
- another middleware (`RMW_IMPLEMENTATION` set and not rmw_fastrtps_*): nothing is applied;
- otherwise `FASTDDS_DEFAULT_PROFILES_FILE` = the shipped profile, or the file `ISAAC_PERF_DDS_PROFILE`
  names. Only the FASTDDS_ variable is set: setting the deprecated FASTRTPS_ one too loads the file twice.

No rclpy here: launch files, the CLI and tests call it as plain Python.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from isaac_perf.core.paths import config_file

PROFILE_NAME = 'fastdds_large_frames.xml'
PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
DEPRECATED_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
SWITCH_VARIABLE = 'ISAAC_PERF_DDS_PROFILE'
OFF_VALUES = frozenset({'off', '0', 'false', 'no', 'none'})
SEGMENT_BYTES = 128 * 2**20  # what the shipped profile sets; documented beside the XML


def profile_path() -> Path:
    """The shipped profile (config/ of a checkout, a colcon install or a pip install)."""
    return config_file(PROFILE_NAME)


@dataclass(frozen=True)
class DdsDecision:
    """What to add to a process's environment, and why (one line for logs and diagnostics)."""

    environment: dict[str, str] = field(default_factory=dict)
    reason: str = ''

    @property
    def applied(self) -> bool:
        return bool(self.environment)


def profile_environment(environ: Mapping[str, str] | None = None) -> DdsDecision:
    """The variables to set before rclpy.init for the large-frame configuration (see the module doc)."""
    env = os.environ if environ is None else environ
    switch = env.get(SWITCH_VARIABLE, '').strip()
    if switch.lower() in OFF_VALUES:
        return DdsDecision(reason=f'{SWITCH_VARIABLE}={switch}: DDS profile off (middleware defaults)')
    for name in (PROFILE_VARIABLE, DEPRECATED_VARIABLE):
        if env.get(name):
            return DdsDecision(reason=f'{name}={env[name]} is set: using that profile')
    rmw = env.get('RMW_IMPLEMENTATION', '').strip()
    if rmw and not rmw.startswith('rmw_fastrtps'):
        return DdsDecision(reason=f'RMW_IMPLEMENTATION={rmw}: the Fast DDS profile does not apply')
    path = Path(switch).expanduser() if switch else profile_path()
    if not path.is_file():
        where = f'{SWITCH_VARIABLE}={switch}' if switch else 'the shipped profile'
        raise FileNotFoundError(f'{where} names {path}, which does not exist: point {SWITCH_VARIABLE} at '
                                f'a Fast DDS XML file, or set {SWITCH_VARIABLE}=off')
    return DdsDecision({PROFILE_VARIABLE: str(path)}, f'{PROFILE_VARIABLE}={path}')


def dds_environment() -> dict[str, str]:
    """What a launch file adds to each node's environment (launch_ros Node(additional_env=...))."""
    return profile_environment().environment


def apply(environ: MutableMapping[str, str] | None = None) -> DdsDecision:
    """Set the large-frame configuration in `environ` (default os.environ); call before rclpy.init."""
    env = os.environ if environ is None else environ
    decision = profile_environment(env)
    env.update(decision.environment)
    return decision
