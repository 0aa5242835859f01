"""When a transport reader also needs the plain topic (core.transport.negotiation), and how duplicates are
told apart: pure logic, no ROS."""
import pytest

from isaac_perf.core.transport.negotiation import (
    Endpoint,
    PlainNeed,
    descriptor_topic,
    plain_topic,
    same_gid,
)

CAM = Endpoint('/image_source', b'\x01' * 16)
DRIVER = Endpoint('/camera_driver', b'\x02' * 16)


def test_descriptor_topics_pair_with_their_image_topics():
    assert descriptor_topic('/camera_0/image_raw') == '/camera_0/image_raw/zero_copy'
    assert descriptor_topic('/camera_0/image_raw/') == '/camera_0/image_raw/zero_copy'
    assert plain_topic(descriptor_topic('/a/b')) == '/a/b'
    with pytest.raises(ValueError, match='zero_copy'):
        plain_topic('/a/b')


def test_a_plain_only_publisher_is_confirmed_before_the_plain_topic_is_read_and_dropped_at_once():
    need = PlainNeed(confirm=2)
    assert not need.observe([CAM], {'/image_source'})          # the transport publisher alone
    assert not need.observe([CAM, DRIVER], {'/image_source'})  # a driver appears: not yet (one look)
    assert need.observe([CAM, DRIVER], {'/image_source'})      # confirmed on the second look
    assert need.observe([CAM, DRIVER], {'/image_source'})
    assert not need.observe([CAM], {'/image_source'})          # it left: plain dropped at once


def test_a_transport_publisher_seen_before_its_descriptors_does_not_flap():
    need = PlainNeed(confirm=2)
    assert not need.observe([CAM], set())        # its descriptor publisher is not on the graph yet
    assert not need.observe([CAM], {'/image_source'})
    assert not need.needed


def test_plain_frames_from_a_transport_publisher_are_recognised_as_duplicates():
    need = PlainNeed()
    need.observe([CAM, DRIVER], {'/image_source'})
    assert need.from_transport(CAM.gid + b'\x00' * 8)  # rmw pads message gids to 24 bytes
    assert not need.from_transport(DRIVER.gid)
    assert not need.from_transport(b'')
    assert same_gid(b'\x05' * 16, b'\x05' * 16 + b'\x00' * 8)
    assert not same_gid(b'\x05' * 16, b'\x05' * 15 + b'\x06')
    with pytest.raises(ValueError):
        PlainNeed(confirm=0)
