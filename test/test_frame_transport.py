"""The zero-copy transport over real DDS (ros/frame_transport.py): frames cross processes bit-exactly through
shared memory, a plain Image subscriber keeps receiving beside a transport one, the plain copy is paid only
while someone subscribes it, publishers without the transport are read plain, held frames are never
overwritten, and forged descriptors are refused and counted."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from isaac_perf.core.transport.descriptor import Descriptor, encode  # noqa: E402
from isaac_perf.ros.conversions import numpy_to_image  # noqa: E402
from isaac_perf.ros.frame_transport import FramePublisher, FrameSubscriber, ReceivedFrame  # noqa: E402
from isaac_perf.ros.receipt import ReceiptLosses  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

PUBLISHER = textwrap.dedent('''
    import hashlib, json, sys
    import numpy as np
    from isaac_perf.ros.frame_transport import FramePublisher
    from isaac_perf.ros.node_main import run_node
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    class Pub(Node):
        def __init__(self):
            super().__init__('frame_transport_pub')
            self.pub = FramePublisher(self, '/ft/image', QoSProfile(depth=10,
                                      reliability=ReliabilityPolicy.RELIABLE), slots=4)
            self.rng = np.random.default_rng(7)
            self.n = 0
            self.create_timer(0.02, self.tick)

        def tick(self):
            self.n += 1
            h, w = (48, 64) if self.n < 40 else (96, 128)  # the segment grows on the way
            frame = self.rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            self.pub.publish(frame, 'rgb8', self.get_clock().now().to_msg(), hashlib.sha1(frame).hexdigest())

        def destroy_node(self):
            print(json.dumps({**self.pub.counters, 'segment': self.pub.segment}), flush=True)
            self.pub.destroy()
            super().destroy_node()

    sys.exit(run_node(Pub, []))
''')


def _digest(frame) -> str:
    return hashlib.sha1(np.asarray(frame.data, dtype=np.uint8).tobytes()).hexdigest()


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    """Segments in a folder of this test's own, so a leak shows and the real /dev/shm is never touched."""
    monkeypatch.setenv('ISAAC_PERF_SHM_DIR', str(tmp_path))
    return tmp_path


def _collector(node, topic, frames, refused=None, zero_copy=True):
    def on_refused(reason, message):
        if refused is not None:
            refused.append((reason, message))
    return FrameSubscriber(node, topic, frames.append, RELIABLE, losses=ReceiptLosses(), source=topic,
                           zero_copy=zero_copy, on_refused=on_refused)


def test_frames_cross_processes_bit_exactly_beside_a_plain_subscriber(ros_context, spin, shm_dir):
    node = Node('frame_transport_sub', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    shared, plain = [], []  # (type, shape, intact): frames are not kept, their slots go back at once

    def check(frame, into):
        into.append((type(frame), (frame.height, frame.width), _digest(frame) == frame.header.frame_id))

    sub = FrameSubscriber(node, '/ft/image', lambda f: check(f, shared), RELIABLE, losses=ReceiptLosses(),
                          source='ft')
    node.create_subscription(Image, '/ft/image', lambda m: check(m, plain), RELIABLE)
    proc = subprocess.Popen([sys.executable, '-c', PUBLISHER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    try:
        # Past the segment's growth (frame 40): both sizes arrive by both paths.
        assert spin(executor, lambda: len(shared) >= 60 and len(plain) >= 60, 60.0), \
            (len(shared), len(plain), proc.poll())
        assert all(kind is ReceivedFrame for kind, _, _ in shared), 'transport frames came by value'
        assert all(intact for _, _, intact in shared), 'a shared-memory frame changed'
        assert all(intact for _, _, intact in plain), 'a plain frame changed'
        assert {shape for _, shape, _ in shared} == {(48, 64), (96, 128)}
        assert sub.mode == 'zero_copy'  # a transport publisher is never read plain
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        sub.destroy()
        node.destroy_node()
    assert proc.returncode == 0, err
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters['zero_copy'] > 0 and counters['plain'] > 0  # both kinds of reader were served
    assert not list(shm_dir.iterdir()), 'the publisher left its segment behind'


def test_the_plain_copy_is_paid_only_while_a_plain_subscriber_exists(ros_context, spin, shm_dir):
    node = Node('frame_transport_both', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    pub = FramePublisher(node, '/ft/pay', RELIABLE, slots=8)  # room for every frame the test keeps
    frames = []
    sub = _collector(node, '/ft/pay', frames)
    frame = np.arange(32 * 24 * 3, dtype=np.uint8).reshape(24, 32, 3)
    try:
        assert spin(executor, lambda: pub._descriptors.get_subscription_count() == 1, 10.0)
        for _ in range(5):
            pub.publish(frame, 'rgb8', node.get_clock().now().to_msg(), 'cam')
        assert spin(executor, lambda: len(frames) == 5, 10.0)
        assert pub.counters == {'zero_copy': 5, 'plain': 0, 'slots_busy': 0}
        viewer = node.create_subscription(Image, '/ft/pay', lambda m: None, RELIABLE)
        assert spin(executor, lambda: pub._plain.get_subscription_count() == 1, 10.0)
        pub.publish(frame, 'rgb8', node.get_clock().now().to_msg(), 'cam')
        assert pub.counters['plain'] == 1
        node.destroy_subscription(viewer)
        assert spin(executor, lambda: pub._plain.get_subscription_count() == 0, 10.0)
        pub.publish(frame, 'rgb8', node.get_clock().now().to_msg(), 'cam')
        assert pub.counters['plain'] == 1 and pub.counters['zero_copy'] == 7
        assert spin(executor, lambda: len(frames) == 7, 10.0)
        assert all(np.array_equal(f.data, frame.reshape(-1)) for f in frames)
    finally:
        frames.clear()
        sub.destroy()
        pub.destroy()
        node.destroy_node()


def test_held_frames_are_never_overwritten_and_a_full_ring_is_counted(ros_context, spin, shm_dir):
    node = Node('frame_transport_hold', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    pub = FramePublisher(node, '/ft/hold', RELIABLE, slots=2)
    frames = []
    sub = _collector(node, '/ft/hold', frames)
    try:
        assert spin(executor, lambda: pub._descriptors.get_subscription_count() == 1, 10.0)
        for value in (1, 2):
            pub.publish(np.full((8, 8, 3), value, np.uint8), 'rgb8', node.get_clock().now().to_msg(), 'c')
        assert spin(executor, lambda: len(frames) == 2, 10.0)
        # Both slots are held by the reader: the next frame cannot go anywhere and is counted.
        pub.publish(np.full((8, 8, 3), 3, np.uint8), 'rgb8', node.get_clock().now().to_msg(), 'c')
        assert pub.counters['slots_busy'] == 1
        assert [int(f.data[0]) for f in frames] == [1, 2] and all(len(set(f.data)) == 1 for f in frames)
        frames.pop(0).release()  # one slot free again
        pub.publish(np.full((8, 8, 3), 4, np.uint8), 'rgb8', node.get_clock().now().to_msg(), 'c')
        assert spin(executor, lambda: len(frames) == 2, 10.0)
        assert [int(f.data[0]) for f in frames] == [2, 4]
    finally:
        frames.clear()
        sub.destroy()
        pub.destroy()
        node.destroy_node()


def test_a_publisher_without_the_transport_is_read_plain(ros_context, spin, shm_dir):
    node = Node('frame_transport_plain', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    frames = []
    sub = _collector(node, '/ft/driver', frames)
    driver = node.create_publisher(Image, '/ft/driver', RELIABLE)  # a camera driver: plain Images only
    msg = numpy_to_image(np.full((4, 6, 3), 9, np.uint8), 'rgb8', frame_id='driver')
    try:
        assert spin(executor, lambda: sub.mode == 'zero_copy+plain', 15.0)
        assert spin(executor, lambda: driver.get_subscription_count() == 1, 10.0)
        driver.publish(msg)
        assert spin(executor, lambda: len(frames) == 1, 10.0)
        assert isinstance(frames[0], Image) and frames[0].header.frame_id == 'driver'
        node.destroy_publisher(driver)
        assert spin(executor, lambda: sub.mode == 'zero_copy', 15.0)  # nothing plain left to read
    finally:
        sub.destroy()
        node.destroy_node()


def test_forged_and_malformed_descriptors_are_refused_and_counted(ros_context, spin, shm_dir):
    node = Node('frame_transport_forged', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    frames, refused = [], []
    sub = _collector(node, '/ft/forged', frames, refused)
    forger = node.create_publisher(Image, '/ft/forged/zero_copy', RELIABLE)
    ghost = Descriptor(memory='host', segment='isaac_perf.1.no_such_camera.0', slot=0, generation=1,
                       nbytes=12, publisher_pid=1)
    bad_version = bytearray(encode(ghost))
    bad_version[4] = 99  # the version byte follows the 4-byte magic
    payloads = [b'', b'not a descriptor at all', bytes(encode(ghost)), bytes(bad_version)]
    try:
        assert spin(executor, lambda: forger.get_subscription_count() == 1, 10.0)
        for data in payloads:
            msg = Image(height=2, width=2, encoding='rgb8', step=6)
            msg.data = data
            forger.publish(msg)
        assert spin(executor, lambda: len(refused) == len(payloads), 10.0), refused
        reasons = [r for r, _ in refused]
        assert reasons[:2] == ['malformed', 'malformed']
        assert reasons[2] in ('forged', 'stale') and reasons[3] == 'version'
        assert 'version' in refused[3][1] and '99' in refused[3][1]  # the message says what to fix
        assert not frames and sum(sub.refused.values()) == len(payloads)
    finally:
        sub.destroy()
        node.destroy_node()


GPU_PUBLISHER = textwrap.dedent('''
    import sys
    import torch
    from isaac_perf.ros.frame_transport import FramePublisher
    from isaac_perf.ros.node_main import run_node
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    class Pub(Node):
        def __init__(self):
            super().__init__('frame_transport_gpu_pub')
            self.pub = FramePublisher(self, '/ft/gpu', QoSProfile(depth=10,
                                      reliability=ReliabilityPolicy.RELIABLE), slots=4)
            self.n = 0
            self.create_timer(0.02, self.tick)

        def tick(self):
            self.n += 1  # frame k holds (k + row + col) % 251 in every channel, made on the GPU
            rows = torch.arange(48, device='cuda').view(48, 1, 1)
            cols = torch.arange(64, device='cuda').view(1, 64, 1)
            frame = ((rows + cols + self.n) % 251).to(torch.uint8).expand(48, 64, 3).contiguous()
            self.pub.publish_gpu(frame, 'rgb8', self.get_clock().now().to_msg(), str(self.n))

        def destroy_node(self):
            self.pub.destroy()
            super().destroy_node()

    sys.exit(run_node(Pub, []))
''')


def _expected_gpu_frame(k: int) -> np.ndarray:
    rows, cols = np.arange(48).reshape(48, 1, 1), np.arange(64).reshape(1, 64, 1)
    return np.broadcast_to(((rows + cols + k) % 251).astype(np.uint8), (48, 64, 3))


@pytest.mark.gpu
def test_gpu_frames_cross_processes_by_cuda_ipc_and_reach_host_readers_too(ros_context, spin, shm_dir):
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA GPU')
    node = Node('frame_transport_gpu_sub', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    on_gpu, on_host, refused = [], [], []

    def check_gpu(frame):
        tensor = frame.as_torch()  # on the subscriber's stream, after the producer's copy
        on_gpu.append((frame.memory, tensor.is_cuda,
                       np.array_equal(tensor.cpu().numpy(), _expected_gpu_frame(int(frame.header.frame_id)))))

    def check_host(frame):
        on_host.append((frame.memory, np.array_equal(frame.as_numpy(),
                                                     _expected_gpu_frame(int(frame.header.frame_id)))))

    subs = [FrameSubscriber(node, '/ft/gpu', check_gpu, RELIABLE, losses=ReceiptLosses(), source='g',
                            gpu_frames=True, on_refused=lambda r, m: refused.append((r, m))),
            FrameSubscriber(node, '/ft/gpu', check_host, RELIABLE, losses=ReceiptLosses(), source='h',
                            on_refused=lambda r, m: refused.append((r, m)))]
    proc = subprocess.Popen([sys.executable, '-c', GPU_PUBLISHER], stderr=subprocess.PIPE, text=True)
    try:
        assert spin(executor, lambda: len(on_gpu) >= 30 and len(on_host) >= 30, 90.0), (
            len(on_gpu), len(on_host), refused, proc.poll())
        assert not refused
        assert all(memory == 'cuda' and is_cuda and ok for memory, is_cuda, ok in on_gpu)
        assert all(memory == 'host' and ok for memory, ok in on_host)  # copied to the host once, intact
        assert subs[1].gpu_to_host >= 30
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        for sub in subs:
            sub.destroy()
        node.destroy_node()
    assert proc.returncode == 0, err


def test_a_watcher_reads_the_described_frame_size_from_the_descriptor_bytes():
    from rclpy.serialization import serialize_message

    from isaac_perf.core.telemetry.cdr import described_frame_bytes
    for frame_id, encoding, height, step in (('', 'rgb8', 1080, 5760), ('camera_3_optical_frame', 'mono16',
                                                                          480, 1280)):
        msg = Image(height=height, width=step // 3, encoding=encoding, step=step)
        msg.header.frame_id = frame_id
        msg.data = encode(Descriptor(memory='host', segment='isaac_perf.1.cam.0', slot=0, generation=1,
                                     nbytes=height * step, publisher_pid=1))
        assert described_frame_bytes(serialize_message(msg)) == height * step
    assert described_frame_bytes(b'\x00\x01\x00\x00short') is None
    assert described_frame_bytes(b'') is None


def test_without_linux_both_ends_fall_back_to_plain_images(ros_context, spin, shm_dir, monkeypatch):
    from isaac_perf.core.transport import segments
    monkeypatch.setattr(segments.sys, 'platform', 'darwin')
    node = Node('frame_transport_no_linux', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    warnings = []
    pub = FramePublisher(node, '/ft/darwin', RELIABLE, warn=warnings.append)
    frames = []
    sub = _collector(node, '/ft/darwin', frames)
    # A reader of the descriptor topic (as a Linux peer would be) makes the publisher try the transport.
    node.create_subscription(Image, '/ft/darwin/zero_copy', lambda m: None, RELIABLE)
    try:
        assert sub.mode == 'plain'  # the reader could not start: the plain topic only
        assert spin(executor, lambda: pub._plain.get_subscription_count() == 1
                    and pub._descriptors.get_subscription_count() == 1, 10.0)
        for _ in range(3):
            pub.publish(np.full((4, 4, 3), 5, np.uint8), 'rgb8', node.get_clock().now().to_msg(), 'c')
        assert spin(executor, lambda: len(frames) == 3, 10.0)
        assert all(isinstance(f, Image) for f in frames)
        assert pub.counters['zero_copy'] == 0 and pub.counters['plain'] == 3
        assert not pub.zero_copy and 'needs Linux' in pub.fallback_reason
        assert len(warnings) == 1 and 'publishing plain' in warnings[0]  # said once, with the reason
    finally:
        sub.destroy()
        pub.destroy()
        node.destroy_node()
