"""Image checks and the canvas rule (crop/pad, never rescale)."""
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf.data import images
from tests.helpers import real_sample_paths


def test_real_samples_decode_like_tensorflow():
    for path in real_sample_paths():
        data = open(path, "rb").read()
        ours = images.decode_bmp(data)
        theirs = tf.io.decode_bmp(data, channels=3).numpy()
        np.testing.assert_array_equal(ours, theirs)
        assert ours.shape == (450, 450, 3)


def test_encode_bmp_reproduces_real_files():
    """Decoded pixels encode back to the original bytes: the classic 54-byte header of the
    training files and the 124-byte V5 header of the validation files (1105.bmp)."""
    seen = set()
    for path in real_sample_paths():
        v5 = os.path.basename(path) == "1105.bmp"
        data = open(path, "rb").read()
        assert images.encode_bmp(images.decode_bmp(data), v5=v5) == data, path
        seen.add(v5)
    assert seen == {False, True}


def test_bmp_writer_round_trip_odd_sizes():
    img = np.random.default_rng(1).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    data = images.encode_bmp(img)
    np.testing.assert_array_equal(images.decode_bmp(data), img)
    np.testing.assert_array_equal(tf.io.decode_bmp(data, channels=3).numpy(), img)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello world, not an image", "not an image"),
    (b"BM" + b"\x00" * 30, "corrupt BMP"),
])
def test_bad_bytes(data, message):
    with pytest.raises(images.ImageError, match=message):
        images.decode(data)


def test_truncated_bmp():
    data = images.encode_bmp(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(images.ImageError, match="truncated"):
        images.decode(data[:-100])


def test_unsupported_bmp_depth():
    data = bytearray(images.encode_bmp(np.zeros((4, 4, 3), np.uint8)))
    struct.pack_into("<H", data, 28, 8)
    with pytest.raises(images.ImageError, match="unsupported BMP"):
        images.decode(bytes(data))


def test_16bit_png_is_scaled_to_8_bits():
    """`Image.convert("RGB")` clips 16-bit grey at 255 (a near-binary image); decode
    scales v -> round(v * 255 / 65535) instead, for the converter and predict alike."""
    import io
    from PIL import Image
    values = np.array([[0, 128, 257, 32768], [40000, 65279, 65535, 1000]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I;16")
    got = images.decode(buf.getvalue())
    want = np.array([[0, 0, 1, 128], [156, 254, 255, 4]], np.uint8)
    assert got.shape == (2, 4, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[:, :, 0], want)
    np.testing.assert_array_equal(got[:, :, 2], want)
