"""The transport's node parameters, one definition for every node that publishes or reads frames."""
from __future__ import annotations

import os

from isaac_perf.core.params import ParamSpec

ZERO_COPY_READER = ParamSpec(
    'zero_copy', True, 'Read frames through shared memory from publishers that offer it (<topic>/zero_copy: '
    'image_source, any isaac_perf FramePublisher): no copy, no deserialisation. Publishers without it are '
    'read as plain sensor_msgs/Image either way. false = subscribe plain Images only. Changing it '
    're-subscribes.')

ZERO_COPY_WRITER = (
    ParamSpec('zero_copy', True, 'Offer frames through shared memory on <topic>/zero_copy (descriptors '
              'only over DDS; isaac_perf readers take them without a copy). Plain sensor_msgs/Image is still '
              'published on <topic>, filled only while something subscribes it. false = plain only.'),
    ParamSpec('zero_copy_slots', 8, 'Shared-memory frames per camera (the ring a slow reader can hold '
              'without the publisher skipping frames); memory = slots x frame size per camera.',
              min=2, max=256),
)


def publish_threads(setting: int, cameras: int) -> int:
    """Threads for `publish_threads` = `setting` (0 = one per camera, at most half the cores)."""
    return setting if setting > 0 else max(1, min(cameras, (os.cpu_count() or 2) // 2))
