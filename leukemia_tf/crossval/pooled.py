"""Pooled out-of-fold results of a patient-grouped study (no TensorFlow).

Each CV fold's model scores only the patients held out of its training; put together,
the folds score every patient exactly once. The measures here are computed on that
pooled set, per training seed, so the shift *between* patients (the error that matters
on new patients) is inside every number, rather than averaged away fold by fold. Over
seeds: the mean, the spread, and a 95% interval from resampling whole patients (the
same draw for every seed, so it is the interval of the seed mean).

Variants of one recipe, all from files the runs wrote (crossval.heldout):
- `epoch:<rule>` - the epoch chosen after the fact by `last` (a fixed schedule) or by
  the selection split's exact ROC AUC, log loss or weighted F1 (`SELECTION_RULES`);
- the exported model (the trainer's own --monitor) scored `plain`, with `dihedral8`
  TTA, with BN statistics re-estimated on the held-out cells (`adapt_bn`, transductive)
  and both;
- thresholds on the plain scores: `thr:prior` (1 - the training share of ALL: the
  model was trained class-balanced, so this restores the training prior), `thr:youden`
  (chosen on the selection cells) and `thr:platt` (a logistic recalibration fitted on
  the selection cells, cut at 0.5).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.metrics import calibration, classification as metrics, patients

SELECTION_RULES = ("last", "val_auc", "val_loss", "val_weighted_f1")
MODEL_VARIANTS = ("plain", "dihedral8", "adapt_bn", "adapt_bn+dihedral8")
THRESHOLDS = ("prior", "youden", "platt")
RESAMPLES = 1000


# ---------------------------------------------------------------- choosing an epoch
def log_loss(labels, probs) -> float:
    """Mean binary cross-entropy (probabilities clipped to [1e-7, 1 - 1e-7])."""
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels) == 1
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def choose_epoch(selection: pd.DataFrame, rule: str) -> int:
    """The epoch `rule` picks from per-epoch selection scores (epoch, label,
    probability): the last one, or the first best by AUC, loss or weighted F1 (as a
    checkpoint that keeps the first best would)."""
    epochs = sorted(selection["epoch"].unique())
    if rule == "last":
        return int(epochs[-1])
    values = []
    for e in epochs:
        part = selection[selection["epoch"] == e]
        y, p = part["label"].to_numpy(), part["probability"].to_numpy()
        if rule == "val_auc":
            value = patients.roc_auc(y, p)
            values.append(-np.inf if value is None else value)
        elif rule == "val_loss":
            values.append(-log_loss(y, p))
        elif rule == "val_weighted_f1":
            values.append(metrics.weighted_f1_fast(y, p))
        else:
            raise ValueError(f"rule must be one of {SELECTION_RULES}, not {rule!r}")
    return int(epochs[int(np.argmax(values))])


# ---------------------------------------------------------------- thresholds
def platt_threshold(labels, probs) -> float:
    """The probability where a logistic recalibration a*logit + b fitted on (labels,
    probs) crosses 0.5: -b/a mapped back. 0.5 when it cannot be fitted."""
    from sklearn.linear_model import LogisticRegression
    y = np.asarray(labels)
    if np.unique(y).size < 2:
        return 0.5
    z = calibration.to_logits(probs).reshape(-1, 1)
    fit = LogisticRegression(C=1e4).fit(z, y)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if a <= 0:
        return 0.5
    return float(1 / (1 + math.exp(b / a)))


def threshold(kind: str, run: dict) -> float:
    """One run's threshold of `kind` (THRESHOLDS), from its training prior or its
    selection cells at the exported epoch."""
    if kind == "prior":
        return 1.0 - run["prior"]
    sel = run["selection_at_best"]
    y, p = sel["label"].to_numpy(), sel["probability"].to_numpy()
    if kind == "youden":
        return metrics.choose_threshold(y, p, "youden") if np.unique(y).size == 2 else 0.5
    if kind == "platt":
        return platt_threshold(y, p)
    raise ValueError(f"threshold must be one of {THRESHOLDS}, not {kind!r}")


# ---------------------------------------------------------------- reading the runs
def read_run(run_dir: str) -> dict:
    """What a finished study run wrote: its per-epoch scores, exported-model variants,
    summary facts (best epoch, prior, minutes, load)."""
    from leukemia_tf.crossval import heldout  # lazy: loads TensorFlow; studies are read without it
    summary = io.read_json(io.join(run_dir, "summary.json"))
    scores = io.read_csv(io.join(run_dir, heldout.EPOCH_SCORES), dtype={"patient_id": str})
    variants = io.read_csv(io.join(run_dir, heldout.VARIANTS), dtype={"patient_id": str})
    weight_all = float(summary["class_weights"].get("1", summary["class_weights"].get(1)))
    best = int(summary["best_epoch"])
    sel = scores[scores["set"] == "selection"]
    study = io.read_json(io.join(run_dir, "study_run.json"))
    return {"dir": run_dir, "scores": scores, "variants": variants, "best_epoch": best,
            "prior": 1.0 / (2.0 * weight_all), "selection_at_best": sel[sel["epoch"] == best],
            "minutes": study["seconds"] / 60.0, "load": study["load"]}


def _heldout_at(run: dict, epoch: int) -> pd.DataFrame:
    s = run["scores"]
    return s[(s["set"] == "heldout") & (s["epoch"] == epoch)]


def variant_scores(run: dict, variant: str) -> pd.DataFrame:
    """(source_path, patient_id, label, probability, threshold) of one run's held-out
    cells under `variant` (module docstring)."""
    if variant.startswith("epoch:"):
        rule = variant.split(":", 1)[1]
        sel = run["scores"][run["scores"]["set"] == "selection"]
        frame = _heldout_at(run, choose_epoch(sel, rule))[
            ["source_path", "patient_id", "label", "probability"]]
        return frame.assign(threshold=0.5)
    v = run["variants"]
    if variant.startswith("thr:"):
        cut = threshold(variant.split(":", 1)[1], run)
        return v.assign(probability=v["plain"], threshold=cut)[
            ["source_path", "patient_id", "label", "probability", "threshold"]]
    if variant not in v.columns:
        raise KeyError(variant)
    return v.assign(probability=v[variant], threshold=0.5)[
        ["source_path", "patient_id", "label", "probability", "threshold"]]


def variant_names(runs: Sequence[dict]) -> List[str]:
    """Every variant the runs can give (BN variants only for models with batch norm)."""
    present = set.intersection(*(set(r["variants"].columns) for r in runs))
    return ([f"epoch:{r}" for r in SELECTION_RULES] +
            [v for v in MODEL_VARIANTS if v in present] + [f"thr:{t}" for t in THRESHOLDS])


# ---------------------------------------------------------------- pooled measures
def pooled(runs_by_seed: Dict[int, List[dict]], variant: str) -> pd.DataFrame:
    """One row per held-out cell, columns p<seed> and t<seed> (probability, threshold),
    pooled over each seed's folds. Every seed must score the same cells once."""
    frame = None
    for seed, runs in sorted(runs_by_seed.items()):
        part = pd.concat([variant_scores(r, variant) for r in runs], ignore_index=True)
        if part["source_path"].duplicated().any():
            raise ValueError(f"seed {seed}: a cell is held out by two folds")
        part = part.rename(columns={"probability": f"p{seed}", "threshold": f"t{seed}"})
        if frame is None:
            frame = part
            continue
        merged = frame.merge(part[["source_path", f"p{seed}", f"t{seed}"]],
                             on="source_path", how="outer", indicator=True)
        if (merged["_merge"] != "both").any():
            raise ValueError(f"seed {seed} held out other cells than seed "
                             f"{min(runs_by_seed)}")
        frame = merged.drop(columns="_merge")
    return frame.sort_values("source_path").reset_index(drop=True)


def _wf1(y: np.ndarray, called: np.ndarray) -> float:
    return metrics.weighted_f1_fast(y, called.astype(float), 0.5)


def seed_measures(frame: pd.DataFrame, seed: int) -> dict:
    """Weighted F1, ROC AUC, ECE, per-patient accuracy and patient calls of one seed."""
    y = frame["label"].to_numpy()
    p, t = frame[f"p{seed}"].to_numpy(), frame[f"t{seed}"].to_numpy()
    called = p >= t
    cells = pd.DataFrame({"patient": frame["patient_id"], "y": y, "ok": called == (y == 1),
                          "called": called})
    per = cells.groupby("patient").agg(label=("y", "first"), accuracy=("ok", "mean"),
                                       share_all=("called", "mean"))
    right = ((per["share_all"] > 0.5) == (per["label"] == 1)).sum()
    return {"weighted_f1": _wf1(y, called), "roc_auc": patients.roc_auc(y, p),
            "ece": calibration.expected_calibration_error(p, y),
            "patients_right": int(right), "patients": len(per),
            "per_patient": per["accuracy"].to_dict()}


def _draws(frame: pd.DataFrame, n: int, seed: int = 0):
    """`n` resamples of whole patients (row indices), as many patients as there are."""
    ids = frame["patient_id"].to_numpy()
    members = [np.flatnonzero(ids == p) for p in sorted(set(ids))]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        drawn = rng.integers(len(members), size=len(members))
        yield np.concatenate([members[i] for i in drawn])


def _arrays(frame: pd.DataFrame, seeds: Sequence[int]) -> tuple:
    """(labels [N], probabilities [N, seeds], thresholds [N, seeds]) of a pooled frame."""
    return (frame["label"].to_numpy(), frame[[f"p{s}" for s in seeds]].to_numpy(float),
            frame[[f"t{s}" for s in seeds]].to_numpy(float))


def _mean(arrays: tuple, measure: str, idx: Optional[np.ndarray] = None) -> Optional[float]:
    """The seed mean of weighted_f1 or roc_auc on the rows `idx` (default: all)."""
    y, p, t = arrays
    if idx is not None:
        y, p, t = y[idx], p[idx], t[idx]
    values = [_wf1(y, p[:, k] >= t[:, k]) if measure == "weighted_f1"
              else patients.roc_auc(y, p[:, k]) for k in range(p.shape[1])]
    return None if any(v is None for v in values) else float(np.mean(values))


def _percentiles(values: list) -> tuple:
    if not values:
        return (None, None)
    return tuple(float(v) for v in np.quantile(values, [0.025, 0.975]))


def interval(frame: pd.DataFrame, seeds: Sequence[int], measure: str,
             n: int = RESAMPLES) -> tuple:
    """95% percentile interval of the seed mean of `measure` (weighted_f1 | roc_auc),
    resampling whole patients (one draw used for every seed)."""
    arrays = _arrays(frame, seeds)
    values = [_mean(arrays, measure, idx) for idx in _draws(frame, n)]
    return _percentiles([v for v in values if v is not None])


def summarize(frame: pd.DataFrame, seeds: Sequence[int]) -> dict:
    """Mean, spread (sd, min, max) over seeds and the patient-bootstrap interval."""
    per_seed = [seed_measures(frame, s) for s in seeds]
    out = {"seeds": len(seeds), "cells": len(frame), "patients": per_seed[0]["patients"]}
    for key in ("weighted_f1", "roc_auc", "ece", "patients_right"):
        values = np.array([m[key] for m in per_seed if m[key] is not None], float)
        out[key] = float(values.mean()) if values.size else None
        out[f"{key}_sd"] = float(values.std(ddof=1)) if values.size > 1 else None
        out[f"{key}_min"] = float(values.min()) if values.size else None
        out[f"{key}_max"] = float(values.max()) if values.size else None
    for key in ("weighted_f1", "roc_auc"):
        out[f"{key}_low"], out[f"{key}_high"] = interval(frame, seeds, key)
    accuracy = pd.DataFrame([m["per_patient"] for m in per_seed]).mean()
    out["per_patient"] = {str(k): float(v) for k, v in accuracy.items()}
    return out


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, seeds: Sequence[int],
                      measure: str = "weighted_f1", n: int = RESAMPLES) -> tuple:
    """(seed-mean `measure` of a minus b, 95% low, high), resampling patients jointly
    for both (same cells, same seeds): is a better than b beyond the noise of which
    patients were drawn?"""
    keys = ["source_path", "patient_id", "label"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    if not len(both) == len(a) == len(b):
        raise ValueError("the two recipes held out different cells")
    sides = [_arrays(both[keys].assign(**{f"{c}{s}": both[f"{c}{s}_{tag}"]
                                          for c in "pt" for s in seeds}), seeds)
             for tag in "ab"]

    def diff(idx=None):
        va, vb = (_mean(side, measure, idx) for side in sides)
        return None if va is None or vb is None else va - vb
    values = [diff(idx) for idx in _draws(both, n)]
    return (diff(), *_percentiles([v for v in values if v is not None]))
