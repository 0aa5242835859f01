"""Frames lost before a node received them, counted: shared by inference_node and stream_batcher.

A subscription made through `ReceiptLosses.subscribe` reports two things a plain callback never sees:

- gaps in each publisher's sequence numbers (message info's `publication_sequence_number`, per
  `publisher_gid`; core.telemetry.stamps.PublisherGaps): frames overwritten in a DDS history or lost on
  the network. Humble's message info has no sequence numbers, so there this count stays 0;
- the middleware's message-lost event, where the RMW offers it (`message_lost_event` says which).

With the node's own counts (received = processed + dropped + pending) every published frame is accounted.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node

from isaac_perf.core.telemetry.stamps import PublisherGaps


def publisher_gid(info: Any) -> bytes | None:
    """The publisher id in a message info dict (None where the middleware gives none: Humble)."""
    gid = info.get('publisher_gid') if isinstance(info, dict) else None
    return bytes(gid['data']) if isinstance(gid, dict) and 'data' in gid else None


class ReceiptLosses:
    """Losses before receipt over all of a node's subscriptions (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gaps = PublisherGaps()
        self.lost_in_middleware = 0
        self.message_lost_event = 'subscribed'

    @property
    def lost_before_receipt(self) -> int:
        """Frames missing from the publishers' sequence numbers."""
        with self._lock:
            return self.gaps.dropped

    def observe(self, source: Hashable, info: Any) -> None:
        """Count the gap before this message from its message info (`source` tells subscriptions apart)."""
        key = (source, publisher_gid(info))
        seq = info.get('publication_sequence_number') if isinstance(info, dict) else None
        with self._lock:
            self.gaps.observe(key, seq)

    def _on_lost(self, event: Any) -> None:
        with self._lock:
            self.lost_in_middleware += int(getattr(event, 'total_count_change', 0))

    def subscribe(self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: Any,
                  source: Hashable, pass_info: bool = False, **kwargs: Any) -> Any:
        """`node.create_subscription` whose messages are counted here before `callback(msg)` runs
        (`callback(msg, info)` with `pass_info`)."""
        def on_message(msg: Any, info: Any) -> None:
            self.observe(source, info)
            if pass_info:
                callback(msg, info)
            else:
                callback(msg)

        try:
            return node.create_subscription(
                msg_type, topic, on_message, qos,
                event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_lost), **kwargs)
        except UnsupportedEventTypeError:
            self.message_lost_event = 'not offered by this middleware'
            return node.create_subscription(msg_type, topic, on_message, qos, **kwargs)

    def values(self) -> dict[str, Any]:
        """The diagnostics keys both nodes publish."""
        with self._lock:
            return {'frames_lost_before_receipt': self.gaps.dropped,
                    'frames_lost_middleware_event': self.lost_in_middleware,
                    'publisher_restarts': self.gaps.resets,
                    'message_lost_event': self.message_lost_event}
