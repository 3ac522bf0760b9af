"""Comparing pooled studies (no TensorFlow): each recipe's variants against one baseline,
paired by cell and seed, and ensembles of two recipes.

A study folder is what `leukemia-crossval --cv=pooled --out_dir=D` wrote: D/<model>/
s<seed>/cv<k>/ per seed and fold. Only finished runs count, and only seeds whose every
fold finished, so a study still running can be compared on the seeds it has. Two
recipes are compared on the seeds both have: the same cells, the same seeds, the
patients resampled jointly (`pooled.paired_difference`).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.crossval import pooled, pooled_report

VARIANTS = ("plain", "epoch:last", "epoch:val_auc", "epoch:val_loss", "epoch:val_weighted_f1",
            "dihedral8", "adapt_bn", "adapt_bn+dihedral8", "thr:prior", "thr:youden",
            "thr:platt")
_KEYS = ["source_path", "patient_id", "label"]


class Study:
    """The finished, complete seeds of one pooled study folder."""

    def __init__(self, folder: str, name: str = ""):
        self.folder = folder.rstrip("/")
        self.name = name or self.folder.split("/")[-1]
        assignment = io.join(self.folder, "cv_assignment.csv")
        if not io.exists(assignment):
            raise FileNotFoundError(f"{folder}: no cv_assignment.csv (not a pooled study "
                                    "folder written by leukemia-crossval --cv=pooled)")
        folds = set(io.read_csv(assignment)["cv_fold"].unique())
        found: Dict[int, Dict[int, str]] = {}
        for marker in io.glob(io.join(self.folder, "*", "s*", "cv*", "study_run.json")):
            run_dir = marker.rsplit("/", 1)[0]
            seed_part, fold_part = run_dir.split("/")[-2:]
            found.setdefault(int(seed_part[1:]), {})[int(fold_part[2:])] = run_dir
        self.by_seed = {s: [pooled.read_run(d) for _, d in sorted(runs.items())]
                        for s, runs in sorted(found.items()) if set(runs) == folds}

    def frames(self, seeds: Sequence[int], variants: Sequence[str]) -> Dict[str, pd.DataFrame]:
        """{variant: pooled frame over `seeds`} for the variants every run can give."""
        chosen = {s: self.by_seed[s] for s in seeds}
        runs = [r for rs in chosen.values() for r in rs]
        have = set(pooled.variant_names(runs)) | {"plain"}
        return {v: pooled.pooled(chosen, v) for v in variants if v in have}


def ensemble(frames: Sequence[pd.DataFrame], seeds: Sequence[int]) -> pd.DataFrame:
    """Mean probability of several recipes' pooled frames, per seed, cut at 0.5."""
    out = frames[0][_KEYS].copy()
    for s in seeds:
        probs = [f.set_index("source_path").loc[out["source_path"], f"p{s}"].to_numpy()
                 for f in frames]
        out[f"p{s}"] = np.mean(probs, axis=0)
        out[f"t{s}"] = 0.5
    return out


def _row(recipe: str, variant: str, frame: pd.DataFrame, base: pd.DataFrame,
         seeds: Sequence[int]) -> dict:
    s = pooled.summarize(frame, seeds)
    worst = min(s["per_patient"].items(), key=lambda kv: kv[1])
    row = {"recipe": recipe, "variant": variant,
           **{k: v for k, v in s.items() if k != "per_patient"},
           "worst_patient": f"{worst[0]}: {worst[1]:.2f}"}
    for measure in ("weighted_f1", "roc_auc"):
        d, lo, hi = pooled.paired_difference(frame, base, seeds, measure)
        row.update({f"d_{measure}": d, f"d_{measure}_low": lo, f"d_{measure}_high": hi})
    return row


def compare(studies: Sequence[Study], variants: Sequence[str] = VARIANTS,
            pairs: Sequence[Tuple[str, str]] = ()) -> Tuple[List[dict], List[int]]:
    """Rows: every study x variant, and every ensemble pair (plain + plain), each with
    its difference to the first study's plain variant. Returns (rows, seeds used)."""
    seeds = sorted(set.intersection(*(set(s.by_seed) for s in studies)))
    if not seeds:
        raise ValueError("the studies have no finished seed in common: " + ", ".join(
            f"{s.name} {sorted(s.by_seed) or 'none'}" for s in studies))
    frames = {s.name: s.frames(seeds, variants) for s in studies}
    base = frames[studies[0].name]["plain"]
    rows = [_row(name, v, f, base, seeds) for name, fs in frames.items()
            for v, f in fs.items()]
    for a, b in pairs:
        both = ensemble([frames[a]["plain"], frames[b]["plain"]], seeds)
        rows.append(_row(f"{a} + {b}", "ensemble (mean)", both, base, seeds))
    return rows, seeds


_SHOWN = ["recipe", "variant", "weighted_f1", "d_weighted_f1", "roc_auc", "d_roc_auc",
          "ece", "patients_right", "worst_patient"]


def _fmt(row: dict, key: str) -> str:
    v = row.get(key)
    if isinstance(v, str) or v is None:
        return "n/a" if v is None else v
    if key in ("weighted_f1", "roc_auc", "ece", "patients_right"):
        sd = row.get(f"{key}_sd")
        text = f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
        low = row.get(f"{key}_low")
        return text + (f" [{low:.3f}, {row[f'{key}_high']:.3f}]" if low is not None else "")
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    return f"{v:+.3f}" + (f" [{low:+.3f}, {high:+.3f}]" if low is not None else "")


def write(out_dir: str, rows: List[dict], seeds: Sequence[int]) -> dict:
    """compare.csv and compare.md in out_dir."""
    paths = {"csv": io.join(out_dir, "compare.csv"), "md": io.join(out_dir, "compare.md")}
    io.makedirs(out_dir)
    io.write_csv(paths["csv"], pd.DataFrame(rows))
    first = rows[0]
    lines = ["# Pooled studies compared", "",
             f"{first['cells']} held-out cells of {first['patients']} patients, seeds "
             f"{', '.join(map(str, seeds))} (the seeds every study finished). Measures: "
             "mean ± sd over seeds [95% interval, resampling patients]. d_: the "
             f"difference to {first['recipe']} (plain), paired by cell and seed, with its "
             "95% interval resampling patients jointly: an interval that holds 0 is no "
             f"evidence of a difference. CPU: {pooled_report.cpu_name()}.", "",
             "| " + " | ".join(_SHOWN) + " |", "|" + "---|" * len(_SHOWN)]
    lines += ["| " + " | ".join(_fmt(r, k) for k in _SHOWN) + " |" for r in rows]
    io.write_text(paths["md"], "\n".join(lines) + "\n")
    return paths
