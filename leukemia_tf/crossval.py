"""Cross-validation over the training folds, then all folds against the validation set.

For each model: train on the other folds and validate on fold k (for each k), then train
on all folds and validate on the labeled validation set. The two protocols are reported
apart (crossval_report): mean ± std over the held-out folds, the validation run as its own
row. Byte-identical images that sit on both sides of a split (94 groups in the real data)
are counted and warned about.

`plan` (which runs) is separate from `run` (train them) and from the report, so another
plan, such as patient-grouped folds, plugs in without touching the rest.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Sequence

from leukemia_tf import config as config_lib
from leukemia_tf import crossval_report, io, split_roles
from leukemia_tf.data import pipeline
from leukemia_tf.data.duplicates import leaked_groups  # noqa: F401  (one rule)

log = logging.getLogger(__name__)


def plan(folds: Sequence[int], include_validation: bool = True) -> List[Dict]:
    """The runs: train folds, the split that validates them, and the protocol."""
    runs = [{"train_folds": tuple(f for f in folds if f != k), "val_split": f"fold{k}",
             "fold": int(k), "protocol": crossval_report.HELD_OUT_FOLD} for k in folds]
    if include_validation:
        runs.append({"train_folds": tuple(folds), "val_split": "validation", "fold": None,
                     "protocol": crossval_report.ALL_FOLDS_VALIDATION})
    return runs


def _row(name: str, r: dict, summary: dict, leaks: int) -> dict:
    v = summary.get("validation", {})
    return {"model": name, "protocol": r["protocol"], "eval_split": r["val_split"],
            "fold": r["fold"], "train_folds": ",".join(map(str, r["train_folds"])),
            # Training validates on its val_split and keeps the best epoch there.
            "split_role": split_roles.role(r["val_split"], r["train_folds"], r["val_split"]),
            "weighted_f1": v.get("weighted_f1"), "roc_auc": v.get("roc_auc"),
            "accuracy": v.get("accuracy"), "images_per_sec": summary.get("train_images_per_sec"),
            "params": summary.get("params"), "best_epoch": summary.get("best_epoch"),
            "leaked_duplicate_groups": leaks}


def _describe(name: str, r: dict) -> str:
    where = f"fold {r['fold']}" if r["fold"] is not None else "all folds -> validation"
    return f"{name} {where}"


def run(base: config_lib.Config, model_names: Sequence[str], out_dir: str,
        folds: Sequence[int] = (0, 1, 2), include_validation: bool = True,
        on_progress: Optional[Callable[[str], None]] = None) -> dict:
    """Train every (model, run) pair under out_dir/<model>/<val_split>/ and compare.

    Args:
      on_progress: called with one line per run (`run 3/8: resnet_small fold 1`) and a
        result line after it; default: log.info (which also logs the summary line).

    Returns:
      The paths of comparison.csv/.md/.png, the rows, fold statistics ("stats"),
      warnings and the one-line "summary" for the end of the console output.
    """
    from leukemia_tf import training
    say = on_progress or log.info
    manifest = pipeline.load(base.data.records_dir)
    runs = [(name, r) for name in model_names for r in plan(folds, include_validation)]
    rows, warnings = [], []
    start = time.time()
    for i, (name, r) in enumerate(runs, 1):
        say(f"run {i}/{len(runs)}: {_describe(name, r)} (train folds "
            f"{','.join(map(str, r['train_folds']))})")
        cfg = config_lib.replace(
            base, data={"train_folds": r["train_folds"], "val_split": r["val_split"]},
            model={"name": name}, train={"model_dir": io.join(out_dir, name, r["val_split"])})
        leaks = leaked_groups(manifest, r["train_folds"], r["val_split"])
        if leaks:
            msg = (f"{leaks} groups of byte-identical images are both in training folds "
                   f"{list(r['train_folds'])} and in {r['val_split']}")
            log.warning(msg)
            warnings.append(msg)
        t0 = time.time()
        rows.append(_row(name, r, training.run(cfg), leaks))
        f1 = rows[-1]["weighted_f1"]
        say(f"run {i}/{len(runs)} done in {time.time() - t0:.0f} s: weighted F1 "
            f"{'n/a' if f1 is None else f'{f1:.4f}'} on {r['val_split']}")
    warnings = sorted(set(warnings))
    paths = crossval_report.write_comparison(rows, out_dir, warnings)
    summary = summary_line(paths["stats"], len(runs), time.time() - start)
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
