"""Test-time batch-norm adaptation on a tiny conv + BN model with a nested backbone."""
import numpy as np
import pytest
import tf_keras as keras

from leukemia_tf.inference import adapt_bn

SIZE = 32
layers = keras.layers


def _stripes(n, seed):
    """Class 1: vertical stripes, class 0: horizontal; random period, phase and colours."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        period = rng.uniform(4, 9)
        wave = np.sin(2 * np.pi * (xx if label else yy) / period + rng.uniform(0, 6.3))
        low, high = rng.uniform(20, 90, 3), rng.uniform(160, 240, 3)
        img = low + (high - low) * (wave[..., None] + 1) / 2
        out[i] = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    return out, labels


def _shift(images):
    """Another "lab": contrast x0.2 and +180 brightness (still inside 0..255)."""
    return np.clip(images * 0.2 + 180, 0, 255).astype(np.uint8)


def _model(dtype=None):
    """uint8 -> rescale -> nested backbone [conv-BN-ReLU x2, pool] -> BN -> Dense.

    "valid" padding keeps the first conv an exact per-channel affine map of the input
    colours, so adapting the first BN can undo an affine colour shift completely.
    """
    inner_in = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(8, 3, name="c1", dtype=dtype)(inner_in)
    x = layers.BatchNormalization(momentum=0.9, name="bn1", dtype=dtype)(x)
    x = layers.ReLU(dtype=dtype)(x)
    x = layers.Conv2D(8, 3, strides=2, name="c2", dtype=dtype)(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn2", dtype=dtype)(x)
    x = layers.ReLU(dtype=dtype)(x)
    backbone = keras.Model(inner_in, layers.GlobalAveragePooling2D(dtype=dtype)(x),
                           name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = backbone(layers.Rescaling(1 / 255.0)(inputs))
    x = layers.BatchNormalization(momentum=0.9, name="bn_head", dtype=dtype)(x)
    out = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, out)


def _accuracy(model, images, labels):
    return float(((model.predict(images, verbose=0).reshape(-1) >= 0.5) == labels).mean())


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    train_x, train_y = _stripes(384, seed=0)
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(train_x, train_y, batch_size=32, epochs=4, verbose=0)
    test_x, test_y = _stripes(256, seed=1)
    return model, test_x, test_y


def _weights(model):
    return {w.name: w.numpy().copy() for w in model.weights}


def test_adaptation_restores_accuracy_on_shifted_colours(trained):
    model, test_x, test_y = trained
    clean = _accuracy(model, test_x, test_y)
    shifted_x = _shift(test_x)
    shifted = _accuracy(model, shifted_x, test_y)
    assert clean > 0.9 and shifted < clean - 0.2
    with adapt_bn.adapted_batch_norm(model, shifted_x, batch_size=50):
        adapted = _accuracy(model, shifted_x, test_y)
    assert adapted > shifted + 0.2 and adapted > 0.85
    assert _accuracy(model, shifted_x, test_y) == shifted   # restored on exit


def test_only_bn_statistics_change(trained):
    model, test_x, _ = trained
    before = _weights(model)
    state = adapt_bn.adapt_batch_norm(model, _shift(test_x), batch_size=64)
    after = _weights(model)
    stats = {n for n in before if "moving_mean" in n or "moving_variance" in n}
    assert len(stats) == 6                                  # 3 BN layers, one nested
    for name in before:
        if name in stats:
            assert not np.array_equal(before[name], after[name]), name
        else:
            np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    adapt_bn.restore_batch_norm(state)
    for name, value in _weights(model).items():
        np.testing.assert_array_equal(before[name], value, err_msg=name)


def test_statistics_are_exact_population_statistics(trained):
    """Adapted inference on a set equals a training-mode pass over it as one batch (BN then
    normalises with the set's own statistics), whatever the adaptation batch size."""
    model, test_x, _ = trained
    images = _shift(test_x[:96])
    backbone = model.get_layer("backbone")
    conv1 = keras.Model(backbone.inputs, backbone.get_layer("c1").output)
    c1 = conv1(images.astype(np.float32) / 255.0).numpy().astype(np.float64)
    state = adapt_bn.adapt_batch_norm(model, images, batch_size=7)
    try:
        bn1 = backbone.get_layer("bn1")
        np.testing.assert_allclose(bn1.moving_mean.numpy(), c1.mean(axis=(0, 1, 2)),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn1.moving_variance.numpy(), c1.var(axis=(0, 1, 2)),
                                   rtol=1e-4)
        inference = model(images, training=False).numpy()
        batch_stats = model(images, training=True).numpy()   # also moves the statistics
    finally:
        adapt_bn.restore_batch_norm(state)
    np.testing.assert_allclose(inference, batch_stats, rtol=1e-4, atol=1e-5)


def test_order_and_idempotence(trained):
    """BNs are adapted upstream first, so a second adaptation on the same images finds
    nothing left to change."""
    model, test_x, _ = trained
    names = [bn.name for bn in adapt_bn.batch_norm_layers(model)]
    assert names == ["bn1", "bn2", "bn_head"]
    images = _shift(test_x[:64])
    original = adapt_bn.adapt_batch_norm(model, images, batch_size=64)
    try:
        once = adapt_bn.adapt_batch_norm(model, images, batch_size=16)
        for (_, m1, v1), (_, m2, v2) in zip(once, adapt_bn.batch_norm_state(model)):
            np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
    finally:
        adapt_bn.restore_batch_norm(original)


def test_patient_mode_adapts_each_group(trained):
    model, test_x, test_y = trained
    # Patient A is shifted, patient B is not: one shared adaptation would suit neither.
    images = np.concatenate([_shift(test_x[:128]), test_x[128:]])
    ids = np.array(["A"] * 128 + ["B"] * 128)
    before = _weights(model)
    probs = adapt_bn.predict_adapted(model, images, mode="patient", patient_ids=ids)
    assert float(((probs >= 0.5) == test_y).mean()) > 0.85
    for name, value in _weights(model).items():
        np.testing.assert_array_equal(before[name], value, err_msg=name)
    with pytest.raises(adapt_bn.AdaptBatchNormError, match="patient id"):
        adapt_bn.predict_adapted(model, images, mode="patient")


def test_dataset_input_matches_array_input(trained):
    import tensorflow as tf
    model, test_x, test_y = trained
    shifted = _shift(test_x[:64])
    ds = tf.data.Dataset.from_tensor_slices((shifted, test_y[:64])).batch(10)
    with adapt_bn.adapted_batch_norm(model, ds):
        from_ds = [bn.moving_variance.numpy() for bn in adapt_bn.batch_norm_layers(model)]
    with adapt_bn.adapted_batch_norm(model, shifted, batch_size=64):
        from_array = [bn.moving_variance.numpy() for bn in adapt_bn.batch_norm_layers(model)]
    for a, b in zip(from_ds, from_array):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    with pytest.raises(adapt_bn.AdaptBatchNormError, match="iterator"):
        adapt_bn.adapt_batch_norm(model, iter([shifted]))


def test_mixed_precision_keeps_float32_statistics():
    model = _model(dtype="mixed_bfloat16")
    images, _ = _stripes(32, seed=5)
    bns = adapt_bn.batch_norm_layers(model)
    assert len(bns) == 3 and adapt_bn.has_batch_norm(model)
    adapt_bn.adapt_batch_norm(model, images, batch_size=16)
    for bn in bns:
        assert bn.moving_mean.dtype == "float32" and bn.moving_variance.dtype == "float32"
        assert np.isfinite(bn.moving_variance.numpy()).all()
        assert not np.allclose(bn.moving_variance.numpy(), 1.0)
    inference = model(images, training=False).numpy()
    np.testing.assert_allclose(inference, model(images, training=True).numpy(), atol=0.03)


def test_model_without_batch_norm_is_refused():
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = layers.GlobalAveragePooling2D()(layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x), name="no_bn")
    assert not adapt_bn.has_batch_norm(model)
    with pytest.raises(adapt_bn.NoBatchNormError, match="no_bn"):
        adapt_bn.adapt_batch_norm(model, np.zeros((2, SIZE, SIZE, 3), np.uint8))
