"""Which publishers of an image topic speak the zero-copy transport, and whether a reader needs plain too.

A transport publisher offers two topics: the usual sensor_msgs/Image topic `<topic>` and a descriptor topic
`<topic>/zero_copy` (`descriptor_topic`), whose small messages say where in shared memory each frame lies. A
transport reader subscribes the descriptor topic only, so the publisher, which publishes plain Images only
while someone subscribes `<topic>`, pays no plain copy for it. A publisher that does not speak the transport
(a camera driver, a rosbag player) offers `<topic>` alone; a reader then needs the plain topic as well.

`PlainNeed` decides that from the ROS graph, with two rules that keep it from flapping:

- a plain-only publisher must be seen in `confirm` consecutive looks before the reader subscribes plain
  (a transport publisher appears on the graph one topic at a time, so for a moment it looks plain-only);
- once subscribed, plain Images from a transport publisher are dropped by publisher id (`transport_gids`),
  so a frame is never taken twice, once by descriptor and once by value.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ZERO_COPY_SUFFIX = 'zero_copy'


def descriptor_topic(topic: str) -> str:
    """The descriptor topic that goes with Image topic `topic` (/camera_0/image_raw -> .../zero_copy)."""
    return f"{topic.rstrip('/')}/{ZERO_COPY_SUFFIX}"


def plain_topic(descriptor: str) -> str:
    """The Image topic of descriptor topic `descriptor` (the inverse of `descriptor_topic`)."""
    suffix = '/' + ZERO_COPY_SUFFIX
    if not descriptor.endswith(suffix):
        raise ValueError(f'{descriptor!r} is not a descriptor topic (it must end in {suffix})')
    return descriptor[:-len(suffix)]


@dataclass(frozen=True)
class Endpoint:
    """One publisher on the graph: its node's fully qualified name and its endpoint id."""

    node: str
    gid: bytes


def same_gid(endpoint_gid: bytes, message_gid: bytes) -> bool:
    """Whether a message's publisher id names this endpoint (rmw ids may be padded differently)."""
    n = min(len(endpoint_gid), len(message_gid))
    return n > 0 and endpoint_gid[:n] == message_gid[:n] and not any(endpoint_gid[n:]) \
        and not any(message_gid[n:])


class PlainNeed:
    """Whether a transport reader must also subscribe the plain topic (see the module docstring)."""

    def __init__(self, confirm: int = 2) -> None:
        if confirm < 1:
            raise ValueError(f'confirm must be >= 1, got {confirm}')
        self.confirm = confirm
        self.needed = False
        self.transport_gids: frozenset[bytes] = frozenset()
        self._streak = 0

    def observe(self, plain: Iterable[Endpoint], descriptor_nodes: Iterable[str]) -> bool:
        """One look at the graph; returns whether the plain subscription is needed now."""
        speaking = set(descriptor_nodes)
        plain = list(plain)
        self.transport_gids = frozenset(e.gid for e in plain if e.node in speaking)
        plain_only = any(e.node not in speaking for e in plain)
        if plain_only == self.needed:
            self._streak = 0
        else:
            self._streak += 1
            if self._streak >= self.confirm or not plain_only:
                # Dropping plain is safe at once (nothing is lost: transport frames keep coming); adding
                # it waits for confirmation.
                self.needed, self._streak = plain_only, 0
        return self.needed

    def from_transport(self, message_gid: bytes) -> bool:
        """Whether a plain message came from a publisher that also sends descriptors (a duplicate)."""
        return any(same_gid(gid, message_gid) for gid in self.transport_gids)
