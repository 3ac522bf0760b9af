"""The record schema: encode -> parse round trip, eagerly and inside tf.data."""
import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf.data import images, records


def _image(seed=0, size=16):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["png", "raw", "bmp", "jpeg"])
def test_round_trip_every_encoding(fmt):
    img = _image()
    if fmt == "jpeg":  # lossy: check on a smooth image, where JPEG is nearly exact
        ramp = np.linspace(0, 255, 16).astype(np.uint8)
        img = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128), -1)
        img = np.ascontiguousarray(img.astype(np.uint8))
    enc = images.encode(img, fmt, jpeg_quality=100)
    ser = records.encode_example(enc, fmt, 16, 16, 1, "H3", 2, "train",
                                 "training_data/fold_2/hem/UID_h3_1_1_hem.bmp", "ab" * 32)
    ex = records.parse_example(tf.constant(ser))
    assert ex["image/class/label"].numpy() == 1
    assert ex["image/patient_id"].numpy() == b"H3"
    assert ex["image/fold"].numpy() == 2
    assert ex["image/split"].numpy() == b"train"
    assert ex["image/format"].numpy() == fmt.encode()
    assert ex["image/sha256"].numpy() == b"ab" * 32
    decoded = records.decoder(fmt, 16)(ex).numpy()
    if fmt == "jpeg":
        assert np.abs(decoded.astype(int) - img).mean() < 3
    else:
        np.testing.assert_array_equal(decoded, img)
    # The same ops inside tf.data give the same pixels.
    ds = tf.data.Dataset.from_tensors(ser).map(records.parse_example).map(
        records.decoder(fmt, 16))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), decoded)


def test_unlabeled_defaults_and_batch_parse():
    sers = [records.encode_example(images.encode(_image(i), "png"), "png", 16, 16,
                                   records.UNLABELED, "", records.NO_FOLD, "test",
                                   f"testing_data/x/{i}.bmp", "0" * 64) for i in range(3)]
    batch = records.parse_batch(tf.constant(sers))
    assert batch["image/class/label"].numpy().tolist() == [-1, -1, -1]
    assert batch["image/fold"].numpy().tolist() == [-1, -1, -1]


def test_shard_names():
    name = records.shard_name("train-fold0", 3, 4)
    assert name == "train-fold0-00003-of-00004.tfrecord"
    assert records.parse_shard_name(name) == ("train-fold0", 3, 4)
    assert records.parse_shard_name("validation-00000-of-00001.tfrecord") == ("validation", 0, 1)
    assert records.parse_shard_name("manifest.json") is None
    assert records.shard_prefix("train", 1) == "train-fold1"
    assert records.shard_prefix("test", -1) == "test"


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown image format"):
        records.decoder("tiff", 16)


@pytest.mark.parametrize("fmt", ["png", "raw", "bmp"])
def test_images_of_their_own_size(fmt):
    """stored_size 0: records hold decoded images at their own sizes (raw reshaped by the
    record's height and width), eagerly and inside tf.data."""
    img = np.random.default_rng(3).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    ser = records.encode_example(images.encode(img, fmt), fmt, 7, 11, 0, "", -1, "test",
                                 "testing_data/x/1.bmp", "cd" * 32)
    decode = records.decoder(fmt, 0)
    np.testing.assert_array_equal(decode(records.parse_example(tf.constant(ser))).numpy(), img)
    ds = tf.data.Dataset.from_tensors(ser).map(records.parse_example).map(decode)
    assert ds.element_spec.shape.as_list() == [None, None, 3]
    np.testing.assert_array_equal(next(iter(ds)).numpy(), img)
