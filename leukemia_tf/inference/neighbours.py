"""Neighbour voting: smooth each cell's score over the cells that look most like it.

A trained classifier's penultimate features place similar cells close together. Among the
cells being scored (a split, or one patient's cells with `groups`), each cell takes the
mean probability (or the majority call) of its k nearest neighbours, so an isolated
mistake surrounded by confidently-called look-alikes is outvoted.

Distance: "cosine" (default) L2-normalises the features, then uses Euclidean distance,
which ranks exactly like cosine similarity (|a - b|^2 = 2 - 2 cos(a, b) for unit
vectors) and keeps sklearn's fast tree/brute-force search; "euclidean" uses raw features.
Pooled ReLU features differ mostly in scale between bright and dim cells, which cosine
ignores.

The cell itself counts as one of its k voters by default (include_self=True,
recommended): with k = 1 the scores are unchanged, and a cell whose neighbours are split
keeps its own vote as the tie-breaker. Use an odd k with mode="majority".
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from sklearn.neighbors import NearestNeighbors

from leukemia_tf.errors import UserError

MODES = ("mean", "majority")
METRICS = ("cosine", "euclidean")


class NeighbourError(ValueError, UserError):
    """Bad input to the neighbour vote; the message names the argument."""


def _neighbour_index(x: np.ndarray, k: int, include_self: bool) -> np.ndarray:
    """[n, k] indices of each row's voters within x (self first when included)."""
    n = x.shape[0]
    others = k - 1 if include_self else k
    if others == 0:
        return np.arange(n)[:, None]
    search = NearestNeighbors(n_neighbors=min(others + 1, n)).fit(x)
    found = search.kneighbors(x, return_distance=False)
    rows = []
    for i, row in enumerate(found):
        # Exact duplicates may push a cell out of its own first place: drop it by index.
        rest = row[row != i][:others]
        rows.append(np.concatenate([[i], rest]) if include_self else rest)
    return np.stack(rows)


def neighbour_vote(features, probs, k: int, mode: str = "mean", metric: str = "cosine",
                   include_self: bool = True, threshold: float = 0.5,
                   groups=None) -> np.ndarray:
    """Each cell's score after voting among its k nearest cells.

    Args:
      features: [N, d] per cell, e.g. penultimate activations (`penultimate_model`).
      probs: [N] probability of ALL per cell.
      k: voters per cell, the cell itself included when include_self.
      mode: "mean" - the mean probability of the voters (a probability; threshold it as
        usual); "majority" - the share of voters called ALL (probability >= threshold),
        to be thresholded at 0.5.
      metric: "cosine" or "euclidean" (see the module doc).
      include_self: whether the cell is one of its own k voters.
      groups: optional [N] ids (e.g. patients); voters then come from the same group
        only, and k is capped at a group's size.

    Returns:
      float64 [N] scores in [0, 1].
    """
    x = np.asarray(features, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != p.size or p.size == 0:
        raise NeighbourError(f"need features [N, d] and N probabilities, got {x.shape} and "
                             f"{p.size}")
    if mode not in MODES or metric not in METRICS:
        raise NeighbourError(f"mode must be one of {MODES} and metric one of {METRICS}, got "
                             f"{mode!r}, {metric!r}")
    if int(k) < 1 or (not include_self and p.size < 2):
        raise NeighbourError(f"k must be >= 1 with at least one voter per cell, got k={k}")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    votes = p if mode == "mean" else (p >= threshold).astype(np.float64)
    ids = np.zeros(p.size, int) if groups is None else np.unique(
        np.asarray(groups).astype(str), return_inverse=True)[1]
    out = np.empty(p.size)
    for g in np.unique(ids):
        members = np.flatnonzero(ids == g)
        most = members.size if include_self else members.size - 1
        if most < 1:
            out[members] = votes[members]   # a lone cell without self-vote keeps its own
            continue
        local = _neighbour_index(x[members], min(int(k), most), include_self)
        out[members] = votes[members][local].mean(axis=1)
    return out


def _head_dense(model):
    """The classifier's final Dense layer: "logit" in leukemia_tf.models, else the last
    Dense of the outer model."""
    import tf_keras as keras

    names = [layer.name for layer in model.layers]
    if "logit" in names:
        return model.get_layer("logit")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise NeighbourError(f"model {model.name!r} has no Dense head to take features from")
    return dense[-1]


def penultimate_model(model):
    """A keras Model: the classifier's input -> [penultimate features, probability].

    The features are the input of the final Dense ("logit"): pooled backbone features
    for resnet_small and the keras.applications models, the 512-unit Dense for seed_cnn.
    Head dropout sits before that input and is inactive at inference. Under mixed
    precision the features come out in the compute dtype (float16); callers cast.
    """
    import tf_keras as keras

    head = _head_dense(model)
    return keras.Model(model.inputs, [head.input, model.output], name=f"{model.name}_features")


def predict_features(model, images, batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """(float32 [N, d] penultimate features, float32 [N] probabilities) of uint8 images
    (an array, or any iterable of image batches such as a tf.data pipeline of images),
    batch by batch, inference mode."""
    fmodel = penultimate_model(model)
    batches = images
    if isinstance(images, np.ndarray):
        batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    feats, probs = [], []
    for batch in batches:
        f, p = fmodel(batch, training=False)
        feats.append(np.asarray(f, np.float32).reshape(len(f), -1))
        probs.append(np.asarray(p, np.float32).reshape(-1))
    if not feats:
        raise NeighbourError("no images to compute features from")
    return np.concatenate(feats), np.concatenate(probs)


def vote_summary(original, voted, threshold: float = 0.5, voted_threshold: Optional[float] = None,
                 labels: Optional[np.ndarray] = None) -> dict:
    """How many calls the vote changed (and, with labels, how many it fixed / broke).

    `voted_threshold` defaults to `threshold` (mode="mean"); pass 0.5 for mode="majority".
    """
    before = np.asarray(original) >= threshold
    after = np.asarray(voted) >= (threshold if voted_threshold is None else voted_threshold)
    out = {"changed": int((before != after).sum()), "num_examples": int(before.size)}
    if labels is not None:
        y = np.asarray(labels).astype(bool)
        out["fixed"] = int(((before != y) & (after == y)).sum())
        out["broken"] = int(((before == y) & (after != y)).sum())
    return out
