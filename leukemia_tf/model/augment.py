"""Augmentation that lives inside the model, so it runs on the accelerator.

One layer, `Augmentation`, built from an `AugmentConfig`. It takes a batch of float images
in [0, 1] ([N, H, W, 3], any float dtype), draws every random parameter per example,
computes in float32 and returns the input dtype. It transforms only when `training` is
true; at inference it returns its input unchanged, so exported models need no switch.

Random parameters come from stateful `tf.random` ops (as Keras 2's own random layers do
when unseeded): they work inside tf.function and per replica, and `tf.random.set_seed`
makes them reproducible.
"""
from __future__ import annotations

import dataclasses
import math

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import AugmentConfig
from leukemia_tf.model import normalization


def _uniform(n, low, high):
    return tf.random.uniform([n], low, high, dtype=tf.float32)


def _random_sign(n):
    return tf.where(tf.random.uniform([n]) < 0.5, -1.0, 1.0)


def random_geometry(images, flip: bool, rot90: bool, rotate_degrees: float, zoom: float):
    """Random flips, 90-degree turns, small rotation and zoom, in one resample.

    Every transform is a per-example 2x2 matrix about the image centre, so they compose
    into one affine map: the batch is interpolated once (stacking keras
    RandomFlip, RandomRotation and RandomZoom would pass over it three times and blur
    twice), and `tf.image.rot90`'s one-k-per-batch limit does not apply. Flips and 90-degree
    turns alone map pixel centres onto pixel centres, so they are exact. Uncovered
    corners are filled with 0: cells sit on a black background.

    Args:
      images: float32 [N, H, W, 3]; square when rot90 is on (a turn would crop otherwise).
      flip: mirror horizontally and vertically, each with probability 1/2.
      rot90: turn by k * 90 degrees, k uniform in {0, 1, 2, 3}.
      rotate_degrees: extra angle drawn from [-d, d].
      zoom: sampling scale drawn from [1 - zoom, 1 + zoom] (< 1 zooms in).
    """
    if rot90 and images.shape[1] is not None and images.shape[1] != images.shape[2]:
        raise ValueError(f"rot90 augmentation needs square images, got {images.shape}")
    n = tf.shape(images)[0]
    angle = rotate_degrees * math.pi / 180.0
    angle = _uniform(n, -angle, angle) if angle > 0 else tf.zeros([n])
    cos, sin = tf.cos(angle), tf.sin(angle)
    if rot90:
        # Exact integer cos/sin of k * 90 degrees (tf.cos(pi / 2) is -4e-8, not 0), added
        # to the small angle with the angle-sum formulas.
        k = tf.random.uniform([n], 0, 4, dtype=tf.int32)
        cos90 = tf.gather([1.0, 0.0, -1.0, 0.0], k)
        sin90 = tf.gather([0.0, 1.0, 0.0, -1.0], k)
        cos, sin = cos * cos90 - sin * sin90, sin * cos90 + cos * sin90
    scale = _uniform(n, 1.0 - zoom, 1.0 + zoom) if zoom > 0 else tf.ones([n])
    flip_x = _random_sign(n) if flip else tf.ones([n])
    flip_y = _random_sign(n) if flip else tf.ones([n])
    # Output pixel (x, y) samples input centre + scale * R(angle) * diag(flip) * (p - centre).
    a0, a1 = scale * cos * flip_x, -scale * sin * flip_y
    b0, b1 = scale * sin * flip_x, scale * cos * flip_y
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    ys, xs = tf.meshgrid(tf.range(tf.cast(height, tf.float32)),
                         tf.range(tf.cast(width, tf.float32)), indexing="ij")

    def per_pixel(v):
        return v[:, None, None]

    x_in = per_pixel(a0) * (xs - cx) + per_pixel(a1) * (ys - cy) + cx
    y_in = per_pixel(b0) * (xs - cx) + per_pixel(b1) * (ys - cy) + cy
    return _bilinear_sample(images, x_in, y_in)


def _bilinear_sample(images, x_in, y_in):
    """images [N, H, W, C] sampled at float pixel coordinates [N, H, W]; 0 outside.

    Same result as ImageProjectiveTransformV3 (BILINEAR, CONSTANT 0), which Keras'
    RandomRotation uses, but made of gathers so it also compiles under XLA
    (`jit_compile=True`), where that op has no kernel. At integer coordinates the
    weights are exactly 0 and 1, so flips and turns copy pixels bit for bit.
    """
    n, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    flat = tf.reshape(images, [-1, images.shape[-1]])
    first_pixel = (tf.range(n) * height * width)[:, None, None]
    x0, y0 = tf.floor(x_in), tf.floor(y_in)
    wx, wy = (x_in - x0)[..., None], (y_in - y0)[..., None]

    def tap(y, x):
        inside = (x >= 0) & (y >= 0) & (x < tf.cast(width, tf.float32)) & (
            y < tf.cast(height, tf.float32))
        row = tf.cast(tf.clip_by_value(y, 0.0, tf.cast(height - 1, tf.float32)), tf.int32)
        col = tf.cast(tf.clip_by_value(x, 0.0, tf.cast(width - 1, tf.float32)), tf.int32)
        values = tf.gather(flat, first_pixel + row * width + col)
        return values * tf.cast(inside, images.dtype)[..., None]

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


# RGB -> YIQ (NTSC). Y is luma; hue is the angle and saturation the radius in the IQ plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def random_color(images, brightness: float, contrast: float, hue: float,
                 saturation: float):
    """Per-example brightness, contrast, hue and saturation jitter; output in [0, 1].

    Brightness adds a delta in [-b, b]; contrast scales by [1 - c, 1 + c] around each
    image's per-channel mean (tf.image.adjust_contrast semantics). Hue (a shift in [-h, h]
    of the colour wheel) and saturation (a factor in [1 - s, 1 + s]) rotate and scale the
    chroma in YIQ space, as tf.contrib.image's adjust_hsv_in_yiq did: unlike an HSV round
    trip (per-image deltas only, and ~10x slower on CPU) the four jitters fold into one
    per-example 3x3 matrix plus offset, a single batched matmul.
    """
    n = tf.shape(images)[0]
    angle = 2.0 * math.pi * (_uniform(n, -hue, hue) if hue > 0 else tf.zeros([n]))
    chroma = _uniform(n, 1 - saturation, 1 + saturation) if saturation > 0 else tf.ones([n])
    cos, sin = chroma * tf.cos(angle), chroma * tf.sin(angle)
    ones, zeros = tf.ones([n]), tf.zeros([n])
    # Acts on column vectors (y, i, q): keeps luma, rotates and scales (i, q).
    yiq_jitter = tf.reshape(tf.stack([ones, zeros, zeros,
                                      zeros, cos, -sin,
                                      zeros, sin, cos], axis=1), [n, 3, 3])
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    to_rgb = tf.constant(_YIQ_TO_RGB, tf.float32)
    # Pixels are row vectors here, so the column-vector product is transposed.
    colour = tf.transpose(to_rgb @ yiq_jitter @ to_yiq, [0, 2, 1])

    # contrast(x) + delta = c * x + ((1 - c) * mean + delta), then the colour matrix.
    factor = _uniform(n, 1 - contrast, 1 + contrast) if contrast > 0 else ones
    delta = _uniform(n, -brightness, brightness) if brightness > 0 else zeros
    offset = tf.broadcast_to(delta[:, None, None], [n, 1, 3])         # [N, 1, 3]
    if contrast > 0:
        mean = tf.reduce_mean(images, axis=[1, 2])[:, None, :]
        offset = (1.0 - factor)[:, None, None] * mean + offset
    pixels = tf.reshape(images, [n, -1, 3])
    out = pixels @ (factor[:, None, None] * colour) + offset @ colour
    return tf.clip_by_value(tf.reshape(out, tf.shape(images)), 0.0, 1.0)


# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB), as skimage's
# rgb2hed uses them: optical densities of a pixel (row vector) are hed @ _RGB_FROM_HED.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                          [0.07, 0.99, 0.11],
                          [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
# Darkest intensity the optical density sees (one uint8 step): keeps log() finite.
_MIN_INTENSITY = 1.0 / 255.0
# A pixel whose channels all stay below this is background (C-NMC cells lie on black).
_BACKGROUND = 2.0 / 255.0


def foreground_mask(images):
    """float [N, H, W, 1]: 1 where a pixel belongs to the cell, 0 on the black background."""
    return tf.cast(tf.reduce_max(images, axis=-1, keepdims=True) > _BACKGROUND, images.dtype)


def random_stain(images, strength: float, space: str = "hed"):
    """Per-example stain jitter in optical density; output in [0, 1].

    Each image's optical density od = -ln(I) is split into stain amounts (HED space,
    or the three RGB channels with space="rgb"); each amount is scaled by U[1-s, 1+s]
    and shifted by U[-s, s] (Tellez et al. 2018, "HED-light" at s=0.05), then mapped
    back. The change folds into one per-example 3x3 matrix plus offset, so it costs one
    batched matmul; background pixels are left black rather than tinted.
    """
    if space not in ("hed", "rgb"):
        raise ValueError(f"stain_space must be 'hed' or 'rgb', not {space!r}")
    n = tf.shape(images)[0]
    scale = tf.random.uniform([n, 3], 1.0 - strength, 1.0 + strength)
    shift = tf.random.uniform([n, 1, 3], -strength, strength)
    to_stain = tf.constant(_HED_FROM_RGB if space == "hed" else np.eye(3), tf.float32)
    to_od = tf.constant(_RGB_FROM_HED if space == "hed" else np.eye(3), tf.float32)
    # od' = ((od @ to_stain) * scale + shift) @ to_od = od @ A + shift @ to_od.
    matrix = to_stain[None] @ (scale[:, :, None] * to_od[None])      # [N, 3, 3]
    od = -tf.math.log(tf.maximum(tf.reshape(images, [n, -1, 3]), _MIN_INTENSITY))
    od = od @ matrix + shift @ to_od
    out = tf.clip_by_value(tf.exp(-tf.reshape(od, tf.shape(images))), 0.0, 1.0)
    return out * foreground_mask(images)


@keras.saving.register_keras_serializable(package="leukemia_tf")
class Augmentation(keras.layers.Layer):
    """Training-only augmentation: geometry (one resample), then colour (one matmul).

    Args:
      config: `dataclasses.asdict(AugmentConfig(...))`; a dict so it serialises as-is and
        models saved before a field was added still load (missing fields take defaults).
    """

    def __init__(self, config: dict, **kwargs):
        # autocast=False: under a mixed policy Keras would cast float32 inputs down to
        # float16 before `call`; the layer handles any float dtype itself instead.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.cfg = c = AugmentConfig(**config)
        self._geometry = c.enabled and (c.flip or c.rot90 or c.rotate_degrees > 0
                                        or c.zoom > 0)
        self._colour = c.enabled and (c.brightness > 0 or c.contrast > 0 or c.hue > 0
                                      or c.saturation > 0)
        self._stain = c.enabled and c.stain > 0

    def call(self, inputs, training=None):
        if not (self._geometry or self._colour or self._stain):
            return inputs
        if training is None or isinstance(training, (bool, int)):
            return self._augment(inputs) if training else inputs
        # A symbolic learning phase (rare in Keras 2, but legal) needs a graph branch.
        return tf.cond(tf.cast(training, tf.bool), lambda: self._augment(inputs),
                       lambda: tf.identity(inputs))

    def _augment(self, images):
        c = self.cfg
        images = tf.convert_to_tensor(images)
        x = tf.cast(images, tf.float32)
        if self._geometry:
            x = random_geometry(x, c.flip, c.rot90, c.rotate_degrees, c.zoom)
        if self._stain:  # before the colour jitter: stains vary first, then the camera
            x = random_stain(x, c.stain, c.stain_space)
        if self._colour:
            x = random_color(x, c.brightness, c.contrast, c.hue, c.saturation)
        return tf.cast(x, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(config=dataclasses.asdict(self.cfg))
        return config


NORMALIZATIONS = ("none", "per_image", "channel_mean")


@keras.saving.register_keras_serializable(package="leukemia_tf")
class CellNormalization(keras.layers.Layer):
    """Per-image normalisation over the cell's pixels, in training and inference alike.

    The reference implementation (plain TF ops): models use the same computation built
    from standard layers (leukemia_tf.model.normalization) so that model.keras loads anywhere;
    this layer stays registered so model files saved with it still load.

    Patients differ in stain intensity and camera exposure; standardising each image
    removes the part of that variation a single global rescale cannot. Statistics come
    from the non-black pixels only (the black canvas would otherwise dominate them), and
    the background is set to 0. Plain TensorFlow ops, so the SavedModel needs nothing else.

    Args:
      mode: "per_image" (each channel to zero mean, unit variance) or "channel_mean"
        (each channel minus its mean; the scale is kept).
    """

    def __init__(self, mode: str = "per_image", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS[1:]:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        mask = foreground_mask(x)
        count = tf.maximum(tf.reduce_sum(mask, axis=[1, 2], keepdims=True), 1.0)
        mean = tf.reduce_sum(x * mask, axis=[1, 2], keepdims=True) / count
        out = x - mean
        if self.mode == "per_image":
            var = tf.reduce_sum(tf.square(out) * mask, axis=[1, 2], keepdims=True) / count
            out = out * tf.math.rsqrt(var + 1e-4)
        return tf.cast(out * mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def build_normalization(mode: str, name: str = "normalize"):
    """A function applying ModelConfig.normalize to a functional-model tensor, or None for
    "none". Built from standard layers (leukemia_tf.model.normalization), so model.keras loads
    without this package; `CellNormalization` is the reference it is tested against."""
    if mode == "none":
        return None
    if mode not in normalization.NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {normalization.NORMALIZATIONS}, "
                         f"not {mode!r}")
    return lambda x: normalization.cell_normalization(x, mode, name)


def build_augmentation(cfg: AugmentConfig, name: str = "augment") -> keras.layers.Layer:
    """The model's augmentation layer for `cfg` (the identity when disabled).

    Input: float images in [0, 1], [N, H, W, 3] with H == W when rot90 is on. Active only
    with `training=True`; output has the input's shape and dtype.
    """
    return Augmentation(dataclasses.asdict(cfg), name=name)
