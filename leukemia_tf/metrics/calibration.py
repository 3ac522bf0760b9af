"""Probability calibration of the ALL-vs-hem classifier: temperature scaling, ECE, Brier
score and the reliability bins (drawn by reports.charts.plot_reliability).

Temperature scaling (Guo et al. 2017) divides the logit by one scalar T > 0 fitted on a
labeled split (normally the validation split, never the one being reported): T > 1 softens
an over-confident model, T < 1 sharpens an under-confident one. Dividing by T > 0 never
changes the order of the scores, so ROC AUC is unchanged; predictions at the 0.5 threshold
are unchanged too (logit 0 stays 0), other thresholds move.

ECE and the reliability bins use the top-label confidence, the standard for calibration
of a classifier's decisions: confidence = max(p, 1 - p), correct = (p >= 0.5) == label.
For a binary model the confidence lies in [0.5, 1], so the equal-width bins split
[0.5, 1] (not [0, 1], which would leave half of them empty). Bins are right-closed,
(low, high], the first also holds 0.5.

scipy (a dependency of scikit-learn, which the package requires) does the 1-D fit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

from leukemia_tf.errors import UserError

# Probabilities are clipped to [EPS, 1 - EPS] before the logit: a float32 sigmoid returns
# exactly 0 or 1 beyond |logit| ~ 17, whose logit would be infinite.
EPS = 1e-7
# Search range of log(1/T): T from e^-7 (sharpen ~1000x) to e^7 (flatten ~1000x).
_LOG_INV_T_BOUNDS = (-7.0, 7.0)


class CalibrationError(ValueError, UserError):
    """Bad input to a calibration function; the message names the argument."""


def _labels_probs(probs, labels):
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.size == 0 or p.shape != y.shape:
        raise CalibrationError(f"need one label per probability, got {p.size} probabilities "
                               f"and {y.size} labels")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise CalibrationError("probabilities must lie in [0, 1] without NaN "
                               "(pass kind='logits' for logits)")
    if not np.isin(y, (0, 1)).all():
        raise CalibrationError(f"labels must be 0 (hem) / 1 (ALL), got {np.unique(y)[:5]}")
    return p, y.astype(np.float64)


def to_logits(probs) -> np.ndarray:
    """log(p / (1 - p)) in float64, with p clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))   # overflow-free 1 / (1 + exp(-z))


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits z: log(1 + e^z) - y z, computed stably."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(scores, labels, kind: str = "probabilities") -> float:
    """The temperature T > 0 minimising the negative log-likelihood of sigmoid(logit / T).

    Args:
      scores: per image, probabilities of ALL (kind="probabilities", the models' output)
        or logits (kind="logits").
      labels: 0 (hem) / 1 (ALL) per image; both classes must be present.

    Returns:
      T as a float. The NLL is convex in 1/T, so the bounded 1-D search over log(1/T)
      finds the global minimum within T in [e^-7, e^7]; labels anti-correlated with the
      scores (best 1/T <= 0) end at the flattest bound.

    Raises:
      CalibrationError: bad input, unknown kind, or a single class (the NLL would then
        fall forever as T -> 0, so there is nothing to fit).
    """
    if kind == "probabilities":
        p, y = _labels_probs(scores, labels)
        z = to_logits(p)
    elif kind == "logits":
        z = np.asarray(scores, dtype=np.float64).reshape(-1)
        _, y = _labels_probs(np.full(z.shape, 0.5), labels)
        if not np.isfinite(z).all():
            raise CalibrationError("logits must be finite")
    else:
        raise CalibrationError(f"kind must be 'probabilities' or 'logits', not {kind!r}")
    if np.unique(y).size < 2:
        raise CalibrationError("fitting a temperature needs both classes (ALL and hem)")
    result = optimize.minimize_scalar(lambda s: _nll(z * np.exp(s), y),
                                      bounds=_LOG_INV_T_BOUNDS, method="bounded",
                                      options={"xatol": 1e-6})
    return float(np.exp(-result.x))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T) per probability (float64, same shape)."""
    t = float(temperature)
    if not t > 0 or not np.isfinite(t):
        raise CalibrationError(f"temperature must be a finite number > 0, got {temperature}")
    return _sigmoid(to_logits(probs) / t)


def brier_score(probs, labels) -> float:
    """Mean squared difference between the probability of ALL and the 0/1 label."""
    p, y = _labels_probs(probs, labels)
    return float(np.mean((p - y) ** 2))


def reliability_bins(probs, labels, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin summary of top-label confidence against accuracy (see the module doc).

    Returns:
      n_bins rows: low, high, count, confidence (mean max(p, 1-p)), accuracy (share of
      correct calls at 0.5), gap = accuracy - confidence (negative: over-confident).
      confidence/accuracy/gap are NaN for empty bins.
    """
    p, y = _labels_probs(probs, labels)
    if int(n_bins) < 1:
        raise CalibrationError(f"n_bins must be >= 1, got {n_bins}")
    n_bins = int(n_bins)
    confidence = np.maximum(p, 1.0 - p)
    correct = ((p >= 0.5) == (y == 1)).astype(np.float64)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")   # (low, high]
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, n_bins) / count
        accuracy = np.bincount(index, correct, n_bins) / count
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": count.astype(np.int64),
                         "confidence": mean_conf, "accuracy": accuracy,
                         "gap": accuracy - mean_conf})


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin share of images) x |accuracy - confidence|."""
    bins = reliability_bins(probs, labels, n_bins)
    used = bins[bins["count"] > 0]
    return float((used["count"] * used["gap"].abs()).sum() / used["count"].sum())


def calibration_summary(probs, labels, n_bins: int = 15) -> dict:
    """ece, brier and nll (mean log loss) of one set of probabilities, JSON-ready."""
    p, y = _labels_probs(probs, labels)
    return {"ece": expected_calibration_error(p, y, n_bins), "ece_bins": int(n_bins),
            "brier": brier_score(p, y), "nll": _nll(to_logits(p), y)}
