"""sensor_msgs/Image <-> numpy: no copies on read, one copy on write, clear layout errors."""
import array

import numpy as np
import pytest

pytest.importorskip('rclpy')
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from isaac_perf.ros.conversions import (  # noqa: E402
    ImageFormatError,
    age_ms,
    check_image,
    fill_image,
    header_with,
    image_to_numpy,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)


def _pixels(h=4, w=5, c=3):
    return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c)


def test_round_trip_and_read_shares_message_memory():
    pixels = _pixels()
    msg = numpy_to_image(pixels, 'rgb8', stamp_ns=1_500_000_123, frame_id='cam')
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 5, 15, 'rgb8')
    assert msg.header.stamp.sec == 1 and msg.header.stamp.nanosec == 500_000_123
    assert msg.header.frame_id == 'cam'
    assert isinstance(msg.data, array.array) and len(msg.data) == 60
    view = image_to_numpy(msg)
    assert np.array_equal(view, pixels)
    msg.data[0] = 99  # the view is the message's memory, not a copy
    assert view[0, 0, 0] == 99


def test_padded_rows():
    msg = Image(height=2, width=2, encoding='mono8', step=4, data=[1, 2, 0, 0, 3, 4, 0, 0])
    assert image_to_numpy(msg)[..., 0].tolist() == [[1, 2], [3, 4]]


def test_mono16_and_float_images():
    depth = np.array([[1000, 2000], [65535, 7]], dtype=np.uint16)
    msg = numpy_to_image(depth, '16UC1')
    assert msg.step == 4 and msg.is_bigendian == 0
    assert image_to_numpy(msg)[..., 0].tolist() == depth.tolist()
    big = Image(height=1, width=2, encoding='mono16', step=4, is_bigendian=1,
                data=list(np.array([258, 4], '>u2').tobytes()))
    assert image_to_numpy(big)[..., 0].tolist() == [[258, 4]]
    floats = numpy_to_image(np.array([[0.5, -1.0]], np.float32), '32FC1')
    assert image_to_numpy(floats)[..., 0].tolist() == [[0.5, -1.0]]


@pytest.mark.parametrize('fields, words', [
    (dict(encoding='yuv422', step=10, data=[0] * 20), "encoding 'yuv422' is not supported"),
    (dict(encoding='rgb8', step=10, data=[0] * 20), 'step=10 is less than width*channels*bytes = 5*3*1 = 15'),
    (dict(encoding='rgb8', step=15, data=[0] * 29), 'data has 29 bytes but step*height = 15*2 = 30'),
    (dict(encoding='rgb8', step=15, data=[]), 'image is empty'),
])
def test_bad_layouts_raise_with_reason(fields, words):
    msg = Image(height=2, width=5, **fields)
    for check in (check_image, image_to_numpy):
        with pytest.raises(ImageFormatError) as info:
            check(msg)
        assert words in str(info.value)


def test_fill_image_reuses_buffer_and_takes_strided_views():
    canvas = np.arange(4 * 9 * 3, dtype=np.uint8).reshape(4, 9, 3)
    msg = numpy_to_image(canvas[:, 0:5], 'rgb8')  # a strided window
    assert np.array_equal(image_to_numpy(msg), canvas[:, 0:5])
    buffer = msg.data
    fill_image(msg, canvas[:, 3:8], 'rgb8')
    assert msg.data is buffer  # same size: written in place, nothing allocated
    assert np.array_equal(image_to_numpy(msg), canvas[:, 3:8])
    fill_image(msg, _pixels(2, 2), 'rgb8')
    assert msg.data is not buffer and (msg.height, msg.width, msg.step) == (2, 2, 6)


def test_fill_image_rejects_arrays_that_do_not_fit():
    with pytest.raises(ImageFormatError, match=r'expected \(height, width, 3\)'):
        numpy_to_image(_pixels(c=4), 'rgb8')
    with pytest.raises(ImageFormatError, match='expected uint8'):
        numpy_to_image(_pixels().astype(np.float32), 'rgb8')
    with pytest.raises(ImageFormatError, match='is empty'):
        numpy_to_image(np.zeros((0, 4, 1), np.uint8), 'mono8')
    assert numpy_to_image(np.zeros((3, 4), np.uint8), 'mono8').step == 4  # HxW is taken as one channel


def test_stamp_helpers_exact():
    assert stamp_to_ns(Time(sec=3, nanosec=7)) == 3_000_000_007
    assert ns_to_stamp(3_000_000_007) == Time(sec=3, nanosec=7)
    assert ns_to_stamp(-5) == Time(sec=0, nanosec=0)
    header = header_with(12_345_678_901, 'base')
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (12, 345_678_901, 'base')
    assert age_ms(Time(sec=1, nanosec=0), 1_002_500_000) == 2.5
