"""Frame sources and pixel layout checks (no rclpy): exact pixels, clear errors, bounded caches."""
import numpy as np
import pytest

from isaac_perf.core.inference.frames import (
    FolderSource,
    FrameSourceError,
    ImageFormatError,
    McapSource,
    SyntheticSource,
    VideoSource,
    as_array,
    check_layout,
    convert_encoding,
    open_source,
    resize_nearest,
    write_mcap_images,
)

cv2 = pytest.importorskip('cv2')


@pytest.mark.parametrize('args, words', [
    (('yuv422', 4, 2, 8, 16), "encoding 'yuv422' is not supported"),
    (('rgb8', 4, 2, 12, 0), 'image is empty'),
    (('rgb8', 0, 2, 12, 24), 'image is empty'),
    (('rgb8', 4, 2, 10, 20), 'step=10 is less than width*channels*bytes = 4*3*1 = 12'),
    (('mono16', 4, 2, 9, 18), 'not a multiple of the 2-byte'),
    (('rgb8', 4, 2, 12, 23), 'data has 23 bytes but step*height = 12*2 = 24'),
])
def test_check_layout_says_what_is_wrong(args, words):
    with pytest.raises(ImageFormatError, match=None) as info:
        check_layout(*args)
    assert words in str(info.value)


def test_check_layout_accepts_padded_rows():
    assert check_layout('bgra8', 3, 2, 16, 32).channels == 4


def test_as_array_views_padded_rows_without_copy():
    width, height, step = 3, 2, 12  # 9 bytes of pixels + 3 bytes padding per row
    buffer = bytearray(range(24))
    pixels = as_array(buffer, 'rgb8', width, height, step)
    assert pixels.shape == (2, 3, 3)
    assert np.shares_memory(pixels, np.frombuffer(buffer, np.uint8))
    assert pixels[1, 0].tolist() == [12, 13, 14]
    assert pixels[0, 2].tolist() == [6, 7, 8]


def test_as_array_reads_big_endian_mono16():
    values = np.array([[1, 256], [65535, 4660]], dtype='>u2')
    pixels = as_array(values.tobytes(), 'mono16', 2, 2, 4, is_bigendian=True)
    assert pixels.dtype == np.uint16 and pixels.dtype.isnative
    assert pixels[..., 0].tolist() == [[1, 256], [65535, 4660]]


def test_convert_encoding_exact():
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    assert convert_encoding(rgb, 'rgb8', 'bgr8').tolist() == [[[30, 20, 10], [0, 100, 200]]]
    assert convert_encoding(rgb, 'rgb8', 'rgba8')[..., 3].tolist() == [[255, 255]]
    # BT.601 luma: 0.299*10 + 0.587*20 + 0.114*30 = 18.15 -> 18; 0.299*200 + 0.587*100 = 118.5 -> 118 (even)
    assert convert_encoding(rgb, 'rgb8', 'mono8')[..., 0].tolist() == [[18, 118]]
    mono = np.array([[[7], [9]]], dtype=np.uint8)
    assert convert_encoding(mono, 'mono8', 'bgra8').tolist() == [[[7, 7, 7, 255], [9, 9, 9, 255]]]
    bgra = np.array([[[1, 2, 3, 4]]], dtype=np.uint8)
    assert convert_encoding(bgra, 'bgra8', 'rgb8').tolist() == [[[3, 2, 1]]]


def test_resize_nearest_exact():
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    assert resize_nearest(frame, 2, 2)[..., 0].tolist() == [[5, 7], [13, 15]]
    assert resize_nearest(frame, 4, 4) is frame


def test_synthetic_frames_move_loop_and_are_views():
    source = SyntheticSource(96, 40, 'rgb8', seed=1, period_px=64, speed_px=4)
    assert len(source) == 16
    f0, f1 = source.frame(0), source.frame(1)
    assert f0.shape == (40, 96, 3) and f0.dtype == np.uint8
    assert not np.array_equal(f0, f1)
    assert np.array_equal(source.frame(16), f0)
    # Frame 1 is frame 0 moved left by speed_px: the pattern moves, it is not redrawn.
    assert np.array_equal(f1[:, :-4], f0[:, 4:])
    assert np.shares_memory(f0, f1)
    other = SyntheticSource(96, 40, 'rgb8', seed=2)
    assert not np.array_equal(other.frame(0), f0)
    assert SyntheticSource(32, 8, 'mono8').frame(3).shape == (8, 32, 1)


def test_source_rejects_bad_settings():
    with pytest.raises(FrameSourceError, match='cannot be produced by a frame source'):
        SyntheticSource(8, 8, 'mono16')
    with pytest.raises(FrameSourceError, match='invalid'):
        SyntheticSource(0, 8)
    with pytest.raises(FrameSourceError, match="source 'webcam' is unknown"):
        open_source('webcam', 8, 8)
    with pytest.raises(FrameSourceError, match="needs source_path"):
        open_source('video', 8, 8)


def _solid(color_bgr, size=(24, 32)):
    return np.full(size + (3,), color_bgr, dtype=np.uint8)


def test_folder_source_reads_resizes_converts_and_skips_bad_files(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), _solid((0, 0, 255)))           # red in BGR
    cv2.imwrite(str(tmp_path / 'b.png'), _solid((0, 255, 0), (50, 70)))  # green, another size
    (tmp_path / 'c.png').write_bytes(b'not a png')
    (tmp_path / 'notes.txt').write_text('ignored')
    logs = []
    source = open_source('folder', 16, 12, 'rgb8', path=str(tmp_path), log=logs.append)
    assert isinstance(source, FolderSource)
    assert len(source) == 2 and source.skipped == 1
    assert any('c.png' in line for line in logs)
    assert source.frame(0).shape == (12, 16, 3)
    assert (source.frame(0) == [255, 0, 0]).all()
    assert (source.frame(1) == [0, 255, 0]).all()
    assert (source.frame(2) == source.frame(0)).all()  # loops


def test_folder_source_errors(tmp_path):
    with pytest.raises(FrameSourceError, match='does not exist or is not a folder'):
        FolderSource(tmp_path / 'missing', 8, 8)
    with pytest.raises(FrameSourceError, match='holds no images'):
        FolderSource(tmp_path, 8, 8)
    (tmp_path / 'x.jpg').write_bytes(b'\xff\xd8garbage')
    with pytest.raises(FrameSourceError, match='has no readable frames'):
        FolderSource(tmp_path, 8, 8, log=lambda _m: None)


def test_cache_is_bounded(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f'{i}.png'), _solid((i, i, i)))
    logs = []
    # One 100x100 rgb8 frame is 30000 bytes; 0.06 MB holds two of them.
    source = FolderSource(tmp_path, 100, 100, 'rgb8', cache_mb=0.06, log=logs.append)
    assert len(source) == 2 and source.truncated
    assert 'only the first 2 frames fit' in logs[0]


def test_video_source(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    assert writer.isOpened()
    for value in (0, 60, 120, 180, 240):
        writer.write(_solid((value, value, value), (48, 64)))
    writer.release()
    source = open_source('video', 32, 24, 'mono8', path=str(path))
    assert isinstance(source, VideoSource)
    assert len(source) == 5
    means = [float(source.frame(i).mean()) for i in range(5)]
    assert means == pytest.approx([0, 60, 120, 180, 240], abs=4)  # JPEG is lossy
    with pytest.raises(FrameSourceError, match='does not exist'):
        VideoSource(tmp_path / 'none.mp4', 8, 8)
    (tmp_path / 'fake.mp4').write_bytes(b'nope')
    with pytest.raises(FrameSourceError):
        VideoSource(tmp_path / 'fake.mp4', 8, 8)


def test_mcap_source_plays_image_messages(tmp_path):
    path = tmp_path / 'bag.mcap'
    colours = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    write_mcap_images(path, [_solid(c, (12, 16)) for c in colours], encoding='bgr8', topic='/cam/image')
    source = open_source('mcap', 8, 6, 'rgb8', path=str(path))
    assert isinstance(source, McapSource) and source.topic == '/cam/image'
    assert len(source) == 3
    assert [source.frame(i)[0, 0].tolist() for i in range(3)] == [[30, 20, 10], [60, 50, 40], [90, 80, 70]]
    with pytest.raises(FrameSourceError, match="no Image topic '/other'; it has: /cam/image"):
        McapSource(path, 8, 6, topic='/other')
    (tmp_path / 'junk.mcap').write_bytes(b'garbage' * 10)
    with pytest.raises(FrameSourceError, match='not a readable MCAP file'):
        McapSource(tmp_path / 'junk.mcap', 8, 6)


def test_mcap_source_skips_malformed_messages(tmp_path):
    from mcap_ros2.writer import Writer

    from isaac_perf.core.inference.frames import IMAGE_MSGDEF
    path = tmp_path / 'bad.mcap'
    with open(path, 'wb') as stream:
        writer = Writer(stream)
        schema = writer.register_msgdef('sensor_msgs/msg/Image', IMAGE_MSGDEF)
        header = {'stamp': {'sec': 1, 'nanosec': 0}, 'frame_id': 'c'}
        good = {'header': header, 'height': 2, 'width': 2, 'encoding': 'mono8', 'is_bigendian': 0,
                'step': 2, 'data': bytes([1, 2, 3, 4])}
        short = dict(good, data=bytes([1, 2, 3]))
        writer.write_message('/img', schema, short, log_time=1)
        writer.write_message('/img', schema, good, log_time=2)
        writer.finish()
    logs = []
    source = McapSource(path, 2, 2, 'mono8', log=logs.append)
    assert len(source) == 1 and source.skipped == 1
    assert source.frame(0)[..., 0].tolist() == [[1, 2], [3, 4]]
    assert 'data has 3 bytes but step*height = 2*2 = 4' in logs[0]
