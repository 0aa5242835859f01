"""Errors of the frame transport that callers act on (the descriptor's own error lives in descriptor.py).
"""
from __future__ import annotations


class TransportUnavailable(RuntimeError):
    """The zero-copy transport cannot run here (no space in the transport root, no CUDA IPC, ...).

    The message says what was missing and what to do; the ROS adapter falls back to plain images on it.
    """
