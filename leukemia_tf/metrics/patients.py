"""Patient-level views of cell predictions: one call per patient, disagreement, and
confidence intervals that resample patients rather than cells.

Every C-NMC patient is a single class (all cells ALL, or all hem), and cells of one patient
share stain, exposure and acquisition day, so they are not independent samples: a cell-level
bootstrap would give intervals that are far too narrow. `bootstrap_ci` therefore resamples
whole patients.

A cell is called ALL when `probability >= threshold`, the rule used everywhere in
leukemia_tf. Nothing here needs TensorFlow.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from leukemia_tf import io
from leukemia_tf.data import cnmc
from leukemia_tf.errors import UserError


class PatientError(ValueError, UserError):
    """Bad input to a patient-level summary; the message says which argument."""


def patient_id_from_name(name: str) -> str:
    """`.../UID_H6_11_1_hem.bmp` -> "H6", by the C-NMC parser (healthy ids upper-cased).

    Raises:
      CnmcError: the file name does not follow the C-NMC training-name pattern.
    """
    return str(cnmc.parse_training_name(io.basename(str(name)))["patient_id"])


def name_patient_ids(names) -> list:
    """The patient of each file name (`UID_<patient>_...`), or None when any name does
    not follow the C-NMC training-name pattern (e.g. the final test's 1.bmp)."""
    try:
        return [patient_id_from_name(n) for n in names]
    except cnmc.CnmcError:
        return None


# How a cell without a patient shows: empty in the records (the final-test split), NaN
# once pandas has read that empty field, and the placeholders other tables use.
UNKNOWN_IDS = ("", "nan", "none", "unknown", "-1")


def patient_ids_known(patient_ids) -> bool:
    """Every cell has a patient id: `patient_ids` is a sequence of ids, or a frame with a
    `patient_id` column. False for none, no cells, or any id in UNKNOWN_IDS."""
    if patient_ids is None:
        return False
    if isinstance(patient_ids, pd.DataFrame):
        patient_ids = patient_ids["patient_id"]
    ids = pd.Series(np.asarray(patient_ids, dtype=object).ravel())
    if ids.empty or ids.isna().any():
        return False
    return not ids.astype(str).str.strip().str.lower().isin(UNKNOWN_IDS).any()


def _cells(patient_ids, probs, labels=None):
    """Validated 1-D arrays (patients as str, probabilities float64, labels int64 or None)."""
    pid = np.asarray(patient_ids).astype(str)
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise PatientError("probabilities must be numbers in [0, 1]") from None
    if pid.ndim != 1 or p.ndim != 1 or pid.shape != p.shape:
        raise PatientError(f"patient_ids and probabilities must be 1-D of one length, got "
                           f"shapes {pid.shape} and {p.shape}")
    if p.size == 0:
        raise PatientError("no cells: patient_ids and probabilities are empty")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise PatientError("probabilities must lie in [0, 1] without NaN (were logits passed?)")
    if labels is None:
        return pid, p, None
    y = np.asarray(labels)
    if y.shape != p.shape or not np.isin(y, (0, 1)).all():
        raise PatientError(f"labels must be 0 (hem) / 1 (ALL), one per cell; got shape "
                           f"{y.shape} with values {np.unique(y)[:5]}")
    return pid, p, y.astype(np.int64)


def patient_table(patient_ids, probs, labels=None, threshold: float = 0.5) -> pd.DataFrame:
    """One row per patient, sorted by patient id.

    Args:
      patient_ids: the patient of each cell (e.g. `patient_id_from_name` of its file).
      probs: probability of ALL per cell.
      labels: optional 0 (hem) / 1 (ALL) per cell.
      threshold: a cell is called ALL when its probability >= threshold.

    Returns:
      Columns patient, cells, fraction_called_all, mean_probability, call; with labels
      also truth, mixed_labels, correct.

      call is the majority of the cell calls (1 = ALL). A tie (exactly half the cells
      called ALL) is broken by the mean probability under the same rule,
      mean_probability >= threshold, so the patient-level rule agrees with the cell rule.
      truth is the patient's label. C-NMC patients are single-class, so mixed_labels
      (a patient with cells of both labels) means labels were joined wrongly; such a
      patient gets the majority label as truth (ties: ALL) rather than an error, so the
      flag can be reported next to everything else.
    """
    pid, p, y = _cells(patient_ids, probs, labels)
    if not 0.0 <= float(threshold) <= 1.0:
        raise PatientError(f"threshold must be in [0, 1], got {threshold}")
    frame = pd.DataFrame({"patient": pid, "p": p, "called": (p >= threshold).astype(float)})
    if y is not None:
        frame["y"] = y
    groups = frame.groupby("patient", sort=True)
    out = pd.DataFrame({"cells": groups.size().astype(np.int64),
                        "fraction_called_all": groups["called"].mean(),
                        "mean_probability": groups["p"].mean()})
    frac = out["fraction_called_all"]
    tie_call = out["mean_probability"] >= threshold
    out["call"] = np.where(frac == 0.5, tie_call, frac > 0.5).astype(np.int64)
    if y is not None:
        share = groups["y"].mean()
        out["truth"] = (share >= 0.5).astype(np.int64)
        out["mixed_labels"] = (share > 0) & (share < 1)
        out["correct"] = out["call"] == out["truth"]
    return out.reset_index()


def patient_accuracy(table: pd.DataFrame) -> float:
    """Share of patients whose call equals their truth (each patient counts once).

    Raises:
      PatientError: the table was built without labels.
    """
    if "correct" not in table.columns:
        raise PatientError("patient accuracy needs labels: build patient_table with labels=")
    return float(table["correct"].mean())


def disagreement(table: pd.DataFrame) -> pd.DataFrame:
    """Patients ranked by how much their cells disagree, most first, for flagging.

    Adds `disagreement`: the binary entropy (bits) of fraction_called_all, 0 when every
    cell gets the same call and 1 when exactly half are called ALL. Entropy ranks like
    closeness of the fraction to 0.5; it is used because it reads as a 0..1 score. Ties
    rank patients with more cells first (their split is less likely to be chance).
    """
    f = table["fraction_called_all"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(f * np.log2(f) + (1 - f) * np.log2(1 - f))
    out = table.assign(disagreement=np.nan_to_num(h, nan=0.0))
    out = out.sort_values(["disagreement", "cells", "patient"], ascending=[False, False, True],
                          kind="mergesort")
    return out.reset_index(drop=True)


def weighted_f1(labels, probs, threshold: float = 0.5) -> float:
    """The challenge metric (sklearn weighted F1, zero_division=0) at `threshold`."""
    pred = (np.asarray(probs) >= threshold).astype(np.int64)
    return float(skm.f1_score(labels, pred, average="weighted", zero_division=0))


def roc_auc(labels, probs) -> Optional[float]:
    """Exact ROC AUC, or None when only one class is present (undefined).

    sklearn's roc_auc_score (ties count one half) as the Mann-Whitney U statistic from
    mid-ranks: the same value (tests compare), ~25x faster on small sets, so a thousand
    bootstrap resamples cost milliseconds instead of seconds.
    """
    y = np.asarray(labels) == 1
    positives = int(y.sum())
    negatives = y.size - positives
    if not positives or not negatives:
        return None
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    # Mid-rank of each run of equal scores: (first + last) / 2, 1-based.
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], p.size]
    ranks = np.empty(p.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[y].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


@dataclasses.dataclass(frozen=True)
class BootstrapCI:
    """A percentile interval from resampling patients with replacement.

    `low`/`high` are None when the metric was undefined in every resample; `undefined`
    counts the resamples that were left out of the percentiles (e.g. AUC when all drawn
    patients had one class).
    """
    estimate: Optional[float]   # the metric on the data as given
    low: Optional[float]
    high: Optional[float]
    undefined: int
    resamples: int
    alpha: float
    patients: int

    def as_dict(self) -> dict:
        """JSON-ready (plain floats and ints)."""
        return dataclasses.asdict(self)


def _metric_value(metric_fn: Callable, y, p) -> Optional[float]:
    """metric_fn's value, or None when it is undefined (None, NaN, or sklearn's ValueError
    for a set with one class)."""
    try:
        value = metric_fn(y, p)
    except ValueError:
        return None
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def bootstrap_ci(patient_ids, labels, probs, metric_fn: Callable, n: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> BootstrapCI:
    """Confidence interval of a cell-level metric, resampling patients.

    Each resample draws as many patients as there are, with replacement, and takes all
    cells of every drawn patient (a patient drawn twice contributes its cells twice).

    Args:
      patient_ids, labels, probs: one entry per cell.
      metric_fn: (labels, probs) -> float; None, NaN or ValueError mean undefined, e.g.
        `roc_auc`, `weighted_f1` or `lambda y, p: weighted_f1(y, p, threshold)`.
      n: number of resamples.
      seed: numpy Generator seed; the same seed gives the same interval.
      alpha: the interval covers 1 - alpha (percentiles alpha/2 and 1 - alpha/2).

    Returns:
      A BootstrapCI.
    """
    pid, p, y = _cells(patient_ids, probs, labels)
    if y is None:
        raise PatientError("bootstrap_ci needs labels")
    if int(n) < 1 or not 0.0 < float(alpha) < 1.0:
        raise PatientError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    _, codes = np.unique(pid, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    members: Sequence[np.ndarray] = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(n)):
        drawn = rng.integers(len(members), size=len(members))
        idx = np.concatenate([members[i] for i in drawn])
        value = _metric_value(metric_fn, y[idx], p[idx])
        if value is not None:
            values.append(value)
    low = high = None
    if values:
        low, high = (float(v) for v in np.quantile(values, [alpha / 2, 1 - alpha / 2]))
    return BootstrapCI(estimate=_metric_value(metric_fn, y, p), low=low, high=high,
                       undefined=int(n) - len(values), resamples=int(n), alpha=float(alpha),
                       patients=len(members))
