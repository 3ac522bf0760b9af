"""Per-image cell normalisation: the reference statistics, the standard-layer version the
models use (so model.keras loads anywhere), and its place in the exported model."""
import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import presets
from leukemia_tf.config import AugmentConfig
from leukemia_tf.model.augment import CellNormalization, build_normalization
from leukemia_tf.inference.loading import load_model
from leukemia_tf.model.export import export_model
from tests.model.helpers import build, cells, tiny, uint8_batch


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
        predictor = load_model(source, trust_saved_model=True)
        np.testing.assert_allclose(predictor(images), expected, atol=1e-5)
    # Pretrained backbones keep their own input scaling: no normalisation layer.
    backbone = build(tiny("resnet50", normalize="per_image"))
    assert not [layer.name for layer in backbone.layers if layer.name.startswith("normalize")]


def test_configs_written_before_normalisation_existed_read_back_without_it():
    old = C.Config().to_dict()
    del old["model"]["normalize"]
    assert C.from_dict(old).model.normalize == "none"
    assert C.from_dict(C.Config().to_dict()).model.normalize == C.ModelConfig().normalize
    assert presets.seed_cnn_preset().model.normalize == "none"


@pytest.mark.parametrize("mode", ["per_image", "channel_mean"])
def test_model_normalisation_is_standard_layers_equal_to_the_reference(mode):
    """The models' normalisation (standard tf_keras layers, so model.keras loads without
    this package) computes what the reference CellNormalization computes; the only
    difference is the reference's 1e-4 variance floor."""
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
