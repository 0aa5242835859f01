"""On-disk cache for built artefacts (TensorRT plans, AOTInductor packages): keyed, checksummed, atomic.

A cached build is only used when its JSON sidecar matches the key it is asked for (model hash, precision,
shapes, GPU, library version...) and the file's size and SHA-256 match what was written: a plan built for
another GPU, by another TensorRT, or truncated by a crash is rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from isaac_perf.core.inference.engines.base import file_sha256


def cache_digest(key: Mapping[str, Any], length: int = 20) -> str:
    """A short stable hash of a key (for file names)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:length]


def write_artifact(tmp_path: str, path: str, key: Mapping[str, Any]) -> None:
    """Move a built artefact into place with a JSON sidecar holding its key and checksum.

    The sidecar is written last, so a crash mid-way leaves a file without a valid sidecar, which
    validate_artifact() rejects.
    """
    sha = file_sha256(tmp_path)
    os.replace(tmp_path, path)
    meta = dict(key)
    meta['sha256'] = sha
    meta['bytes'] = os.path.getsize(path)
    side = path + '.json'
    fd, tmp = tempfile.mkstemp(suffix='.json', dir=os.path.dirname(path))
    with os.fdopen(fd, 'w') as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    os.replace(tmp, side)


def validate_artifact(path: str, key: Mapping[str, Any]) -> str | None:
    """None when `path` is a complete artefact built for exactly `key`; else why it must be rebuilt."""
    side = path + '.json'
    if not os.path.isfile(path):
        return 'no cached build'
    if not os.path.isfile(side):
        return 'its metadata sidecar is missing'
    try:
        with open(side) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        return f'its metadata sidecar is unreadable ({e})'
    for k, v in key.items():
        if meta.get(k) != v:
            return f'it was built for {k}={meta.get(k)!r}, not {v!r}'
    if meta.get('bytes') != os.path.getsize(path):
        return 'its size does not match the sidecar (truncated or replaced)'
    if meta.get('sha256') != file_sha256(path):
        return 'its checksum does not match the sidecar (corrupt or replaced)'
    return None
