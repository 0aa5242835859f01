"""Where the package's launch/ and config/ files are, for colcon installs, pip installs and checkouts."""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = 'isaac_perf'


def share_dir() -> Path:
    """The package's share directory: a source checkout first, then the ament index, then the venv prefix."""
    source = Path(__file__).resolve().parents[2]
    if (source / 'package.xml').is_file() and (source / 'config').is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - not in an ament workspace
        pass
    return Path(sys.prefix) / 'share' / PACKAGE


def config_file(name: str) -> Path:
    return share_dir() / 'config' / name
