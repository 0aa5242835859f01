"""Zero-copy frames between processes: host shared memory (shm_ring) and CUDA IPC (cuda_ipc).

Why: a 1080p rgb8 Image serialised through DDS costs tens of milliseconds between two rclpy processes
(design.md section 5). Here the publisher writes the pixels once into a shared slot and sends a
~250-byte descriptor; the subscriber maps the slot. The core knows nothing about ROS: the adapter puts
`descriptor.encode(...)` into an Image's `data` and keeps the image metadata in its other fields.
"""
from isaac_perf.core.transport.descriptor import MAGIC, VERSION, Descriptor, DescriptorError, decode, encode
from isaac_perf.core.transport.errors import TransportUnavailable
from isaac_perf.core.transport.segments import clean_stale_segments

__all__ = ['MAGIC', 'VERSION', 'Descriptor', 'DescriptorError', 'TransportUnavailable',
           'clean_stale_segments', 'decode', 'encode']
