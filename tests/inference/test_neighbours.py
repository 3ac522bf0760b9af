"""Neighbour voting and the penultimate-feature model."""
import numpy as np
import pytest

from leukemia_tf.model import registry as models
from leukemia_tf.config import ModelConfig
from leukemia_tf.inference import neighbours


def _two_clusters(seed=0):
    """Cells 0-9 around direction A (all hem, p 0.1) with cell 3 wrongly at 0.9; cells
    10-19 around direction B (all ALL, p 0.8)."""
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0.0, 0.0, 0.0]) + rng.normal(0, 0.05, (10, 4))
    b = np.array([0.0, 0.0, 1.0, 0.0]) + rng.normal(0, 0.05, (10, 4))
    feats = np.vstack([a * rng.uniform(0.5, 5, (10, 1)), b * rng.uniform(0.5, 5, (10, 1))])
    probs = np.r_[np.full(10, 0.1), np.full(10, 0.8)]
    probs[3] = 0.9
    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    return feats, probs, labels


@pytest.mark.parametrize("mode", ["mean", "majority"])
def test_vote_flips_isolated_wrong_cell(mode):
    feats, probs, labels = _two_clusters()
    voted = neighbours.neighbour_vote(feats, probs, k=5, mode=mode)
    assert probs[3] >= 0.5 and voted[3] < 0.5
    assert ((voted >= 0.5) == labels).all()
    if mode == "mean":
        assert voted[3] == pytest.approx((0.9 + 4 * 0.1) / 5)
    else:
        assert voted[3] == pytest.approx(1 / 5)
    summary = neighbours.vote_summary(probs, voted, labels=labels)
    assert summary == {"changed": 1, "num_examples": 20, "fixed": 1, "broken": 0}


def test_k1_with_self_changes_nothing_and_without_self_takes_the_neighbour():
    feats, probs, _ = _two_clusters()
    np.testing.assert_array_equal(neighbours.neighbour_vote(feats, probs, k=1), probs)
    alone = neighbours.neighbour_vote(feats, probs, k=1, include_self=False)
    assert alone[3] == pytest.approx(0.1)


def test_cosine_ignores_scale_euclidean_does_not():
    # Cell 0 points like the "far" cells but sits next to the small "near" ones.
    feats = np.array([[0.1, 0.0], [0.0, 0.1], [0.0, 0.12], [10.0, 0.5], [9.0, 0.4]])
    probs = np.array([0.2, 0.0, 0.0, 1.0, 1.0])
    cos = neighbours.neighbour_vote(feats, probs, k=3, include_self=False)
    euc = neighbours.neighbour_vote(feats, probs, k=2, include_self=False, metric="euclidean")
    assert cos[0] == pytest.approx(2 / 3)      # 3 and 4 are the two closest directions
    assert euc[0] == pytest.approx(0.0)        # 1 and 2 are the two closest points


def test_groups_keep_votes_within_a_patient():
    feats, probs, _ = _two_clusters()
    groups = np.array(["P"] * 4 + ["Q"] * 16)   # cell 3 shares patient P with 0-2 only
    voted = neighbours.neighbour_vote(feats, probs, k=9, groups=groups)
    assert voted[3] == pytest.approx((0.9 + 3 * 0.1) / 4)   # k capped at the group's 4
    with pytest.raises(neighbours.NeighbourError, match="mode"):
        neighbours.neighbour_vote(feats, probs, k=3, mode="median")


@pytest.mark.parametrize("name,size,width", [("resnet_small", 32, 32), ("seed_cnn", 46, 512)])
def test_penultimate_model_matches_the_classifier(name, size, width):
    cfg = ModelConfig(name=name, width=4)
    model = models.build_model(cfg, size)
    images = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    feats, probs = neighbours.predict_features(model, images, batch_size=2)
    assert feats.shape == (5, width) and feats.dtype == np.float32
    np.testing.assert_allclose(probs, model(images, training=False).numpy().reshape(-1),
                               rtol=1e-5, atol=1e-6)
    # The features are what the logit layer sees: logit(features) gives the probability.
    logit = model.get_layer("logit")(feats).numpy().reshape(-1)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), probs, rtol=1e-4, atol=1e-5)
