"""Errors of the frame transport that callers act on (the descriptor's own error lives in descriptor.py).
"""
from __future__ import annotations


class TransportUnavailable(RuntimeError):
    """The zero-copy transport cannot run here (no space in the transport root, no CUDA IPC, ...).

    The message says what was missing and what to do; the ROS adapter falls back to plain images on it.
    """


def refusal_severity(reason: str) -> str | None:
    """How loud a node logs a frame the transport could not deliver (it is counted either way).

    None while this process is stopping: its publisher went first under the same Ctrl-C. 'warning' for
    'stale' (the reader fell a whole ring behind, or the publisher exited): overload, not bad input.
    'error' for the rest (malformed, version, forged, unreadable, cuda_unavailable): something to fix.
    """
    from isaac_perf.core.shutdown import stopping
    if stopping():
        return None
    return 'warning' if reason == 'stale' else 'error'
