"""Writing tuned parameters as a ROS params file that `ros2 launch` and `isaac-perf run` read.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# ------------------------------------------------------------------------------------------ params files

def params_file_text(node: str, params: Mapping[str, Any], header: str = '') -> str:
    """A ROS 2 parameters file (the `--params-file` / launch `parameters=[path]` format) for one node.

    `node` is the node's fully qualified name (e.g. /stream_batcher); values keep their Python types, so a
    double stays a double (2.0, not 2) and the node accepts the file without a type error.
    """
    import yaml  # PyYAML is a runtime dependency; imported here so the search code needs only numpy

    if not node.startswith('/'):
        node = '/' + node
    clean = {k: (float(v) if isinstance(v, float) else v) for k, v in params.items()}
    body = yaml.safe_dump({node: {'ros__parameters': clean}}, default_flow_style=False, sort_keys=True)
    lines = [f'# {line}' for line in header.splitlines() if line.strip()] if header else []
    return '\n'.join(lines + [body.rstrip('\n')]) + '\n'


def write_params_file(path: str, node: str, params: Mapping[str, Any], header: str = '') -> None:
    """Write `params_file_text` to `path` atomically (a reader never sees half a file)."""
    import os
    import tempfile

    text = params_file_text(node, params, header)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tuned-', suffix='.yaml', dir=directory)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
