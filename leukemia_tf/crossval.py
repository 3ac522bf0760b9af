"""Cross-validation over the training folds, then all folds against the validation set.

For each model: train on the other folds and validate on fold k (for each k), then train
on all folds and validate on the labeled validation set. Byte-identical images that sit on
both sides of a split (94 groups in the real data) are counted and warned about.
With cv="patients" the training folds are regrouped instead so that no patient and no
duplicate crosses a split (leukemia_tf.grouping), and every held-out patient is reported.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence, Tuple

import pandas as pd

from leukemia_tf import config as config_lib
from leukemia_tf import io, report
from leukemia_tf.data import pipeline

log = logging.getLogger(__name__)


def leaked_groups(manifest: dict, train_folds: Sequence[int], held_out: str) -> int:
    """Duplicate groups with a copy in the training folds and one in the held-out set."""
    n = 0
    for g in manifest.get("duplicate_groups", []):
        in_train = "train" in g["splits"] and bool(set(train_folds) & set(g["folds"]))
        if held_out == "validation":
            in_eval = "validation" in g["splits"]
        else:
            in_eval = int(held_out[4:]) in g["folds"]
        n += in_train and in_eval
    return n


def plan(folds: Sequence[int], include_validation: bool = True) -> List[Dict]:
    """The runs: (train folds, held-out set) pairs."""
    runs = [{"train_folds": tuple(f for f in folds if f != k), "val_split": f"fold{k}"}
            for k in folds]
    if include_validation:
        runs.append({"train_folds": tuple(folds), "val_split": "validation"})
    return runs


def patient_plan(records_dir: str, folds: Sequence[int], num_folds: int, out_dir: str,
                 seed: int = 0) -> Tuple[List[Dict], List[str]]:
    """Grouped runs: regroup the training folds `folds` by patient and duplicate.

    Writes out_dir/cv_assignment.csv (see leukemia_tf.grouping) and returns one run per
    CV fold (train on the other CV folds, validate on it) plus the grouping's notes.
    """
    from leukemia_tf import grouping
    io.makedirs(out_dir)
    path = io.join(out_dir, "cv_assignment.csv")
    assignment, notes = grouping.make_assignment(records_dir, folds, num_folds, path, seed)
    for row in grouping.summarize(assignment).to_dict("records"):
        log.info("cv fold %s", row)
    runs = [{"train_folds": tuple(folds), "val_split": "cv", "name": f"cv{k}",
             "data": {"cv_assignment": path, "cv_fold": int(k)}}
            for k in sorted(assignment["cv_fold"].unique())]
    return runs, notes


def _patient_rows(model: str, fold: str, summary: dict) -> List[Dict]:
    return [{"model": model, "fold": fold, **p} for p in summary.get("per_patient", [])]


def run(base: config_lib.Config, model_names: Sequence[str], out_dir: str,
        folds: Sequence[int] = (0, 1, 2), include_validation: bool = True,
        cv: str = "official", num_folds: int = 5) -> dict:
    """Train every (model, run) pair under out_dir/<model>/<run>/ and compare.

    Args:
      cv: "official" rotates the official folds (they leak duplicates: warned);
        "patients" regroups the training folds `folds` into `num_folds` patient- and
        duplicate-disjoint folds (leukemia_tf.grouping) and validates on each.

    Returns the paths of comparison.csv/.md/.png, per_patient.csv, the rows and notes.
    """
    from leukemia_tf import training
    manifest = pipeline.load(base.data.records_dir)
    rows, warnings, patients = [], [], []
    if cv == "patients":
        runs, notes = patient_plan(base.data.records_dir, folds, num_folds, out_dir,
                                   base.train.seed)
        warnings += notes
    elif cv == "official":
        runs = [{**r, "name": r["val_split"], "data": {}}
                for r in plan(folds, include_validation)]
    else:
        raise ValueError(f"cv must be 'official' or 'patients', not {cv!r}")
    for name in model_names:
        for r in runs:
            model_dir = os.path.join(out_dir, name, r["name"])
            cfg = config_lib.replace(
                base, data={"train_folds": r["train_folds"], "val_split": r["val_split"],
                            **r["data"]},
                model={"name": name}, train={"model_dir": model_dir})
            leaks = 0 if cv == "patients" else \
                leaked_groups(manifest, r["train_folds"], r["val_split"])
            if leaks:
                msg = (f"{leaks} groups of byte-identical images are both in training folds "
                       f"{list(r['train_folds'])} and in {r['val_split']}")
                log.warning(msg)
                warnings.append(msg)
            summary = training.run(cfg)
            v = summary.get("validation", {})
            per_patient = summary.get("per_patient", [])
            patients += _patient_rows(name, r["name"], summary)
            rows.append({"model": name, "fold": r["name"],
                         "train_folds": ",".join(map(str, r["train_folds"])),
                         "weighted_f1": v.get("weighted_f1"), "roc_auc": v.get("roc_auc"),
                         "accuracy": v.get("accuracy"),
                         "images_per_sec": summary.get("train_images_per_sec"),
                         "params": summary.get("params"), "leaked_duplicate_groups": leaks,
                         "worst_patient_accuracy": min(
                             (p["accuracy"] for p in per_patient), default=None),
                         "held_out_patients": ",".join(str(p["patient_id"])
                                                       for p in per_patient),
                         "minutes": round(summary.get("seconds", 0) / 60, 1)})
    paths = report.write_comparison(rows, out_dir)
    if patients:
        paths["per_patient"] = io.join(out_dir, "per_patient.csv")
        io.write_csv(paths["per_patient"], pd.DataFrame(patients))
    if warnings:
        with open(paths["md"], "a") as f:
            f.write("\n## Leakage warnings\n\n" + "".join(f"- {w}\n" for w in sorted(set(warnings))))
    return {**paths, "rows": rows, "warnings": sorted(set(warnings))}
