"""In-model augmentation: identity at inference, per-example draws in training, inside
tf.function, the dihedral symmetries, colour and stain jitter."""
import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import AugmentConfig
from leukemia_tf.model.augment import (build_augmentation, random_color, random_geometry,
                                       random_stain)
from tests.model.helpers import build, cells, tiny, uint8_batch


def images01(n=4, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def test_augmentation_is_identity_at_inference():
    aug = build_augmentation(AugmentConfig(zoom=0.1))
    x = images01()
    np.testing.assert_array_equal(aug(x, training=False).numpy(), x)
    np.testing.assert_array_equal(aug(x).numpy(), x)


def test_disabled_augmentation_is_identity_in_training():
    x = images01()
    for cfg in (AugmentConfig(enabled=False),
                AugmentConfig(flip=False, rot90=False, rotate_degrees=0, brightness=0,
                              contrast=0, hue=0, saturation=0)):
        np.testing.assert_array_equal(build_augmentation(cfg)(x, training=True).numpy(), x)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_augmentation_per_example_keeps_shape_and_dtype(dtype):
    tf.random.set_seed(1)
    aug = build_augmentation(AugmentConfig(zoom=0.1))
    same = tf.cast(np.repeat(images01(1), 8, axis=0), dtype)
    out = aug(same, training=True)
    assert out.dtype == same.dtype and out.shape == same.shape
    out = tf.cast(out, tf.float32).numpy()
    assert not np.allclose(out[0], tf.cast(same[0], tf.float32).numpy())
    # Identical inputs, different draws: no two examples transformed alike.
    assert all(not np.allclose(out[i], out[j]) for i in range(8) for j in range(i))
    assert out.min() >= 0 and out.max() <= 1


def test_augmentation_inside_tf_function():
    aug = build_augmentation(AugmentConfig())

    @tf.function
    def step(x, training):
        return aug(x, training=training)

    x = images01()
    assert not np.allclose(step(x, True).numpy(), x)
    np.testing.assert_array_equal(step(x, False).numpy(), x)
    # A symbolic training flag takes the graph branch.
    assert not np.allclose(step(x, tf.constant(True)).numpy(), x)
    np.testing.assert_array_equal(step(x, tf.constant(False)).numpy(), x)


def test_model_augments_only_in_training():
    model = build(tiny("resnet_small"))
    pixels = keras.Model(model.input, model.get_layer("augment").output)
    images = uint8_batch(4, 32)
    np.testing.assert_allclose(pixels(images, training=False).numpy(), images / 255, atol=1e-6)
    assert not np.allclose(pixels(images, training=True).numpy(), images / 255, atol=1e-3)


def test_flips_and_turns_draw_all_eight_symmetries_exactly():
    tf.random.set_seed(2)
    image = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    batch = tf.constant(np.repeat(image[None], 200, 0))
    expected = {np.rot90(f, k).tobytes() for f in (image, image[:, ::-1]) for k in range(4)}
    out = random_geometry(batch, flip=True, rot90=True, rotate_degrees=0, zoom=0).numpy()
    assert {o.tobytes() for o in out} == expected
    turns = random_geometry(batch, flip=False, rot90=True, rotate_degrees=0, zoom=0).numpy()
    assert {o.tobytes() for o in turns} == {np.rot90(image, k).tobytes() for k in range(4)}


def test_hue_and_saturation_keep_luma_and_greys():
    tf.random.set_seed(3)
    x = images01(8)
    out = random_color(tf.constant(x), 0, 0, hue=0.2, saturation=0.3).numpy()
    assert not np.allclose(out, x)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    inside = np.all((out > 0) & (out < 1), axis=-1)   # clipping changes luma
    np.testing.assert_allclose((out @ luma)[inside], (x @ luma)[inside], atol=1e-5)
    grey = np.repeat(x[..., :1], 3, axis=-1)
    np.testing.assert_allclose(random_color(tf.constant(grey), 0, 0, 0.2, 0.3).numpy(), grey,
                               atol=1e-5)


def test_rotation_fills_corners_black():
    aug = build_augmentation(AugmentConfig(flip=False, rot90=False, rotate_degrees=45,
                                           brightness=0, contrast=0, hue=0, saturation=0))
    out = aug(np.ones((16, 32, 32, 3), np.float32), training=True).numpy()
    assert np.all(out[:, 16, 16] > 0.99)          # the centre is always covered
    assert np.mean(out[:, 0, 0] == 0) > 0.5       # corners mostly uncovered -> black


@pytest.mark.parametrize("space", ["hed", "rgb"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stain_jitter_keeps_shape_dtype_range_and_background(space, dtype):
    tf.random.set_seed(3)
    aug = build_augmentation(AugmentConfig(flip=False, rot90=False, rotate_degrees=0,
                                           brightness=0, contrast=0, hue=0, saturation=0,
                                           stain=0.1, stain_space=space))
    x = tf.cast(np.repeat(cells(1), 6, axis=0), dtype)
    out = aug(x, training=True)
    assert out.dtype == x.dtype and out.shape == x.shape
    out = tf.cast(out, tf.float32).numpy()
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(out[:, :4] == 0) and np.all(out[:, :, 12:] == 0)   # background stays black
    assert all(not np.allclose(out[i], out[j], atol=1e-3) for i in range(6) for j in range(i))
    np.testing.assert_array_equal(aug(x, training=False).numpy(), x.numpy())   # inference


def test_stain_strength_zero_is_identity_and_seeded_draws_repeat():
    x = cells()
    np.testing.assert_allclose(random_stain(tf.constant(x), 0.0).numpy(), x, atol=1e-5)
    tf.random.set_seed(11)
    a = random_stain(tf.constant(x), 0.05).numpy()
    tf.random.set_seed(11)
    b = random_stain(tf.constant(x), 0.05).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, x, atol=1e-3)
    with pytest.raises(ValueError, match="stain_space"):
        random_stain(tf.constant(x), 0.1, "lab")
