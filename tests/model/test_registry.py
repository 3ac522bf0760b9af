"""Models, in-model augmentation and export: tiny sizes, CPU only, no weight downloads."""
import dataclasses

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.model.augment import (CellNormalization, build_augmentation, random_color,
                                       random_geometry, random_stain)
from leukemia_tf.config import AugmentConfig, ModelConfig
from leukemia_tf.model.export import export_model, load_model
from leukemia_tf.model.registry import MODELS, CaffePreprocess, build_model

# The smallest sizes each model accepts: seed_cnn's unpadded convs need >= 46 px.
SIZES = {"seed_cnn": 48, "resnet_small": 32, "efficientnetv2_b0": 32, "resnet50": 32}


def tiny(name="resnet_small", **kwargs):
    return ModelConfig(name=name, width=8, **kwargs)


def build(cfg, size=None):
    """build_model at the smallest size the model accepts (or `size`)."""
    return build_model(cfg, size or SIZES[cfg.name])


def uint8_batch(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_registry_is_complete():
    assert set(MODELS) == {"seed_cnn", "resnet_small", "efficientnetv2_b0", "resnet50"}
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


# --- augmentation ---------------------------------------------------------------------

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


# --- export -----------------------------------------------------------------------------

def test_export_round_trip_predictions_match(tmp_path):
    model = build(tiny("resnet_small"))
    # One training step so BatchNorm statistics differ from their initial values.
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.train_on_batch(uint8_batch(4, 32, seed=1), np.array([[0], [1], [1], [0]], np.float32))
    images = uint8_batch(5, 32, seed=2)
    expected = model(images, training=False).numpy().reshape(-1)

    paths = export_model(model, str(tmp_path))
    assert paths["image_size"] == 32
    reloaded = keras.models.load_model(paths["keras"], safe_mode=True, compile=False)
    np.testing.assert_allclose(reloaded(images, training=False).numpy().reshape(-1),
                               expected, atol=1e-5)

    loaded = tf.saved_model.load(paths["saved_model"])
    assert set(loaded.signatures) == {"serving_default", "serving_raw"}
    serving = loaded.signatures["serving_default"]
    spec = serving.structured_input_signature[1]["image"]
    # Declared of any size so the graph's own check (not a trusted declaration) refuses
    # other sizes; tests/test_preprocess.py checks the refusal.
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]
    result = serving(image=tf.constant(images))
    assert list(result) == ["probability"] and result["probability"].dtype == tf.float32
    np.testing.assert_allclose(result["probability"].numpy(), expected, atol=1e-5)

    for source in (tmp_path, paths["keras"], paths["saved_model"]):
        predictor = load_model(source, batch_size=2)    # batch 2: exercises splitting
        assert predictor.image_size == 32
        got = predictor(images)
        assert got.dtype == np.float32 and got.shape == (5,)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        predictor(images.astype(np.float32))

    # cfg.weights as a path (here a model dir) restores the same network.
    again = build(dataclasses.replace(tiny("resnet_small"), weights=str(tmp_path)))
    np.testing.assert_allclose(again(images, training=False).numpy().reshape(-1), expected,
                               atol=1e-5)


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
    from leukemia_tf.model.registry import caffe_preprocess
    pixels = np.random.default_rng(0).random((2, 4, 4, 3)).astype(np.float32)
    layer = caffe_preprocess()
    np.testing.assert_allclose(layer(pixels).numpy(), CaffePreprocess()(pixels).numpy(),
                               rtol=1e-6, atol=1e-4)
    assert type(layer).__module__.startswith("tf_keras") and not layer.trainable_weights


def test_exported_keras_model_has_no_augmentation_layer(tmp_path):
    from leukemia_tf.model.augment import Augmentation
    model = build(tiny("resnet_small", augment=AugmentConfig(zoom=0.1)))
    assert any(isinstance(layer, Augmentation) for layer in model.layers)
    export_model(model, str(tmp_path))
    reloaded = keras.models.load_model(str(tmp_path / "model.keras"), safe_mode=True)
    assert not any(isinstance(layer, Augmentation) for layer in reloaded.layers)
    assert reloaded.get_layer("augment").__class__.__name__ == "Identity"
    x = uint8_batch(2, 32)
    np.testing.assert_allclose(reloaded(x).numpy(), model(x, training=False).numpy(),
                               atol=1e-6)


# --- stain augmentation and per-image normalisation ---------------------------------------

def cells(n=4, size=16, seed=0):
    """Float [0, 1] cells: a coloured square on the black C-NMC background."""
    x = np.zeros((n, size, size, 3), np.float32)
    x[:, 4:12, 4:12] = 0.1 + 0.8 * np.random.default_rng(seed).random((n, 8, 8, 3))
    return x


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


@pytest.mark.parametrize("mode", ["per_image", "channel_mean"])
def test_cell_normalisation_statistics(mode):
    x = cells()
    x[1, 4:12, 4:12] = x[0, 4:12, 4:12] * 0.5   # a darker copy normalises like the cell
    out = CellNormalization(mode)(tf.constant(x)).numpy()
    cell = out[:, 4:12, 4:12]
    np.testing.assert_allclose(cell.mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.all(out[:, :4] == 0)
    if mode == "per_image":
        np.testing.assert_allclose(cell.std(axis=(1, 2)), 1, atol=2e-2)
        np.testing.assert_allclose(out[1], out[0], atol=2e-2)
    with pytest.raises(ValueError, match="normalize"):
        CellNormalization("global")


def test_model_inference_ignores_stain_augmentation_and_normalises(tmp_path):
    plain = build(tiny("resnet_small", normalize="per_image"))
    jittered = build(tiny("resnet_small", normalize="per_image",
                          augment=AugmentConfig(stain=0.2)))
    jittered.set_weights(plain.get_weights())
    images = uint8_batch(3, 32, seed=5)
    np.testing.assert_array_equal(jittered(images, training=False).numpy(),
                                  plain(images, training=False).numpy())
    assert plain.get_layer("normalize_standardised") is not None
    # The exported model keeps normalising: both saved forms give the same probabilities.
    expected = plain(images, training=False).numpy().reshape(-1)
    export_model(jittered, str(tmp_path))
    for source in (str(tmp_path / "model.keras"), str(tmp_path / "export")):
        np.testing.assert_allclose(load_model(source)(images), expected, atol=1e-5)
    # Pretrained backbones keep their own input scaling: no normalisation layer.
    backbone = build(tiny("resnet50", normalize="per_image"))
    assert not [layer.name for layer in backbone.layers if layer.name.startswith("normalize")]


def test_configs_written_before_normalisation_existed_read_back_without_it():
    from leukemia_tf import config as C
    old = C.Config().to_dict()
    del old["model"]["normalize"]
    assert C.from_dict(old).model.normalize == "none"
    assert C.from_dict(C.Config().to_dict()).model.normalize == C.ModelConfig().normalize
    assert C.seed_cnn_preset().model.normalize == "none"


@pytest.mark.parametrize("mode", ["per_image", "channel_mean"])
def test_model_normalisation_is_standard_layers_equal_to_the_reference(mode):
    """The models' normalisation (standard tf_keras layers, so model.keras loads without
    this package) computes what the reference CellNormalization computes; the only
    difference is the reference's 1e-4 variance floor."""
    from leukemia_tf.model.augment import build_normalization
    x = cells(n=3, size=32, seed=4)
    x[:, 6:26, 8:24] = np.round(x[:, 6:26, 8:24] * 255) / 255   # pixels as the model sees
    x[1, 10:12, 10:12] = 1 / 255                               # near-black: background
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, build_normalization(mode)(inputs))
    assert all(type(layer).__module__.startswith("tf_keras") for layer in model.layers)
    want = CellNormalization(mode)(tf.constant(x)).numpy()
    np.testing.assert_allclose(model(x).numpy(), want, atol=5e-3 if mode == "per_image"
                               else 1e-6)
    with pytest.raises(ValueError, match="normalize"):
        build_normalization("global")
