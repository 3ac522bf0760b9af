"""Classification metrics for ALL (label 1) vs hem (label 0), without TensorFlow.

The C-NMC 2019 challenge ranked entries by the support-weighted F1 over both classes,
exactly sklearn's `f1_score(average="weighted")`; `classification_metrics` reports it as
`weighted_f1` next to the usual binary metrics. Everything returned is plain Python
(float / int / list / None) so it can go straight into a JSON file: an undefined value
(ROC AUC on a single-class set, recall of a class with no examples) is None, not NaN.

A prediction is ALL when `probability >= threshold`; `choose_threshold` picks thresholds
under the same rule.
"""
from __future__ import annotations

import warnings
from typing import Union

import numpy as np
import pandas as pd
from sklearn import metrics as skm

CLASS_NAMES = {0: "hem", 1: "all"}   # key suffixes: precision_all, recall_hem, ...
THRESHOLD_METHODS = ("youden", "f1")


def validate_scores(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Checks labels (0/1) and probabilities ([0, 1], no NaN) and returns them as 1-D arrays.

    Returns:
      (int64 labels, float64 probabilities).

    Raises:
      ValueError: empty, mismatched lengths, labels outside {0, 1}, or probabilities
        outside [0, 1] or NaN.
    """
    y = np.asarray(labels)
    try:
        p = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("probabilities must be numbers in [0, 1]") from None
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels and probabilities must be 1-D, got shapes {y.shape} and "
                         f"{p.shape}")
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    if y.size == 0:
        raise ValueError("no examples: labels and probabilities are empty")
    try:
        y_num = y.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"labels must be 0 (hem) or 1 (ALL), got {np.unique(y)[:5]}") from None
    bad = ~np.isin(y_num, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0 (hem) or 1 (ALL); found {np.unique(y[bad])[:5]} "
                         f"at {int(bad.sum())} positions")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} probabilities are NaN")
    outside = (p < 0.0) | (p > 1.0)
    if outside.any():
        raise ValueError(f"probabilities must lie in [0, 1]; {int(outside.sum())} do not "
                         f"(min {p.min():g}, max {p.max():g}) - were logits passed?")
    return y_num.astype(np.int64), p


def _validate_threshold(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:   # also rejects NaN
        raise ValueError(f"threshold must be in [0, 1], got {value}")
    return value


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


def classification_metrics(labels, probabilities, threshold: float = 0.5) -> dict:
    """Computes the evaluation metrics of binary ALL-vs-hem predictions.

    Args:
      labels: 0 (hem) / 1 (ALL) per image.
      probabilities: the model's probability of ALL per image, in [0, 1].
      threshold: an image is predicted ALL when its probability >= threshold.

    Returns:
      A JSON-serialisable dict: num_examples, threshold, accuracy, balanced_accuracy,
      precision_/recall_/f1_/support_ + all|hem, weighted_f1 (the challenge metric),
      macro_f1, roc_auc, pr_auc (average precision, ALL positive), confusion_matrix
      [[tn, fp], [fn, tp]] (rows = true hem, ALL), sensitivity (recall of ALL) and
      specificity (recall of hem).

      Undefined values are None: roc_auc and pr_auc when only one class is present, and
      recall / sensitivity / specificity of a class with no examples. Precision and F1 of
      a class that is never predicted follow sklearn's zero_division=0, which is also what
      weighted_f1 uses.

    Raises:
      ValueError: empty input, mismatched lengths, labels outside {0, 1}, probabilities
        outside [0, 1] or NaN, or a threshold outside [0, 1].
    """
    y, p = validate_scores(labels, probabilities)
    threshold = _validate_threshold(threshold)
    pred = (p >= threshold).astype(np.int64)
    both_classes = np.unique(y).size == 2

    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=0)
    out = {"num_examples": int(y.size), "threshold": threshold,
           "accuracy": float(skm.accuracy_score(y, pred))}
    with warnings.catch_warnings():
        # On a single-class set sklearn warns and averages the recall of the class present.
        warnings.simplefilter("ignore", UserWarning)
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
    for k, name in CLASS_NAMES.items():
        out[f"precision_{name}"] = float(precision[k])
        out[f"recall_{name}"] = float(recall[k]) if support[k] else None
        out[f"f1_{name}"] = float(f1[k])
        out[f"support_{name}"] = int(support[k])
    # No `labels=` here on purpose: this is the challenge's call, exactly as sklearn does it.
    out["weighted_f1"] = float(skm.f1_score(y, pred, average="weighted", zero_division=0))
    out["macro_f1"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
    out["roc_auc"] = _opt_float(skm.roc_auc_score(y, p)) if both_classes else None
    out["pr_auc"] = _opt_float(skm.average_precision_score(y, p)) if both_classes else None
    out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    out["sensitivity"] = out["recall_all"]
    out["specificity"] = out["recall_hem"]
    return out


def _cut_points(y: np.ndarray, p: np.ndarray):
    """Every distinct score as a threshold, descending, with the counts it gives.

    Returns (thresholds, tp, fp, n_pos, n_neg): at thresholds[i], tp[i] ALL and fp[i] hem
    images have probability >= thresholds[i].
    """
    if np.unique(y).size != 2:
        raise ValueError("choosing a threshold needs both classes (ALL and hem) in the labels")
    # drop_intermediate=False keeps one point per distinct score; the first point (inf,
    # nothing predicted ALL) is not a usable probability threshold.
    fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tp = np.rint(tpr[1:] * n_pos)
    fp = np.rint(fpr[1:] * n_neg)
    return thresholds[1:], tp, fp, n_pos, n_neg


def _between(thresholds: np.ndarray, i: int) -> float:
    """The midpoint between cut score i and the next lower distinct score.

    Every example gets the same prediction as at thresholds[i], but the threshold does not
    sit exactly on one training example's score.
    """
    if i + 1 < thresholds.size:
        return float((thresholds[i] + thresholds[i + 1]) / 2.0)
    return float(thresholds[i])


def choose_threshold(labels, probabilities, method: Union[str, float]) -> float:
    """Picks the decision threshold, usually on a validation set.

    Args:
      labels: 0 (hem) / 1 (ALL) per image.
      probabilities: probability of ALL per image.
      method: "youden" - maximise TPR - FPR (Youden's J) over the ROC curve;
        "f1" - maximise weighted F1 over all distinct scores as thresholds;
        a number or numeric string in [0, 1] - returned as is.

    Returns:
      The threshold (predict ALL when probability >= threshold). For "youden" and "f1"
      it lies midway between the best cut score and the next lower score, so it gives
      the optimal predictions on this data without sitting on one example's score. Ties
      go to the highest threshold.

    Raises:
      ValueError: unknown method, a number outside [0, 1], invalid inputs, or a
        data-driven method on labels of a single class.
    """
    if not isinstance(method, str) or method.strip().lower() not in THRESHOLD_METHODS:
        try:
            return _validate_threshold(method)
        except ValueError:
            raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS} or a "
                             f"number in [0, 1], got {method!r}") from None
    method = method.strip().lower()
    y, p = validate_scores(labels, probabilities)
    thresholds, tp, fp, n_pos, n_neg = _cut_points(y, p)
    if method == "youden":
        score = tp / n_pos - fp / n_neg
    else:
        # Weighted F1 from the confusion counts at every cut at once (one sklearn call per
        # cut would be quadratic); tests check it against sklearn's f1_score at each cut.
        fn, tn = n_pos - tp, n_neg - fp
        with np.errstate(invalid="ignore", divide="ignore"):
            f1_all = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
            f1_hem = np.nan_to_num(2 * tn / (2 * tn + fn + fp))
        score = (n_pos * f1_all + n_neg * f1_hem) / (n_pos + n_neg)
    return _between(thresholds, int(np.argmax(score)))   # argmax: first = highest threshold


def per_patient(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per patient, worst first.

    Args:
      df: predictions with columns patient_id, label, probability, prediction (one row
        per image).

    Returns:
      One row per patient: patient_id, label, images, correct, accuracy,
      mean_probability; sorted by accuracy ascending, then more images first, then
      patient_id.

    Raises:
      ValueError: missing columns, an empty frame, or a patient with both labels (C-NMC
        patients are single-class, so that means the labels were joined wrongly).
    """
    required = ["patient_id", "label", "probability", "prediction"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"predictions frame lacks columns {missing}; has {list(df.columns)}")
    if df.empty:
        raise ValueError("predictions frame is empty")
    frame = df[required].assign(correct=(df["prediction"] == df["label"]).astype(np.int64))
    groups = frame.groupby("patient_id", sort=False)
    mixed = groups["label"].nunique()
    mixed = mixed[mixed > 1]
    if not mixed.empty:
        raise ValueError(f"patients with both labels: {list(mixed.index[:10])}")
    out = groups.agg(label=("label", "first"), images=("label", "size"),
                     correct=("correct", "sum"), mean_probability=("probability", "mean"))
    out = out.reset_index()
    out["label"] = out["label"].astype(np.int64)
    out["images"] = out["images"].astype(np.int64)
    out["correct"] = out["correct"].astype(np.int64)
    out["accuracy"] = out["correct"] / out["images"]
    out = out.sort_values(["accuracy", "images", "patient_id"], ascending=[True, False, True],
                          kind="mergesort")
    columns = ["patient_id", "label", "images", "correct", "accuracy", "mean_probability"]
    return out[columns].reset_index(drop=True)
