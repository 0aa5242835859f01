"""Zero-copy image topics for rclpy nodes: `FramePublisher` and `FrameSubscriber`.

The ROS side of `isaac_perf.core.transport`. A frame is written once into a shared-memory slot owned by the
publisher; a descriptor (a sensor_msgs/Image whose header, height, width, encoding and step describe the
frame and whose `data` is the encoded `core.transport.descriptor.Descriptor`: segment, slot, generation) goes
over DDS on `<topic>/zero_copy`; the subscriber maps the slot and hands the callback a `ReceivedFrame`, which
reads like a sensor_msgs/Image (`header`, `height`, `width`, `encoding`, `step`, `data`) but whose `data` is a
numpy view of the shared memory: no copy, no deserialisation of pixels. The slot stays locked for the
subscriber while that view (or anything derived from it) is alive, so it is never overwritten under a reader.

Negotiation (core.transport.negotiation): the publisher also offers the plain Image on `<topic>` and fills it
only while something subscribes it (`ros2 topic hz`, a viewer, rosbag); the subscriber takes plain Images only
from publishers that do not send descriptors. Without the transport on either end (`zero_copy` false, no
/dev/shm space, another OS) both fall back to plain sensor_msgs/Image, with one warning that says why.

Frames that cannot be delivered are counted by cause: on the publisher `slots_busy` (every slot held by
readers), on the subscriber by refusal reason (malformed, version, forged, stale, unreadable,
cuda_unavailable); the node passes them to its own drop counters (`dropped_zero_copy_<reason>`) through
`on_refused`, and `core.transport.errors.refusal_severity` says whether and how loud to log each.
"""
from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from isaac_perf.core.inference.frames import ImageFormatError, as_array, check_layout, pixel_format
from isaac_perf.core.transport.descriptor import Descriptor, DescriptorError, decode, encode
from isaac_perf.core.transport.errors import TransportUnavailable
from isaac_perf.core.transport.latency import TransportTimes, summarize
from isaac_perf.core.transport.negotiation import Endpoint, PlainNeed, descriptor_topic
from isaac_perf.core.transport.shm_ring import ShmReader, ShmWriter
from isaac_perf.ros.conversions import fill_image, set_layout, stamp_to_ns
from isaac_perf.ros.qos import replaceable_publisher
from isaac_perf.ros.receipt import ReceiptLosses, publisher_gid

__all__ = ['DEFAULT_SLOTS', 'FramePublisher', 'FrameSubscriber', 'ReceivedFrame', 'descriptor_topic',
           'publisher_totals', 'subscriber_values']

DEFAULT_SLOTS = 8
NEGOTIATE_PERIOD_S = 1.0


@dataclass
class ReceivedFrame:
    """A frame read through the transport; quacks like sensor_msgs/Image for check_image/image_to_numpy.

    Host frames: `data` is a 1-D uint8 view of the publisher's slot (locked while it lives). GPU frames
    (`memory` 'cuda', for a subscriber made with gpu_frames=True): `data` is None and `gpu` is the
    core.transport.cuda_ipc.CudaFrame, already ordered after the producer's copy on the subscriber's stream.
    """

    header: Any
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray | None
    descriptor: Descriptor = field(repr=False)
    gpu: Any = field(default=None, repr=False)

    @property
    def memory(self) -> str:
        return self.descriptor.memory if self.gpu is not None else 'host'

    def as_numpy(self) -> np.ndarray:
        """The pixels as HxWxC (C = 1 for mono), without a copy (host frames only)."""
        if self.data is None:
            raise ValueError('a GPU frame has no host pixels: use as_torch()')
        return as_array(self.data, self.encoding, self.width, self.height, self.step, bool(self.is_bigendian))

    def as_torch(self) -> Any:
        """The pixels as an HxWxC torch tensor without a copy: on the GPU for GPU frames, else on the CPU."""
        import torch
        fmt = pixel_format(self.encoding)
        if self.gpu is None:
            return torch.from_numpy(self.as_numpy())
        dtype = getattr(torch, np.dtype(fmt.dtype).name)
        return self.gpu.as_torch((self.height, self.width, fmt.channels), dtype)

    def release(self) -> None:
        """Let the publisher reuse the slot now (otherwise when the frame is garbage collected)."""
        self.data = np.empty(0, np.uint8)
        if self.gpu is not None:
            self.gpu.release()


class FramePublisher:
    """Publishes frames on `topic`: by descriptor to transport readers, as plain Images to everyone else."""

    def __init__(self, node: Node, topic: str, qos: Any, *, zero_copy: bool = True,
                 slots: int = DEFAULT_SLOTS, warn: Callable[[str], None] | None = None) -> None:
        self._node = node
        self._slots = int(slots)
        self._warn = warn or node.get_logger().warning
        # The descriptor publisher first: a reader that sees the plain one alone takes this for a
        # publisher that does not speak the transport (it waits for confirmation, but why make it wait).
        # replaceable: image_source recreates its publishers on a camera or QoS change (ros.qos)
        self._descriptors = (replaceable_publisher(node, Image, descriptor_topic(topic), qos) if zero_copy
                             else None)
        self._plain = replaceable_publisher(node, Image, topic, qos)
        self.topic = self._plain.topic_name
        self._writer: ShmWriter | None = None
        self._gpu_writer: Any = None  # core.transport.cuda_ipc.CudaIpcWriter, made by the first publish_gpu
        self._message = Image()
        self._descriptor_msg = Image()
        self.zero_copy = zero_copy
        self.fallback_reason = '' if zero_copy else 'zero_copy is false'
        self.counters = {'zero_copy': 0, 'plain': 0, 'slots_busy': 0}

    @property
    def segment(self) -> str:
        """The shared-memory segment in use ('' before the first transport frame)."""
        return self._writer.name if self._writer is not None else ''

    def publish(self, pixels: np.ndarray, encoding: str, stamp: Any, frame_id: str) -> None:
        """Send one frame (HxWxC or HxW array, any strides): one copy per path that has a reader."""
        if self._descriptor_readers():
            self._publish_descriptor(pixels, encoding, stamp, frame_id)
        if self._plain_readers():
            self._publish_plain(pixels, encoding, stamp, frame_id)

    def _descriptor_readers(self) -> bool:
        return self._descriptors is not None and self._descriptors.get_subscription_count() > 0

    def _plain_readers(self) -> bool:
        """Plain Images go out while something subscribes them, or always without the transport."""
        return self._descriptors is None or self._plain.get_subscription_count() > 0

    def _publish_plain(self, pixels: np.ndarray, encoding: str, stamp: Any, frame_id: str) -> None:
        msg = fill_image(self._message, pixels, encoding)
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        self._plain.publish(msg)
        self.counters['plain'] += 1

    def _send_descriptor(self, descriptor: Descriptor | None, stamp: Any, frame_id: str) -> None:
        """Publish `descriptor` (layout fields already set on the message); None = every slot held."""
        if descriptor is None:
            self.counters['slots_busy'] += 1
            return
        msg = self._descriptor_msg
        msg.data = array.array('B', encode(descriptor))  # as is: no per-item checks
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        self._descriptors.publish(msg)
        self.counters['zero_copy'] += 1

    def _publish_descriptor(self, pixels: np.ndarray, encoding: str, stamp: Any, frame_id: str) -> None:
        # set_layout refuses a shape or dtype the encoding cannot have
        pixels = set_layout(self._descriptor_msg, pixels, encoding)
        writer = self._writer_for(pixels.nbytes)
        if writer is None:
            return
        loan = writer.loan(pixels.nbytes)
        if loan is not None:
            try:
                np.copyto(loan.array[:pixels.nbytes].view(pixels.dtype).reshape(pixels.shape), pixels)
            except BaseException:
                loan.abandon()
                raise
        self._send_descriptor(loan.commit() if loan is not None else None, stamp, frame_id)

    def publish_gpu(self, tensor: Any, encoding: str, stamp: Any, frame_id: str) -> None:
        """Send a frame that lives on the GPU (a contiguous HxWxC or HxW torch CUDA tensor): to transport
        readers by CUDA IPC (one device-to-device copy, ordered by the slot's interprocess event: a reader
        never sees it before the copy is done), to plain subscribers copied to the host once."""
        if self._descriptor_readers():
            # The tensor's shape and dtype without host memory (a zero-strided view), for the layout check,
            # which refuses a shape or dtype the encoding cannot have.
            dtype = np.dtype(str(tensor.dtype).removeprefix('torch.'))
            shape_only = np.broadcast_to(np.zeros((), dtype), tuple(tensor.shape))
            set_layout(self._descriptor_msg, shape_only, encoding)
            writer = self._gpu_writer_for(tensor)
            if writer is not None:
                self._send_descriptor(writer.write_tensor(tensor), stamp, frame_id)
        if self._plain_readers():
            self._publish_plain(tensor.cpu().numpy(), encoding, stamp, frame_id)

    def _gpu_writer_for(self, tensor: Any) -> Any:
        from isaac_perf.core.transport.cuda_ipc import CudaIpcWriter
        nbytes = tensor.numel() * tensor.element_size()
        writer = self._gpu_writer
        if writer is not None and (writer.slot_bytes < nbytes or writer.device != tensor.device.index):
            writer.close()  # a bigger frame or another GPU: a new ring (readers keep what they hold)
            writer = self._gpu_writer = None
        if writer is None:
            try:
                writer = CudaIpcWriter(self.topic, self._slots, nbytes, tensor.device.index)
                self._gpu_writer = writer
            except TransportUnavailable as exc:
                self._fall_back(str(exc))
                return None
        return writer

    def _writer_for(self, nbytes: int) -> ShmWriter | None:
        if self._writer is None:
            try:
                self._writer = ShmWriter(self.topic, self._slots, nbytes)
            except (TransportUnavailable, OSError) as exc:  # OSError: no OFD locks (not Linux), no /dev/shm
                self._fall_back(str(exc))
                return None
        return self._writer

    def _fall_back(self, reason: str) -> None:
        self._warn(f'zero-copy transport unavailable on {self.topic}: {reason}; publishing plain '
                   'sensor_msgs/Image only')
        self.fallback_reason = reason
        self.zero_copy = False
        if self._descriptors is not None:
            self._node.destroy_publisher(self._descriptors)
            self._descriptors = None

    def destroy(self) -> None:
        for pub in (self._descriptors, self._plain):
            if pub is not None:
                self._node.destroy_publisher(pub)
        self._descriptors = None
        for writer in (self._writer, self._gpu_writer):
            if writer is not None:
                writer.close()
        self._writer = self._gpu_writer = None


def subscriber_values(subscribers: list[FrameSubscriber]) -> dict[str, str]:
    """Diagnostics over a node's subscribers: the paths frames come by (`input_paths`) and where the
    transport time went (core.transport.latency)."""
    return {'input_paths': ','.join(sorted({sub.mode for sub in subscribers})) or 'none',
            **summarize([sub.times for sub in subscribers])}


def publisher_totals(publishers: list[FramePublisher]) -> dict[str, Any]:
    """Diagnostics over a node's publishers: frames per path, and why the transport is off where it is."""
    totals: dict[str, Any] = {f'frames_{k}': sum(p.counters[k] for p in publishers)
                              for k in ('zero_copy', 'plain', 'slots_busy')}
    off = sorted({p.fallback_reason for p in publishers if p.fallback_reason})
    totals['zero_copy'] = 'off: ' + '; '.join(off) if off else 'on'
    return totals


class FrameSubscriber:
    """Receives frames of `topic` by descriptor (zero-copy) and, from publishers without it, plain.

    `callback(frame)` gets a `ReceivedFrame` or a sensor_msgs/Image; both have header, height, width,
    encoding, step, is_bigendian and data. `on_refused(reason, message)` is told of every descriptor that
    could not be turned into a frame (that frame is lost; the node counts it as a drop).
    """

    def __init__(self, node: Node, topic: str, callback: Callable[[Any], None], qos: Any, *,
                 losses: ReceiptLosses, source: Any, zero_copy: bool = True,
                 on_refused: Callable[[str, str], None] | None = None, gpu_frames: bool = False,
                 cuda_stream: int = 0, **kwargs: Any) -> None:
        self._node = node
        self._callback = callback
        self._qos = qos
        self._losses = losses
        self._source = source
        self._kwargs = kwargs
        self._on_refused = on_refused or (lambda reason, message: None)
        self._reader = None
        if zero_copy:
            try:
                self._reader = ShmReader()
            except TransportUnavailable as exc:  # not Linux: read plain Images only
                node.get_logger().warning(f'zero-copy transport unavailable for {topic}: {exc}')
        self._gpu_reader: Any = None  # core.transport.cuda_ipc.CudaIpcReader, at the first GPU descriptor
        self._gpu_frames = gpu_frames  # hand GPU frames over as they are; else copy them to the host
        self._cuda_stream = cuda_stream
        self.gpu_to_host = 0  # GPU frames copied to the host for this (host) consumer
        self.times = TransportTimes()  # where the transport time of descriptor frames goes
        self._need = PlainNeed()
        self._descriptors = None
        self._plain = None
        self._timer = None
        self._graph_lock = threading.Lock()  # negotiation (a timer) against destroy (the node's own thread)
        self.refused: dict[str, int] = {}
        if self._reader is None:
            self._plain = self._subscribe_plain(topic)
            self.topic = self._plain.topic_name
            return
        self._descriptors = losses.subscribe(node, Image, descriptor_topic(topic), self._on_descriptor, qos,
                                             source=(source, 'zero_copy'), pass_info=True, **kwargs)
        self.topic = self._descriptors.topic_name[:-len('/zero_copy')]
        self._timer = node.create_timer(NEGOTIATE_PERIOD_S, self._negotiate)
        self._negotiate()

    @property
    def mode(self) -> str:
        """'zero_copy', 'plain' or 'zero_copy+plain' (publishers of both kinds on the topic)."""
        if self._descriptors is None:
            return 'plain'
        return 'zero_copy+plain' if self._plain is not None else 'zero_copy'

    def _subscribe_plain(self, topic: str) -> Any:
        return self._losses.subscribe(self._node, Image, topic, self._on_plain, self._qos,
                                      source=(self._source, 'plain'), pass_info=True, **self._kwargs)

    def _negotiate(self) -> None:
        with self._graph_lock:
            if self._descriptors is not None:
                self._look_at_graph()

    def _look_at_graph(self) -> None:
        node = self._node
        speaking = {f'{e.node_namespace.rstrip("/")}/{e.node_name}'
                    for e in node.get_publishers_info_by_topic(self._descriptors.topic_name)}
        plain = [Endpoint(f'{e.node_namespace.rstrip("/")}/{e.node_name}', bytes(e.endpoint_gid))
                 for e in node.get_publishers_info_by_topic(self.topic)]
        # Our own plain subscription is not a publisher, so it never feeds back into this decision.
        needed = self._need.observe(plain, speaking)
        if needed and self._plain is None:
            self._plain = self._subscribe_plain(self.topic)
        elif not needed and self._plain is not None:
            node.destroy_subscription(self._plain)
            self._plain = None

    def _on_plain(self, msg: Image, info: Any) -> None:
        if self._reader is not None and self._need.from_transport(publisher_gid(info) or b''):
            return  # the same frame also came (or comes) by descriptor
        self._callback(msg)

    def _on_descriptor(self, msg: Image, info: Any) -> None:
        if isinstance(info, dict):
            self.times.record(stamp_to_ns(msg.header.stamp), info.get('source_timestamp'),
                              info.get('received_timestamp'), time.time_ns())
        gpu = None
        try:
            descriptor = decode(msg.data)
            check_layout(msg.encoding, msg.width, msg.height, msg.step, descriptor.nbytes)
            if descriptor.memory == 'cuda':
                gpu = self._open_gpu(descriptor)
                if gpu is None:
                    return
                pixels = None if self._gpu_frames else gpu.to_host(self._cuda_stream)
            else:
                pixels = self._reader.open(descriptor)[:descriptor.nbytes]
        except DescriptorError as exc:
            self._refuse(exc.reason, str(exc))
            return
        except ImageFormatError as exc:
            self._refuse('malformed', f'descriptor on {self.topic} describes no valid image: {exc}')
            return
        except OSError as exc:  # the segment cannot be mapped or locked here
            self._refuse('unreadable', f'frame on {self.topic} cannot be read from shared memory: {exc}')
            return
        if gpu is not None and not self._gpu_frames:
            gpu.release()  # copied: the slot goes back at once
            gpu = None
            self.gpu_to_host += 1
        self._callback(ReceivedFrame(header=msg.header, height=msg.height, width=msg.width,
                                     encoding=msg.encoding, is_bigendian=msg.is_bigendian, step=msg.step,
                                     data=pixels, descriptor=descriptor, gpu=gpu))

    def _open_gpu(self, descriptor: Descriptor) -> Any:
        """The CUDA frame of `descriptor`, or None (refused as 'cuda_unavailable') where CUDA IPC cannot
        run here: no CUDA, or a sandbox that forbids opening another process's memory."""
        try:
            if self._gpu_reader is None:
                from isaac_perf.core.transport.cuda_ipc import CudaIpcReader
                self._gpu_reader = CudaIpcReader()
            return self._gpu_reader.open(descriptor, self._cuda_stream)
        except TransportUnavailable as exc:
            self._refuse('cuda_unavailable', f'GPU frame on {self.topic} cannot be read here: {exc}')
            return None

    def _refuse(self, reason: str, message: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._on_refused(reason, message)

    def destroy(self) -> None:
        node = self._node
        with self._graph_lock:
            for sub in (self._descriptors, self._plain):
                if sub is not None:
                    node.destroy_subscription(sub)
            self._descriptors = self._plain = None
            if self._timer is not None:
                node.destroy_timer(self._timer)
                self._timer = None
        # The host reader's mappings stay valid for frames still held (their views keep them alive).
        if self._gpu_reader is not None:
            self._gpu_reader.close()  # closes each segment now, or at its last frame's release
