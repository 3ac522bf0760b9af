"""The comparison a cross-validation writes: comparison.csv, comparison.md, comparison.png.

Two protocols never share a mean: the mean ± std is over the held-out folds only (rows
with a `fold`); the all-folds -> validation run (no `fold`) is a row of its own, labelled
as such. Kept apart from `crossval` (which plans and trains) so another plan (e.g.
patient-grouped folds) reuses the same statistics and tables.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.reports import charts as plots
from leukemia_tf.reports.report import fmt, markdown_table

HELD_OUT_FOLD = "cv fold"
ALL_FOLDS_VALIDATION = "all folds -> validation"
METRICS = ("weighted_f1", "roc_auc", "accuracy")
COLUMNS = ["model", "protocol", "eval_split", "fold", "train_folds", "split_role",
           "weighted_f1", "roc_auc", "accuracy", "images_per_sec", "params"]
_INTEGER = ("fold", "params", "leaked_duplicate_groups")


def comparison_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows -> a frame with COLUMNS first; folds, params and counts as integers.

    A row needs `model` and `eval_split` ("fold<k>" or "validation"); `fold` defaults to
    k for "fold<k>" and stays empty otherwise; `protocol` defaults from it.
    """
    if not rows:
        raise ValueError("no comparison rows")
    df = pd.DataFrame(list(rows))
    for key in ("model", "eval_split"):
        if key not in df.columns:
            raise ValueError(f"every comparison row needs '{key}'; columns: {list(df.columns)}")
    if "fold" not in df.columns:
        df["fold"] = [int(s[4:]) if str(s).startswith("fold") else None
                      for s in df["eval_split"]]
    if "protocol" not in df.columns:
        df["protocol"] = [HELD_OUT_FOLD if pd.notna(f) else ALL_FOLDS_VALIDATION
                          for f in df["fold"]]
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    for col in ("weighted_f1", "roc_auc", "accuracy", "images_per_sec"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in _INTEGER:
        if col in df.columns:   # nullable integers: written as 2, not 2.0, blank when absent
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def fold_statistics(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: the number of held-out folds and mean / sample std (ddof=1) of each
    metric over them. Rows without a fold (the validation run) are left out."""
    held = df[df["fold"].notna()]
    out = []
    for model, group in held.groupby("model", sort=False):
        row = {"model": model, "folds": int(len(group))}
        for col in METRICS:
            values = group[col].dropna().astype(float)
            row[f"{col}_n"] = int(len(values))
            row[f"{col}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        speed = group["images_per_sec"].dropna()
        row["images_per_sec"] = float(speed.mean()) if len(speed) else np.nan
        params = group["params"].dropna()
        row["params"] = int(params.iloc[0]) if len(params) else None
        out.append(row)
    return pd.DataFrame(out)


def _mean_std(stats: pd.Series, col: str) -> str:
    n = stats[f"{col}_n"]
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{stats[f'{col}_mean']:.4f} (1 fold, no std)"
    return f"{stats[f'{col}_mean']:.4f} ± {stats[f'{col}_std']:.4f}"


def _params(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{int(v):,}"


def comparison_markdown(df: pd.DataFrame, warnings: Sequence[str] = ()) -> str:
    """The Markdown of comparison.md (links relative to its folder)."""
    stats = fold_statistics(df)
    md = ["# Model comparison", "",
          "Each cross-validation run trains on the other folds and is measured on its "
          "held-out fold, which also chose that run's best epoch (split role: selection), "
          "so fold numbers are mildly optimistic. ROC AUC is the exact one (sklearn). "
          "Mean ± sample std (ddof=1) are over the held-out folds only.", ""]
    if not stats.empty:
        md += ["## Mean ± std over the held-out folds (cv folds)", "",
               markdown_table(["model", "held-out folds", "weighted F1", "ROC AUC", "accuracy",
                               "images/s", "params"],
                              [[s["model"], s["folds"], _mean_std(s, "weighted_f1"),
                                _mean_std(s, "roc_auc"), _mean_std(s, "accuracy"),
                                fmt(s["images_per_sec"], 1), _params(s["params"])]
                               for _, s in stats.iterrows()]), ""]
    val = df[df["fold"].isna()]
    if not val.empty:
        md += ["## All folds -> validation (separate protocol, not averaged)", "",
               markdown_table(["model", "evaluated split", "train folds", "role", "weighted F1",
                               "ROC AUC", "accuracy", "images/s", "params"],
                              [[r.model, r.eval_split, r.train_folds, r.split_role, r.weighted_f1,
                                r.roc_auc, r.accuracy, fmt(r.images_per_sec, 1), _params(r.params)]
                               for r in val.itertuples(index=False)]), ""]
    md += ["## Every run", "",
           markdown_table(["model", "protocol", "evaluated split", "train folds", "role",
                           "weighted F1", "ROC AUC", "accuracy", "images/s", "params"],
                          [[r.model, r.protocol, r.eval_split, r.train_folds, r.split_role,
                            r.weighted_f1, r.roc_auc, r.accuracy, fmt(r.images_per_sec, 1),
                            _params(r.params)] for r in df.itertuples(index=False)]), "",
           "![weighted F1 per model and split](comparison.png)", ""]
    if warnings:
        md += ["## Leakage warnings", "", *[f"- {w}" for w in warnings], ""]
    return "\n".join(md)


def write_comparison(rows: Sequence[dict], out_dir, warnings: Sequence[str] = ()) -> dict:
    """Writes comparison.csv, .md and .png into out_dir (any file system).

    Returns:
      {"csv": path, "md": path, "png": path, "stats": fold_statistics frame}.
    """
    df = comparison_frame(rows)
    out_dir = os.fspath(out_dir)
    paths = {k: io.join(out_dir, f"comparison.{k}") for k in ("csv", "md", "png")}
    io.write_csv(paths["csv"], df)
    io.write_text(paths["md"], comparison_markdown(df, warnings))
    plots.plot_comparison(df, paths["png"])
    return {**paths, "stats": fold_statistics(df)}
