"""Hand features and the shortcut probe on synthetic discs."""
import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf.inference import shortcut

SIZE = 32


def _discs(radii, rng):
    """One disc per radius, random centre and random colour (all channels > the
    foreground level, plus per-pixel noise), on black."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.zeros((len(radii), SIZE, SIZE, 3), np.uint8)
    for i, r in enumerate(radii):
        cy, cx = rng.uniform(r, SIZE - r, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        colour = rng.integers(60, 230, 3)
        noise = rng.integers(-20, 21, (SIZE, SIZE, 3))
        out[i][disc] = np.clip(colour + noise[disc], 20, 255)
    return out


def _set(n, size_is_label, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    if size_is_label:
        radii = np.where(labels == 1, rng.uniform(10, 14, n), rng.uniform(4, 8, n))
    else:
        radii = rng.uniform(4, 14, n)
    return _discs(radii, rng), labels


def test_features_known_answer():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, 0, 0] = (100, 50, 20)
    img[0, 1, 1] = (200, 50, 11)     # 11 > the level 10: foreground
    img[0, 2, 2] = (10, 10, 10)      # not brighter than the level: background
    f = shortcut.features(img)
    assert f.shape == (1, 7)
    np.testing.assert_allclose(f[0], [2 / 16, 150, 50, 15.5, 50, 0, 4.5])
    empty = shortcut.features(np.zeros((5, 5, 3), np.uint8))
    np.testing.assert_array_equal(empty, np.zeros((1, 7)))
    with pytest.raises(shortcut.ShortcutError, match="uint8"):
        shortcut.features(np.zeros((1, 4, 4, 3), np.float32))


def test_probe_near_chance_without_size_signal():
    train_x, train_y = _set(400, size_is_label=False, seed=0)
    test_x, test_y = _set(400, size_is_label=False, seed=1)
    probe = shortcut.fit_probe(shortcut.features(train_x), train_y)
    scores = shortcut.score_probe(probe, shortcut.features(test_x), test_y)
    assert 0.35 <= scores["roc_auc"] <= 0.65
    assert scores["num_examples"] == 400


def test_probe_finds_size_shortcut():
    train_x, train_y = _set(200, size_is_label=True, seed=2)
    test_x, test_y = _set(200, size_is_label=True, seed=3)
    probe = shortcut.fit_probe(shortcut.features(train_x), train_y)
    scores = shortcut.score_probe(probe, shortcut.features(test_x), test_y)
    assert scores["roc_auc"] > 0.95
    assert scores["weighted_f1"] > 0.9


def test_dataset_features_streams_tuples_and_dicts():
    images, labels = _set(50, size_is_label=True, seed=4)
    expected = shortcut.features(images)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    got, got_y = shortcut.dataset_features(ds)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_array_equal(got_y, labels)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels[:, None]})
    got, got_y = shortcut.dataset_features(ds.batch(7))
    np.testing.assert_allclose(got, expected)
    np.testing.assert_array_equal(got_y, labels)


def test_probe_needs_both_classes():
    with pytest.raises(shortcut.ShortcutError, match="both classes"):
        shortcut.fit_probe(np.zeros((3, 7)), [1, 1, 1])


def test_cross_validated_probe_by_patient():
    images, labels = _set(240, size_is_label=True, seed=6)
    groups = np.arange(240) % 12
    scores = shortcut.cross_validated_probe(shortcut.features(images), labels, groups, 4)
    assert scores["roc_auc"] > 0.95 and scores["folds"] == 4
    images, labels = _set(240, size_is_label=False, seed=7)
    scores = shortcut.cross_validated_probe(shortcut.features(images), labels, groups, 4)
    assert 0.35 <= scores["roc_auc"] <= 0.65
    with pytest.raises(shortcut.ShortcutError, match="two groups"):
        shortcut.cross_validated_probe(shortcut.features(images), labels, np.zeros(240))
