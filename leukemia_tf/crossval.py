"""Cross-validation over the training folds, then all folds against the validation set.

For each model: train on the other folds and validate on fold k (for each k), then train
on all folds and validate on the labeled validation set. Byte-identical images that sit on
both sides of a split (94 groups in the real data) are counted and warned about.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence

from leukemia_tf import config as config_lib
from leukemia_tf import report
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


def run(base: config_lib.Config, model_names: Sequence[str], out_dir: str,
        folds: Sequence[int] = (0, 1, 2), include_validation: bool = True) -> dict:
    """Train every (model, run) pair under out_dir/<model>/<val_split>/ and compare.

    Returns the paths of comparison.csv/.md/.png and the rows.
    """
    from leukemia_tf import training
    manifest = pipeline.load(base.data.records_dir)
    rows, warnings = [], []
    for name in model_names:
        for r in plan(folds, include_validation):
            model_dir = os.path.join(out_dir, name, r["val_split"])
            cfg = config_lib.replace(
                base, data={"train_folds": r["train_folds"], "val_split": r["val_split"]},
                model={"name": name}, train={"model_dir": model_dir})
            leaks = leaked_groups(manifest, r["train_folds"], r["val_split"])
            if leaks:
                msg = (f"{leaks} groups of byte-identical images are both in training folds "
                       f"{list(r['train_folds'])} and in {r['val_split']}")
                log.warning(msg)
                warnings.append(msg)
            summary = training.run(cfg)
            v = summary.get("validation", {})
            rows.append({"model": name, "fold": r["val_split"],
                         "train_folds": ",".join(map(str, r["train_folds"])),
                         "weighted_f1": v.get("weighted_f1"), "roc_auc": v.get("roc_auc"),
                         "accuracy": v.get("accuracy"),
                         "images_per_sec": summary.get("train_images_per_sec"),
                         "params": summary.get("params"), "leaked_duplicate_groups": leaks})
    paths = report.write_comparison(rows, out_dir)
    if warnings:
        with open(paths["md"], "a") as f:
            f.write("\n## Leakage warnings\n\n" + "".join(f"- {w}\n" for w in sorted(set(warnings))))
    return {**paths, "rows": rows, "warnings": sorted(set(warnings))}
