"""The tf.train.Example schema: one FEATURES spec shared by the converter and the pipeline.

Keys follow the TF Model Garden / TFDS convention. Labels: 1 = ALL, 0 = hem,
-1 = unlabeled (final test). Fold: 0/1/2, -1 = none.
"""
from __future__ import annotations

import re
from typing import Callable, Dict

import tensorflow as tf

SCHEMA_VERSION = 1
UNLABELED = -1
NO_FOLD = -1

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELED),
    "image/patient_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/fold": tf.io.FixedLenFeature([], tf.int64, default_value=NO_FOLD),
    "image/split": tf.io.FixedLenFeature([], tf.string),
    "image/source_path": tf.io.FixedLenFeature([], tf.string),
    "image/sha256": tf.io.FixedLenFeature([], tf.string),
}

_SHARD_NAME = re.compile(
    r"^(?P<prefix>[a-z]+(?:-fold\d+)?)-(?P<i>\d{5})-of-(?P<n>\d{5})\.tfrecord$")


def shard_name(prefix: str, index: int, count: int) -> str:
    """`train-fold0-00000-of-00004.tfrecord`, `validation-00000-of-00001.tfrecord`."""
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


def shard_prefix(split: str, fold) -> str:
    return f"{split}-fold{int(fold)}" if split == "train" else split


def parse_shard_name(name: str):
    """(prefix, index, count) or None when `name` is not a shard file name."""
    m = _SHARD_NAME.match(name)
    return (m["prefix"], int(m["i"]), int(m["n"])) if m else None


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(encoded: bytes, fmt: str, height: int, width: int, label: int,
                   patient_id: str, fold: int, split: str, source_path: str,
                   sha256: str) -> bytes:
    """A serialized tf.train.Example following FEATURES."""
    feature = {
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(fmt.encode()),
        "image/height": _int(height),
        "image/width": _int(width),
        "image/class/label": _int(label),
        "image/patient_id": _bytes(patient_id.encode()),
        "image/fold": _int(fold),
        "image/split": _bytes(split.encode()),
        "image/source_path": _bytes(source_path.encode()),
        "image/sha256": _bytes(sha256.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Parse one serialized example (works eagerly and inside tf.data)."""
    return tf.io.parse_single_example(serialized, FEATURES)


def parse_batch(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Parse a batch of serialized examples in one op (faster than per-example)."""
    return tf.io.parse_example(serialized, FEATURES)


def decoder(fmt: str, stored_size: int) -> Callable[[Dict[str, tf.Tensor]], tf.Tensor]:
    """A function parsed-example -> uint8 [H, W, 3] for one stored encoding.

    One format per dataset (the manifest says which), so the decode op is chosen once
    instead of branching per example.

    Args:
      stored_size: the side of every stored image (static shape), or 0 when images are
        stored at their own sizes (the manifest's settings.stored_size); raw bytes are
        then reshaped with the record's image/height and image/width.
    """
    def _raw(ex):
        pixels = tf.io.decode_raw(ex["image/encoded"], tf.uint8)
        if stored_size:
            return tf.reshape(pixels, [stored_size, stored_size, 3])
        return tf.reshape(pixels, tf.stack([tf.cast(ex["image/height"], tf.int32),
                                            tf.cast(ex["image/width"], tf.int32), 3]))

    def _png(ex):
        return tf.io.decode_png(ex["image/encoded"], channels=3)

    def _jpeg(ex):
        return tf.io.decode_jpeg(ex["image/encoded"], channels=3)

    def _bmp(ex):
        return tf.io.decode_bmp(ex["image/encoded"], channels=3)

    table = {"raw": _raw, "png": _png, "jpeg": _jpeg, "bmp": _bmp}
    if fmt not in table:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {sorted(table)}")
    decode = table[fmt]

    def fn(ex):
        image = decode(ex)
        image.set_shape([stored_size or None, stored_size or None, 3])
        return image
    return fn
