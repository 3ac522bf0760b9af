"""A shortcut probe: how much of the label do seven hand features of a cell already give?

C-NMC cells are segmented onto a black background. If cell size or overall colour alone
separates ALL from hem on a split (e.g. because the classes were stained or imaged on
different days), a CNN can score well without learning morphology. The probe fits a
logistic regression on

    area                 share of pixels whose brightest channel is > FOREGROUND_LEVEL
    mean_r/g/b, std_r/g/b  of each channel over those (non-black) pixels

and reports weighted F1 and ROC AUC on a held-out set (fit on one split or patient group,
score on another). A probe far above chance is a warning to read next to the model's
numbers, not a verdict on the model.

FOREGROUND_LEVEL is 10 (of 255): the background of C-NMC images is exact zero, and a
small margin keeps compression noise and the dark rim left by segmentation out of the
cell. A cell with no foreground pixel gets area 0 and zero colour statistics.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from leukemia_tf.errors import UserError

FOREGROUND_LEVEL = 10
FEATURE_NAMES = ("area", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b")


class ShortcutError(ValueError, UserError):
    """Bad input to the shortcut probe; the message names the argument."""


def features(images) -> np.ndarray:
    """The seven hand features of each image.

    Args:
      images: uint8 [N, H, W, 3] RGB (or one [H, W, 3] image), cells on black.

    Returns:
      float64 [N, 7] in FEATURE_NAMES order; area in [0, 1], colour in 0..255 units.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ShortcutError(f"expected uint8 images [N, H, W, 3], got {x.dtype} {x.shape}")
    mask = x.max(axis=-1) > FOREGROUND_LEVEL                       # [N, H, W]
    count = mask.sum(axis=(1, 2)).astype(np.float64)               # [N]
    keep = mask[..., None]
    # Integer sums are exact; squares of uint8 fit uint16. Float work starts per image.
    sums = np.where(keep, x, 0).sum(axis=(1, 2), dtype=np.int64).astype(np.float64)
    squares = np.where(keep, x.astype(np.uint16) ** 2, 0).sum(axis=(1, 2), dtype=np.int64)
    safe = np.maximum(count, 1.0)[:, None]
    mean = sums / safe
    var = np.maximum(squares.astype(np.float64) / safe - mean ** 2, 0.0)
    area = count / float(x.shape[1] * x.shape[2])
    return np.column_stack([area, mean, np.sqrt(var)])


def dataset_features(ds) -> Tuple[np.ndarray, np.ndarray]:
    """Features and labels from a tf.data pipeline, one batch at a time.

    Args:
      ds: yields batches of (images, labels), or dicts with "image" and "label" (the
        metadata pipeline). Only 7 floats per image are kept, never the images.

    Returns:
      (float64 [N, 7], int64 [N] labels).
    """
    feats, labels = [], []
    for batch in ds:
        if isinstance(batch, dict):
            images, y = batch["image"], batch["label"]
        else:
            images, y = batch[0], batch[1]
        feats.append(features(np.asarray(images)))
        labels.append(np.asarray(y).reshape(-1).astype(np.int64))
    if not feats:
        raise ShortcutError("the dataset yielded no batches")
    return np.concatenate(feats), np.concatenate(labels)


def _checked(feats, labels) -> Tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if f.ndim != 2 or f.shape[0] != y.size or f.shape[0] == 0:
        raise ShortcutError(f"need features [N, k] and N labels, got {f.shape} and {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ShortcutError(f"labels must be 0 (hem) / 1 (ALL), got {np.unique(y)[:5]}")
    return f, y.astype(np.int64)


def fit_probe(feats, labels) -> Pipeline:
    """StandardScaler + LogisticRegression(class_weight="balanced") fitted on the features.

    Balanced weights because C-NMC has about twice as many ALL as hem cells: an
    unweighted probe would lean on the prior and look informative when it is not.

    Raises:
      ShortcutError: bad shapes or a single class.
    """
    f, y = _checked(feats, labels)
    if np.unique(y).size < 2:
        raise ShortcutError("fitting the probe needs both classes (ALL and hem)")
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(class_weight="balanced", max_iter=1000))
    return probe.fit(f, y)


def score_probe(probe: Pipeline, feats, labels) -> dict:
    """weighted_f1 (at probability 0.5) and roc_auc (None on one class) of the probe on
    (ideally held-out) features; JSON-ready."""
    f, y = _checked(feats, labels)
    p = probe.predict_proba(f)[:, 1]
    pred = (p >= 0.5).astype(np.int64)
    auc = float(skm.roc_auc_score(y, p)) if np.unique(y).size == 2 else None
    return {"weighted_f1": float(skm.f1_score(y, pred, average="weighted", zero_division=0)),
            "roc_auc": auc, "num_examples": int(y.size)}


def cross_validated_probe(feats, labels, groups, n_splits: int = 5) -> dict:
    """The probe's score on one split without a second split: fit on some patients, score
    the others (GroupKFold over `groups`, e.g. patient ids), pooled over the folds.

    Cells of one patient never sit on both sides, so a probe cannot win by recognising a
    patient's stain. n_splits is capped at the number of groups.

    Raises:
      ShortcutError: fewer than two groups, or a training fold with a single class.
    """
    f, y = _checked(feats, labels)
    g = np.asarray(groups).astype(str).reshape(-1)
    if g.size != y.size or np.unique(g).size < 2:
        raise ShortcutError("cross-validating the probe needs one group per cell and at "
                            "least two groups")
    folds = min(int(n_splits), np.unique(g).size)
    p = np.empty(y.size)
    for train, test in GroupKFold(folds).split(f, y, g):
        p[test] = fit_probe(f[train], y[train]).predict_proba(f[test])[:, 1]
    pred = (p >= 0.5).astype(np.int64)
    auc = float(skm.roc_auc_score(y, p)) if np.unique(y).size == 2 else None
    return {"weighted_f1": float(skm.f1_score(y, pred, average="weighted", zero_division=0)),
            "roc_auc": auc, "num_examples": int(y.size), "folds": folds}
