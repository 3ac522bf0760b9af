"""Cross-validation over the training folds, then all folds against the validation set.

For each model: train on the other folds and validate on fold k (for each k), then train
on all folds and validate on the labeled validation set. The two protocols are reported
apart (crossval_report): mean ± std over the held-out folds, the validation run as its own
row. Byte-identical images that sit on both sides of a split (94 groups in the real data)
are counted and warned about.

With cv="patients" the training folds are regrouped instead, so that no patient and no
duplicate crosses a split (leukemia_tf.data.grouping), and every held-out patient is reported
(per_patient.csv). With cv="pooled" the same grouping keeps its fold count even when a
class has fewer patients than folds, every fold chooses its epoch on a separate
`selection_split` of other patients (never on the held-out one), each fold is trained once
per seed, and the held-out predictions of all folds are pooled (crossval.pooled): the
study protocol for comparing recipes on new patients. `plan`/`patient_plan` (which runs)
are separate from `run` (train them) and from the report.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from leukemia_tf import config as config_lib
from leukemia_tf import io, training
from leukemia_tf.crossval import heldout, pooled_report
from leukemia_tf.crossval import report as crossval_report
from leukemia_tf.data import duplicates, grouping
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.metrics import split_roles

log = logging.getLogger(__name__)
PATIENT_FOLD = "patient-grouped cv fold"
POOLED_FOLD = "pooled patient-grouped fold"


def plan(folds: Sequence[int], include_validation: bool = True) -> List[Dict]:
    """The runs: train folds, the split that validates them, and the protocol."""
    runs = [{"train_folds": tuple(f for f in folds if f != k), "val_split": f"fold{k}",
             "name": f"fold{k}", "fold": int(k), "protocol": crossval_report.HELD_OUT_FOLD,
             "data": {}} for k in folds]
    if include_validation:
        runs.append({"train_folds": tuple(folds), "val_split": "validation",
                     "name": "validation", "fold": None, "data": {},
                     "protocol": crossval_report.ALL_FOLDS_VALIDATION})
    return runs


def patient_plan(records_dir: str, folds: Sequence[int], num_folds: int, out_dir: str,
                 seed: int = 0, seeds: Sequence[int] = (), selection_split: str = ""
                 ) -> Tuple[List[Dict], List[str]]:
    """Grouped runs: regroup the training folds `folds` by patient and duplicate.

    Writes out_dir/cv_assignment.csv (see leukemia_tf.data.grouping) and returns the runs
    plus the grouping's notes: without `selection_split` one run per CV fold (train on
    the other CV folds, validate on it); with it (pooled), one run per training seed of
    `seeds` and CV fold, validated on `selection_split`, its fold only held out.
    """
    io.makedirs(out_dir)
    path = io.join(out_dir, "cv_assignment.csv")
    pooled = bool(selection_split)
    assignment, notes = grouping.make_assignment(records_dir, folds, num_folds, path, seed,
                                                 pooled=pooled)
    for row in grouping.summarize(assignment).to_dict("records"):
        log.info("cv fold %s", row)
    ks = [int(k) for k in sorted(assignment["cv_fold"].unique())]
    if not pooled:
        return [{"train_folds": tuple(folds), "val_split": "cv", "name": f"cv{k}",
                 "fold": k, "protocol": PATIENT_FOLD,
                 "data": {"cv_assignment": path, "cv_fold": k}} for k in ks], notes
    return [{"train_folds": tuple(folds), "val_split": selection_split,
             "name": f"s{s}/cv{k}", "fold": k, "seed": int(s), "protocol": POOLED_FOLD,
             "data": {"cv_assignment": path, "cv_fold": k, "seed": int(s)}}
            for s in seeds for k in ks], notes


def _row(name: str, r: dict, summary: dict, leaks: int) -> dict:
    v = summary.get("validation", {})
    per_patient = summary.get("per_patient", [])
    # Training validates on its val_split (or held-out cv fold) and keeps the best epoch
    # there, so every row's split chose its epoch: `selection`.
    role = ("selection" if r["val_split"] == "cv" else
            split_roles.role(r["val_split"], r["train_folds"], r["val_split"]))
    return {"model": name, "protocol": r["protocol"], "eval_split": r["name"],
            "fold": r["fold"], "train_folds": ",".join(map(str, r["train_folds"])),
            "split_role": role,
            "weighted_f1": v.get("weighted_f1"), "roc_auc": v.get("roc_auc"),
            "accuracy": v.get("accuracy"), "images_per_sec": summary.get("train_images_per_sec"),
            "params": summary.get("params"), "best_epoch": summary.get("best_epoch"),
            "leaked_duplicate_groups": leaks,
            "worst_patient_accuracy": min((p["accuracy"] for p in per_patient), default=None),
            "held_out_patients": ",".join(str(p["patient_id"]) for p in per_patient),
            "minutes": round(summary.get("seconds", 0) / 60, 1)}


def _describe(name: str, r: dict) -> str:
    if r["protocol"] == POOLED_FOLD:
        return f"{name} seed {r['seed']} patient-grouped fold {r['fold']}"
    if r["protocol"] == PATIENT_FOLD:
        return f"{name} patient-grouped fold {r['fold']}"
    where = f"fold {r['fold']}" if r["fold"] is not None else "all folds -> validation"
    return f"{name} {where}"


def _runs(base: config_lib.Config, folds, include_validation, cv, num_folds, out_dir,
          seeds=(), selection_split=""):
    if cv == "patients":
        return patient_plan(base.data.records_dir, folds, num_folds, out_dir,
                            base.data.seed)
    if cv == "pooled":
        return patient_plan(base.data.records_dir, folds, num_folds, out_dir,
                            base.data.seed, seeds or (base.data.seed,), selection_split)
    if cv == "official":
        return plan(folds, include_validation), []
    raise ValueError(f"cv must be 'official', 'patients' or 'pooled', not {cv!r}")


def run(base: config_lib.Config, model_names: Sequence[str], out_dir: str,
        folds: Sequence[int] = (0, 1, 2), include_validation: bool = True,
        on_progress: Optional[Callable[[str], None]] = None, cv: str = "official",
        num_folds: int = 5, seeds: Sequence[int] = (), selection_split: str = "") -> dict:
    """Train every (model, run) pair under out_dir/<model>/<run>/ and compare.

    Args:
      on_progress: called with one line per run (`run 3/8: resnet_small fold 1`) and a
        result line after it; default: log.info (which also logs the summary line).
      cv: "official" rotates the official folds (they leak duplicates: warned);
        "patients" regroups the training folds `folds` into `num_folds` patient- and
        duplicate-disjoint folds (leukemia_tf.data.grouping) and validates on each;
        "pooled" regroups them the same way, trains each fold once per seed of `seeds`
        with the epoch chosen on `selection_split`, and pools the held-out predictions
        (pooled.csv/.md, oof.csv, per_patient.csv: crossval.pooled).

    Returns:
      The paths of the tables written, the rows, warnings and the one-line "summary".
    """
    if cv == "pooled" and not selection_split:
        raise ValueError("cv='pooled' needs a selection_split (a split of other patients "
                         "that chooses each fold's epoch)")
    say = on_progress or log.info
    manifest = manifest_lib.load(base.data.records_dir)
    plan_runs, warnings = _runs(base, folds, include_validation, cv, num_folds, out_dir,
                                seeds, selection_split)
    runs = [(name, r) for name in model_names for r in plan_runs]
    rows, patients, dirs = [], [], {}
    start = time.time()
    for i, (name, r) in enumerate(runs, 1):
        say(f"run {i}/{len(runs)}: {_describe(name, r)} (train folds "
            f"{','.join(map(str, r['train_folds']))})")
        cfg, leaks = _run_config(base, name, r, out_dir, manifest if cv == "official"
                                 else None, warnings)
        t0 = time.time()
        summary = _train_pooled(cfg) if cv == "pooled" else training.run(cfg)
        dirs.setdefault(name, {})[(r.get("seed"), r["fold"])] = cfg.train.model_dir
        rows.append(_row(name, r, summary, leaks))
        patients += [{"model": name, "fold": r["name"], **p}
                     for p in summary.get("per_patient", [])]
        f1 = rows[-1]["weighted_f1"]
        say(f"run {i}/{len(runs)} done in {time.time() - t0:.0f} s: weighted F1 "
            f"{'n/a' if f1 is None else f'{f1:.4f}'} on {r['val_split']}")
    warnings = sorted(set(warnings))
    if cv == "pooled":
        return _pooled_result(out_dir, dirs, warnings, len(runs), time.time() - start,
                              on_progress)
    paths = crossval_report.write_comparison(rows, out_dir, warnings)
    if patients:
        paths["per_patient"] = io.join(out_dir, "per_patient.csv")
        io.write_csv(paths["per_patient"], pd.DataFrame(patients))
    summary = summary_line(paths["stats"], len(runs), time.time() - start)
    if on_progress is None:
        log.info(summary)
    return {**paths, "rows": rows, "warnings": warnings, "summary": summary}


def _run_config(base: config_lib.Config, name: str, r: dict, out_dir: str,
                manifest: Optional[dict], warnings: list):
    """One run's config, and the duplicate groups its folds leak (counted, and warned
    into `warnings`, only when `manifest` is given: the official folds)."""
    cfg = config_lib.replace(
        base, data={"train_folds": r["train_folds"], "val_split": r["val_split"],
                    **r["data"]},
        model={"name": name}, train={"model_dir": io.join(out_dir, name, r["name"])})
    leaks = 0 if manifest is None else duplicates.leaked_groups(
        manifest, r["train_folds"], r["val_split"])
    for msg in duplicates.leak_warnings(leaks, r["train_folds"], r["val_split"]):
        log.warning(msg)
        warnings.append(msg)
    return cfg, leaks


STUDY_RUN = "study_run.json"


def _train_pooled(cfg: config_lib.Config) -> dict:
    """One pooled-study run: train with the held-out/selection scores of every epoch,
    then score the exported model's variants, then record minutes and load (once)."""
    summary = training.run(cfg, callbacks=[heldout.EpochScores(cfg)])
    md = cfg.train.model_dir
    if io.exists(io.join(md, STUDY_RUN)) and io.exists(io.join(md, heldout.VARIANTS)):
        return summary
    t0 = time.time()
    heldout.score_variants(cfg)
    seconds = float(summary.get("seconds") or 0.0) + time.time() - t0
    io.write_json(io.join(md, STUDY_RUN), {"seconds": round(seconds, 1),
                                           "load": [round(x, 2) for x in os.getloadavg()]})
    return summary


def _pooled_result(out_dir: str, dirs: dict, warnings: list, n_runs: int, seconds: float,
                   on_progress) -> dict:
    rows, frames = [], {}
    for name, run_dirs in dirs.items():
        got, by_variant = pooled_report.recipe_rows(name, pooled_report.runs_by_seed(run_dirs))
        rows += got
        frames.update({(name, v): f for v, f in by_variant.items()})
    paths = pooled_report.write(out_dir, rows, frames, warnings)
    parts = [f"{r['recipe']} {r['weighted_f1']:.4f}" for r in rows if r["variant"] == "plain"]
    summary = (f"crossval: {n_runs} runs in {seconds / 60:.1f} min; pooled out-of-fold "
               f"weighted F1 (mean over seeds): {', '.join(parts)}")
    if on_progress is None:
        log.info(summary)
    return {**paths, "rows": rows, "warnings": warnings, "summary": summary}


def summary_line(stats, n_runs: int, seconds: float) -> str:
    """`crossval: 8 runs in 3.2 min; weighted F1 over held-out folds: m1 0.85 ± 0.05 (3)`."""
    parts = []
    for _, s in stats.iterrows():
        if s["weighted_f1_n"] > 1:
            parts.append(f"{s['model']} {s['weighted_f1_mean']:.4f} ± "
                         f"{s['weighted_f1_std']:.4f} ({s['weighted_f1_n']} folds)")
        elif s["weighted_f1_n"] == 1:
            parts.append(f"{s['model']} {s['weighted_f1_mean']:.4f} (1 fold)")
    scores = "; weighted F1 over held-out folds: " + ", ".join(parts) if parts else ""
    return f"crossval: {n_runs} runs in {seconds / 60:.1f} min{scores}"
