"""The model registry: every model maps uint8 cells to a probability; precision policies;
ResNet50's caffe input layer. Tiny sizes, CPU only, no weight downloads."""
import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import AugmentConfig, ModelConfig
from leukemia_tf.model.augment import build_augmentation
from leukemia_tf.model.registry import MODELS, CaffePreprocess, build_model, caffe_preprocess
from tests.model.helpers import SIZES, build, tiny, uint8_batch


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_registry_is_complete():
    assert set(MODELS) == {"seed_cnn", "resnet_small", "efficientnetv2_b0", "resnet50",
                           "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    with pytest.raises(ValueError, match="resnet_small"):
        build_model(ModelConfig(name="vgg"), 32)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_model_maps_uint8_to_probability(name):
    model = build(tiny(name))
    assert model.input.dtype == tf.uint8 and model.input.name == "image"
    out = model(uint8_batch(2, SIZES[name]), training=False)
    assert out.dtype == tf.float32 and out.shape == (2, 1)
    assert np.all((out.numpy() >= 0) & (out.numpy() <= 1))
    assert model.layers[-1].name == "probability"


def test_seed_cnn_matches_the_seed_notebook():
    model = build_model(ModelConfig(name="seed_cnn"), 224)
    kinds = [type(layer).__name__ for layer in model.layers
             if not layer.name.startswith("normalize")]  # per-image normalisation first
    start = kinds.index("Conv2D")
    assert kinds[start:] == ["Conv2D", "MaxPooling2D", "Dropout"] * 4 + [
        "Flatten", "Dense", "Dense", "Activation"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and not layer.name.startswith("normalize")]  # its float32 channel pickers
    assert [c.filters for c in convs] == [32, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.activation.__name__ == "relu" for c in convs)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert all(p.pool_size == (2, 2) for p in pools)
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [d.rate for d in drops] == [0.2] * 4
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 1]
    assert dense[0].activation.__name__ == "relu"
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize("name", ["seed_cnn", "resnet_small"])
def test_l1_l2_regularisation_adds_losses(name):
    assert not build(tiny(name)).losses
    model = build(tiny(name, l1=1e-4, l2=1e-3))
    assert model.losses and float(tf.add_n(model.losses)) > 0


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_mixed_float16_convs_in_half_output_float32(policy):
    model = build(tiny("resnet_small"))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and not layer.name.startswith("normalize")]  # its float32 channel pickers
    assert convs and all(c.compute_dtype == "float16" for c in convs)
    out = model(uint8_batch(2, 32), training=True)
    assert out.dtype == tf.float32


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_mixed_bfloat16_train_step_on_cpu(policy):
    model = build(tiny("resnet_small"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    labels = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
    loss = model.train_on_batch(uint8_batch(4, 32), labels)
    assert np.isfinite(loss)


def test_caffe_preprocess_and_augmentation_reload_in_safe_mode(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = build_augmentation(AugmentConfig(zoom=0.2))(inputs)
    model = keras.Model(inputs, CaffePreprocess()(x))
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.layers[1].cfg == AugmentConfig(zoom=0.2)
    pixels = np.zeros((1, 8, 8, 3), np.float32)
    pixels[..., 0] = 1.0   # pure red -> BGR (0, 0, 255) minus means
    np.testing.assert_allclose(reloaded(pixels)[0, 0, 0].numpy(),
                               [-103.939, -116.779, 255 - 123.68], rtol=1e-6)


def test_caffe_preprocess_is_one_standard_layer():
    """ResNet50's caffe input from a frozen 1x1 conv equals the old custom layer."""
    pixels = np.random.default_rng(0).random((2, 4, 4, 3)).astype(np.float32)
    layer = caffe_preprocess()
    np.testing.assert_allclose(layer(pixels).numpy(), CaffePreprocess()(pixels).numpy(),
                               rtol=1e-6, atol=1e-4)
    assert type(layer).__module__.startswith("tf_keras") and not layer.trainable_weights
