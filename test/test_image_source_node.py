"""image_source with real DDS: frames per camera at the set rate, stamped; playback; parameter checks."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from isaac_perf.nodes.image_source import ImageSource  # noqa: E402
from isaac_perf.ros.conversions import image_to_numpy, stamp_to_ns  # noqa: E402


class Harness:
    def __init__(self, context, overrides, topics=('/camera_0/image_raw',)):
        self.node = ImageSource(context=context,
                                parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.probe = rclpy.create_node('probe', context=context)
        self.frames = {t: [] for t in topics}
        self.diagnostics = []
        for topic in topics:
            self.probe.create_subscription(Image, topic, self.frames[topic].append, qos_profile_sensor_data)
        self.probe.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)

    def close(self):
        self.executor.shutdown()
        self.probe.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def harness(ros_context):
    made = []

    def make(overrides, topics=('/camera_0/image_raw',)):
        h = Harness(ros_context, overrides, topics)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def test_publishes_every_camera_at_rate_with_stamps(harness, spin):
    topics = ('/camera_0/image_raw', '/camera_1/image_raw')
    h = harness({'camera_count': 2, 'rate_hz': 20.0, 'width': 64, 'height': 48, 'encoding': 'bgr8'}, topics)
    assert spin(h.executor, lambda: all(h.frames[t] for t in topics), 5.0)
    for frames in h.frames.values():
        frames.clear()
    start = time.time_ns()
    spin(h.executor, lambda: False, 1.5)
    for i, topic in enumerate(topics):
        frames = h.frames[topic]
        # 20 Hz for 1.5 s: 30 frames; allow for a busy 2-core CI machine.
        assert 20 <= len(frames) <= 33, (topic, len(frames))
        msg = frames[-1]
        assert (msg.width, msg.height, msg.encoding, msg.step) == (64, 48, 'bgr8', 192)
        assert msg.header.frame_id == f'camera_{i}_optical_frame'
        stamps = [stamp_to_ns(m.header.stamp) for m in frames]
        assert stamps == sorted(stamps) and stamps[0] >= start - 100_000_000
        assert image_to_numpy(msg).shape == (48, 64, 3)
    # Both cameras of one tick share the stamp (a synchronised rig); their pixels differ (tinted).
    last0, last1 = h.frames[topics[0]][-1], h.frames[topics[1]][-1]
    if last0.header.stamp == last1.header.stamp:
        assert not np.array_equal(image_to_numpy(last0), image_to_numpy(last1))
    assert h.node.frames_published >= 2 * 20


def test_runtime_resize_and_refused_values(harness, spin):
    h = harness({'rate_hz': 30.0, 'width': 32, 'height': 24})
    frames = h.frames['/camera_0/image_raw']
    assert spin(h.executor, lambda: frames, 5.0)
    result = h.node.set_parameters([Parameter('width', value=48)])[0]
    assert result.successful
    assert spin(h.executor, lambda: frames[-1].width == 48, 3.0)
    refused = {
        'rate_hz': 0.0,  # below the descriptor's range
        'encoding': 'yuv422',
        'qos_depth': 0,
    }
    for name, value in refused.items():
        result = h.node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, name
    result = h.node.set_parameters([Parameter('source', value='folder')])[0]
    assert not result.successful and 'needs source_path' in result.reason
    result = h.node.set_parameters_atomically([Parameter('camera_count', value=3),
                                               Parameter('topic_pattern', value='/cam/image')])
    assert not result.successful and 'not distinct' in result.reason
    assert h.node.get_parameter('rate_hz').value == 30.0


def test_folder_playback_once(harness, spin, tmp_path):
    cv2 = pytest.importorskip('cv2')
    cv2.imwrite(str(tmp_path / '0.png'), np.full((20, 30, 3), (255, 0, 0), np.uint8))  # blue (BGR)
    cv2.imwrite(str(tmp_path / '1.png'), np.full((20, 30, 3), (0, 0, 255), np.uint8))  # red
    h = harness({'source': 'folder', 'source_path': str(tmp_path), 'loop': False, 'rate_hz': 50.0,
                 'width': 15, 'height': 10, 'qos_reliability': 'reliable', 'qos_depth': 10})
    frames = h.frames['/camera_0/image_raw']
    spin(h.executor, lambda: False, 1.0)
    assert len(frames) == 2 and h.node.frames_published == 2
    assert [image_to_numpy(m)[0, 0].tolist() for m in frames] == [[0, 0, 255], [255, 0, 0]]


def test_missing_source_keeps_running_and_reports(harness, spin, tmp_path):
    h = harness({'source': 'video', 'source_path': str(tmp_path / 'missing.mp4'), 'rate_hz': 50.0,
                 'diagnostics_period_s': 0.2})

    def error_reported():
        return any(s.level == DiagnosticStatus.ERROR and 'missing.mp4' in s.message
                   for d in h.diagnostics for s in d.status if s.name.startswith('image_source'))
    assert spin(h.executor, error_reported, 3.0)
    assert h.node.frames_published == 0
    # Fixing the source at run time starts publishing.
    assert h.node.set_parameters([Parameter('source', value='synthetic')])[0].successful
    assert spin(h.executor, lambda: h.frames['/camera_0/image_raw'], 3.0)
