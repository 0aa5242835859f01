"""Image payload decoding, validation errors, letterbox geometry, exact normalization, numpy vs torch."""
import array

import numpy as np
import pytest

from isaac_perf.core.inference.preprocess import (
    ENCODINGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFormatError,
    PreprocessConfig,
    decode_image,
    fit,
    image_to_array,
    preprocess_numpy,
    resize_bilinear,
)


def _payload(arr: np.ndarray, pad: int = 0, bigendian: bool = False):
    """A ROS-style (data, step) for an H x W x C array, rows padded by `pad` bytes."""
    h = arr.shape[0]
    a = arr.astype(arr.dtype.newbyteorder('>' if bigendian else '<'))
    rows = a.reshape(h, -1).view(np.uint8)
    step = rows.shape[1] + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, :rows.shape[1]] = rows
    return buf.tobytes(), step


@pytest.mark.parametrize('encoding', list(ENCODINGS))
def test_decode_every_encoding_with_row_padding(encoding):
    ch, dtype, _, full = ENCODINGS[encoding]
    arr = np.random.default_rng(1).integers(0, int(full) + 1, (5, 7, ch)).astype(dtype)
    data, step = _payload(arr, pad=6)
    out = decode_image(data, 7, 5, encoding, step)
    assert out.shape == (5, 7, ch) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)
    # rclpy hands Image.data over as array.array('B'): accepted without a copy to bytes
    np.testing.assert_array_equal(decode_image(array.array('B', data), 7, 5, encoding, step), arr)


def test_mono16_big_endian():
    arr = np.array([[[1], [258]], [[65535], [4096]]], np.uint16)
    data, step = _payload(arr, bigendian=True)
    np.testing.assert_array_equal(decode_image(data, 2, 2, 'mono16', step, is_bigendian=True), arr)


def test_sensor_msgs_image_is_accepted_directly():
    msgs = pytest.importorskip('sensor_msgs.msg')
    arr = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    msg = msgs.Image(height=4, width=3, encoding='bgr8', step=9, data=arr.tobytes())
    np.testing.assert_array_equal(image_to_array(msg), arr)


@pytest.mark.parametrize('kwargs, message', [
    (dict(encoding='yuv422'), "unsupported encoding 'yuv422'"),
    (dict(step=8), r'step 8 is smaller than .* = 9'),
    (dict(data=b''), 'image data is empty: expected height x step = 4 x 9 = 36 bytes'),
    (dict(data=bytes(35)), 'has 35 bytes but height x step = 4 x 9 = 36'),
    (dict(width=0), 'width and height must be > 0'),
    (dict(data=12345), 'not a byte buffer'),
])
def test_validation_errors_name_the_field(kwargs, message):
    args = dict(data=bytes(36), width=3, height=4, encoding='rgb8', step=9)
    args.update(kwargs)
    with pytest.raises(ImageFormatError, match=message):
        decode_image(**args)
    assert issubclass(ImageFormatError, ValueError)


def test_mono16_odd_step_is_refused():
    with pytest.raises(ImageFormatError, match='not a multiple of 2'):
        decode_image(bytes(2 * 5), 2, 2, 'mono16', 5)


def test_letterbox_geometry_and_inverse():
    lb = fit(640, 480, PreprocessConfig(width=224, height=224))
    assert (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y) == (224, 168, 0, 28)
    boxes = np.array([[0, 28, 224, 196], [112, 112, 168, 140]], np.float32)
    np.testing.assert_allclose(lb.to_source(boxes), [[0, 0, 640, 480], [320, 240, 480, 320]], atol=1e-4)
    st = fit(640, 480, PreprocessConfig(width=320, height=256, resize='stretch'))
    assert (st.new_width, st.new_height, st.pad_x, st.pad_y) == (320, 256, 0, 0)
    tall = fit(100, 400, PreprocessConfig(width=224, height=224))
    assert (tall.new_width, tall.new_height, tall.pad_x, tall.pad_y) == (56, 224, 84, 0)


def test_config_validation():
    with pytest.raises(ValueError, match="resize='crop'"):
        PreprocessConfig(resize='crop')
    with pytest.raises(ValueError, match='std values must be > 0'):
        PreprocessConfig(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match='need 1 values'):
        PreprocessConfig(channels=1)


def test_exact_normalization_channel_order_and_padding():
    cfg = PreprocessConfig(width=8, height=8)
    rgb = np.zeros((4, 8, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    want = (np.array([10, 20, 30], np.float32) / 255 - mean) / std
    pad = (114 / 255 - mean) / std
    images = [(rgb, 'rgb8'), (rgb[:, :, ::-1].copy(), 'bgr8'),
              (np.concatenate([rgb, np.full((4, 8, 1), 7, np.uint8)], 2), 'rgba8'),
              (np.concatenate([rgb[:, :, ::-1], np.full((4, 8, 1), 7, np.uint8)], 2), 'bgra8')]
    out, placements = preprocess_numpy(images, cfg)
    assert out.shape == (4, 3, 8, 8) and out.dtype == np.float32
    for i in range(4):
        assert placements[i].pad_y == 2 and placements[i].new_height == 4
        interior, border = out[i, :, 2:6, :], out[i, :, :2, :]
        np.testing.assert_allclose(interior, np.broadcast_to(want[:, None, None], (3, 4, 8)), atol=1e-6)
        np.testing.assert_allclose(border, np.broadcast_to(pad[:, None, None], (3, 2, 8)), atol=1e-6)
    mono = preprocess_numpy([(np.full((8, 8, 1), 51, np.uint8), 'mono8'),
                             (np.full((8, 8, 1), 65535, np.uint16), 'mono16')], cfg)[0]
    np.testing.assert_allclose(mono[0, :, 0, 0], (0.2 - mean) / std, atol=1e-6)  # replicated to 3 channels
    np.testing.assert_allclose(mono[1, :, 0, 0], (1.0 - mean) / std, atol=1e-6)  # mono16 full scale -> 1.0
    luma = preprocess_numpy([(rgb, 'rgb8')], PreprocessConfig(width=8, height=4, channels=1, mean=(0.0,),
                                                              std=(1.0,)))[0]
    assert luma.shape == (1, 1, 4, 8)
    np.testing.assert_allclose(luma[0, 0, 0, 0], (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255, atol=1e-6)
    buf = np.zeros((6, 3, 8, 8), np.float32)
    got, _ = preprocess_numpy(images[:2], cfg, out=buf)
    assert got.base is buf or got is buf[:2]
    with pytest.raises(ValueError, match='cannot hold'):
        preprocess_numpy(images, cfg, out=np.zeros((2, 3, 8, 8), np.float32))


torch = pytest.importorskip('torch')


@pytest.mark.parametrize('size', [(50, 70), (300, 400), (97, 131)])
def test_numpy_bilinear_matches_torch_interpolate(size):
    img = np.random.default_rng(2).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=size,
                                          mode='bilinear', align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(resize_bilinear(img, *size), ref, atol=5e-3)


def _mixed_batch(rng):
    out = []
    for enc, (ch, dtype, _, full) in ENCODINGS.items():
        h, w = (480, 640) if enc == 'rgb8' else (97, 131)
        out.append((rng.integers(0, int(full) + 1, (h, w, ch)).astype(dtype), enc))
    return out


@pytest.mark.parametrize('resize', ['letterbox', 'stretch'])
def test_torch_preprocessor_matches_numpy_on_cpu(resize):
    from isaac_perf.core.inference.preprocess import TorchPreprocessor
    cfg = PreprocessConfig(width=160, height=128, resize=resize)
    images = _mixed_batch(np.random.default_rng(3))
    ref, lb_ref = preprocess_numpy(images, cfg)
    out, lb = TorchPreprocessor(cfg, device='cpu')(images)
    assert lb == lb_ref
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_torch_preprocessor_on_gpu_fp16_channels_last():
    from isaac_perf.core.inference.preprocess import TorchPreprocessor
    cfg = PreprocessConfig(width=224, height=224)
    pre = TorchPreprocessor(cfg, device='cuda', dtype=torch.float16, channels_last=True)
    for seed in (4, 5):  # twice: the pinned staging buffer is reused
        images = _mixed_batch(np.random.default_rng(seed))
        ref, _ = preprocess_numpy(images, cfg)
        out, _ = pre(images, stream=torch.cuda.Stream())
        torch.cuda.synchronize()
        assert out.is_cuda and out.dtype == torch.float16
        assert out.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_allclose(out.float().cpu().numpy(), ref, atol=2e-2)
