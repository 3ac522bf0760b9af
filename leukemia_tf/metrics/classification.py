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

from typing import Union

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from leukemia_tf.metrics import patients
from leukemia_tf.wording import count

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

      Undefined values are None (n/a in reports), never a number that looks certain:
      roc_auc, pr_auc, balanced_accuracy and macro_f1 when only one class is present;
      recall / sensitivity / specificity of a class with no examples; precision of a
      class that is never predicted (0/0); F1 of a class that is neither present nor
      predicted. weighted_f1 is the challenge's sklearn call (zero_division=0): a class
      with no examples has weight 0 in it, so it stays defined.

    Raises:
      ValueError: empty input, mismatched lengths, labels outside {0, 1}, probabilities
        outside [0, 1] or NaN, or a threshold outside [0, 1].
    """
    y, p = validate_scores(labels, probabilities)
    threshold = _validate_threshold(threshold)
    pred = (p >= threshold).astype(np.int64)
    both_classes = np.unique(y).size == 2

    out = {"num_examples": int(y.size), "threshold": threshold,
           "accuracy": float(np.mean(y == pred))}
    for k, name in CLASS_NAMES.items():
        tp = int(np.sum((pred == k) & (y == k)))
        called, support = int(np.sum(pred == k)), int(np.sum(y == k))
        out[f"precision_{name}"] = tp / called if called else None
        out[f"recall_{name}"] = tp / support if support else None
        out[f"f1_{name}"] = 2 * tp / (called + support) if called + support else None
        out[f"support_{name}"] = support
    # sklearn's balanced accuracy and macro F1 average over the classes present, so on a
    # one-class set they show 1.0 beside a per-class F1 that is undefined: None instead.
    recalls = [out["recall_all"], out["recall_hem"]]
    out["balanced_accuracy"] = float(np.mean(recalls)) if both_classes else None
    # No `labels=` here on purpose: this is the challenge's call, exactly as sklearn does it.
    out["weighted_f1"] = float(skm.f1_score(y, pred, average="weighted", zero_division=0))
    f1s = [out["f1_all"], out["f1_hem"]]
    out["macro_f1"] = float(np.mean(f1s)) if both_classes else None
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


# Below this many images, or patients, a report says its numbers are not to be trusted
# alone: with 30 images one misclassified cell moves accuracy by 3 points, and C-NMC cells
# of one patient share stain and acquisition, so 5 patients are few samples, not hundreds.
SMALL_N_IMAGES = 30
SMALL_N_PATIENTS = 5
CI_RESAMPLES = 1000


def weighted_f1_fast(labels, probabilities, threshold: float = 0.5) -> float:
    """sklearn's f1_score(average="weighted", zero_division=0) from confusion counts:
    the same value (tests compare), fast enough for a thousand bootstrap resamples."""
    y = np.asarray(labels)
    pred = np.asarray(probabilities) >= threshold
    total, score = y.size, 0.0
    for k in (0, 1):
        truth, called = y == k, pred == bool(k)
        support = int(truth.sum())
        denominator = support + int(called.sum())
        if support and denominator:
            score += support * 2.0 * int((truth & called).sum()) / denominator
    return score / total if total else float("nan")


def confidence_intervals(labels, probabilities, patient_ids=None, threshold: float = 0.5,
                         n: int = CI_RESAMPLES, seed: int = 0, alpha: float = 0.05) -> dict:
    """Bootstrap intervals of weighted F1 and ROC AUC, resampling patients.

    Cells of one patient are not independent (same stain, same day), so whole patients
    are drawn (`patients.bootstrap_ci`). Without patient ids every cell is its own unit,
    and `note` says that the interval is then too narrow.

    Returns:
      {"unit": "patients" | "cells", "units": count, "level": 0.95, "resamples": n,
       "note": str or None, "weighted_f1": {estimate, low, high, undefined},
       "roc_auc": {...}}; low/high are None with fewer than 2 units or when the metric
      is undefined in every resample (AUC of a one-class set), and with fewer than
      SMALL_N_PATIENTS patients; `undefined` counts resamples left out (one class drawn).
    """
    y, p = validate_scores(labels, probabilities)
    threshold = _validate_threshold(threshold)
    by_patient = patients.patient_ids_known(patient_ids)
    units = np.asarray(patient_ids).astype(str) if by_patient else np.arange(y.size).astype(str)
    out = {"unit": "patients" if by_patient else "cells",
           "units": int(np.unique(units).size), "level": 1.0 - alpha, "resamples": int(n),
           "note": None if by_patient else "patient ids unknown: resampled cells, which "
           "treats cells of one patient as independent (the interval is too narrow)"}
    fns = {"weighted_f1": lambda a, b: weighted_f1_fast(a, b, threshold),
           "roc_auc": patients.roc_auc}
    # A percentile bootstrap over 2-4 patients draws the same few sets again and again:
    # its "interval" would look precise and mean nothing.
    enough = out["units"] >= (SMALL_N_PATIENTS if by_patient else 2)
    for name, fn in fns.items():
        ci = patients.bootstrap_ci(units, y, p, fn, n=n, seed=seed, alpha=alpha)
        low, high = (ci.low, ci.high) if enough else (None, None)
        out[name] = {"estimate": ci.estimate, "low": low, "high": high,
                     "undefined": ci.undefined}
    return out


def format_ci(ci: dict | None, name: str, digits: int = 2) -> str:
    """`0.83 [0.78, 0.88] 95% CI, bootstrap over 10 patients`; n/a where undefined."""
    if not ci or name not in ci:
        return "n/a"
    c = ci[name]
    if c["estimate"] is None:
        return "n/a"
    value = f"{c['estimate']:.{digits}f}"
    if c["low"] is None:
        need = f", a bootstrap needs {SMALL_N_PATIENTS}+" if ci["unit"] == "patients" else ""
        return f"{value} (no interval: {_units(ci)}{need})"
    text = (f"{value} [{c['low']:.{digits}f}, {c['high']:.{digits}f}] "
            f"{ci['level']:.0%} CI, bootstrap over {_units(ci)}")
    undefined, resamples = c.get("undefined") or 0, ci.get("resamples") or 0
    if undefined and resamples:
        share = undefined / resamples
        text += (f" (undefined in {share:.0%} of resamples)" if share >= 0.005 else
                 f" (undefined in {undefined} of {resamples} resamples)")
    return text


def _units(ci: dict) -> str:
    """`12 patients`, `1 patient`, `40 cells`: what a bootstrap resampled."""
    unit = ci["unit"]
    return count(ci["units"], unit[:-1] if unit.endswith("s") else unit, unit)


def small_n_warnings(result: dict, ci: dict | None = None) -> list:
    """Plain-language warnings for a result too small or one-sided to be trusted alone."""
    out = []
    n = result.get("num_examples") or 0
    present = [CLASS_NAMES[k] for k in (1, 0) if result.get(f"support_{CLASS_NAMES[k]}")]
    if len(present) < 2:
        which = "the 1 image is" if n == 1 else f"all {n} images are"
        out.append(f"single class: {which} {'/'.join(present) or '?'}, so ROC "
                   "AUC, balanced accuracy, macro F1 and the missing class's metrics are "
                   "undefined (n/a), and accuracy only measures one class")
    if n < SMALL_N_IMAGES:
        out.append(f"small N: {count(n, 'image')} (< {SMALL_N_IMAGES}); one image moves "
                   f"accuracy by {100.0 / max(n, 1):.0f} points, so read the intervals, not "
                   "the digits")
    if ci and ci.get("unit") == "patients" and ci.get("units", 0) < SMALL_N_PATIENTS:
        out.append(f"few patients: {ci['units']} (< {SMALL_N_PATIENTS}); cells of one patient "
                   "are not independent, so the results say little about new patients")
    return out
