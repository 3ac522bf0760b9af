"""Export: model.keras and the SavedModel give the training model's probabilities, take
raw uint8 cells and carry no augmentation."""
import dataclasses

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import AugmentConfig
from leukemia_tf.model.augment import Augmentation
from leukemia_tf.inference.loading import load_model
from leukemia_tf.model.export import export_model
from tests.model.helpers import build, tiny, uint8_batch


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
        # batch 2 exercises splitting; our own SavedModel is trusted
        predictor = load_model(source, batch_size=2, trust_saved_model=True)
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


def test_exported_keras_model_has_no_augmentation_layer(tmp_path):
    model = build(tiny("resnet_small", augment=AugmentConfig(zoom=0.1)))
    assert any(isinstance(layer, Augmentation) for layer in model.layers)
    export_model(model, str(tmp_path))
    reloaded = keras.models.load_model(str(tmp_path / "model.keras"), safe_mode=True)
    assert not any(isinstance(layer, Augmentation) for layer in reloaded.layers)
    assert reloaded.get_layer("augment").__class__.__name__ == "Identity"
    x = uint8_batch(2, 32)
    np.testing.assert_allclose(reloaded(x).numpy(), model(x, training=False).numpy(),
                               atol=1e-6)
