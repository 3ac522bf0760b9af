"""Figures and Markdown reports of an evaluation or a cross-validation, without TensorFlow.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot: this works headless, leaves the process-wide backend alone and keeps no global
figure state between calls.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm

from leukemia_tf.metrics import validate_scores

LOW_PATIENT_ACCURACY = 0.5   # patients below this accuracy are flagged in the report
CLASS_LABELS = {0: "hem", 1: "ALL"}
# (panel title, train column candidates, whether higher is better); the validation column
# is "val_" + the train column Keras logged.
_CURVES = (
    ("loss", ("loss",), False),
    ("accuracy", ("accuracy", "binary_accuracy", "acc"), True),
    ("weighted F1", ("weighted_f1",), True),
)
COMPARISON_COLUMNS = ["model", "fold", "weighted_f1", "roc_auc", "images_per_sec", "params"]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png) -> str:
    out_png = os.fspath(out_png)
    parent = os.path.dirname(out_png)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_png, format="png")
    return out_png


def plot_training_curves(history_csv_path, out_png) -> str:
    """Plots train and validation loss / accuracy / weighted F1 per epoch.

    Args:
      history_csv_path: a Keras CSVLogger file (columns such as epoch, loss, accuracy,
        weighted_f1 and their val_ counterparts). Each curve is drawn when its train or
        val column exists; `epoch` (0-based in Keras) is shown 1-based.
      out_png: where to write the figure.

    Returns:
      out_png as a string.

    Raises:
      ValueError: the file has none of the known curves.
    """
    history = pd.read_csv(history_csv_path).reset_index(drop=True)
    if "epoch" in history.columns:
        epochs = history["epoch"].to_numpy() + 1
    else:
        epochs = np.arange(1, len(history) + 1)
    panels = []
    for title, candidates, higher_better in _CURVES:
        train = next((c for c in candidates if c in history.columns), None)
        val = next((f"val_{c}" for c in candidates if f"val_{c}" in history.columns), None)
        if train or val:
            panels.append((title, train, val, higher_better))
    if not panels:
        raise ValueError(f"{history_csv_path}: no loss/accuracy/weighted_f1 columns in "
                         f"{list(history.columns)}")
    fig = _figure(5.0 * len(panels), 4.0)
    for i, (title, train, val, higher_better) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if train:
            ax.plot(epochs, history[train], marker=".", label="train")
        if val:
            values = history[val]
            ax.plot(epochs, values, marker=".", label="validation")
            if values.notna().any():
                best = values.idxmax() if higher_better else values.idxmin()
                ax.plot(epochs[best], values[best], "k*", markersize=10,
                        label=f"best val {values[best]:.4f} (epoch {epochs[best]})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_confusion_matrix(cm, out_png) -> str:
    """Draws the 2x2 confusion matrix [[tn, fp], [fn, tp]] with counts and row percentages.

    Returns:
      out_png as a string.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (2, 2):
        raise ValueError(f"expected a 2x2 confusion matrix, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = _figure(4.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    names = [f"{CLASS_LABELS[k]} ({k})" for k in (0, 1)]
    ax.set_xticks([0, 1], labels=names)
    ax.set_yticks([0, 1], labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for r in range(2):
        for c in range(2):
            ax.text(c, r, f"{cm[r, c]}\n({share[r, c]:.1%})", ha="center", va="center",
                    color="white" if share[r, c] > 0.5 else "black")
    ax.set_title("confusion matrix")
    return _save(fig, out_png)


def plot_roc_pr(labels, probabilities, out_png) -> str:
    """Draws the ROC curve and the precision-recall curve (ALL positive) side by side.

    The legend gives ROC AUC and average precision. On a single-class set both curves are
    undefined; the panels then say so instead of failing.

    Returns:
      out_png as a string.
    """
    y, p = validate_scores(labels, probabilities)
    fig = _figure(10.0, 4.5)
    roc_ax = fig.add_subplot(1, 2, 1)
    pr_ax = fig.add_subplot(1, 2, 2)
    if np.unique(y).size == 2:
        fpr, tpr, _ = skm.roc_curve(y, p)
        roc_ax.plot(fpr, tpr, label=f"ROC AUC = {skm.roc_auc_score(y, p):.4f}")
        precision, recall, _ = skm.precision_recall_curve(y, p)
        pr_ax.step(recall, precision, where="post",
                   label=f"AP (PR AUC) = {skm.average_precision_score(y, p):.4f}")
        pr_ax.axhline(y.mean(), color="grey", linestyle=":", label=f"ALL share {y.mean():.3f}")
    else:
        for ax in (roc_ax, pr_ax):
            ax.text(0.5, 0.5, f"undefined: only class {CLASS_LABELS[int(y[0])]} present",
                    ha="center", va="center", transform=ax.transAxes)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    roc_ax.set(xlabel="false positive rate (1 - specificity)",
               ylabel="true positive rate (sensitivity)", title="ROC", xlim=(0, 1),
               ylim=(0, 1.02))
    pr_ax.set(xlabel="recall (ALL)", ylabel="precision (ALL)", title="precision-recall",
              xlim=(0, 1), ylim=(0, 1.02))
    for ax, where in ((roc_ax, "lower right"), (pr_ax, "lower left")):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc=where, fontsize=8)
    return _save(fig, out_png)


def _fmt(value, digits: int = 4) -> str:
    """Numbers for a Markdown table: floats to `digits` places, None/NaN as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _patient_section(per_patient_df: pd.DataFrame | None, low_accuracy: float) -> list[str]:
    lines = ["## Per patient", ""]
    if per_patient_df is None or per_patient_df.empty:
        return lines + ["No per-patient results (no patient IDs or labels).", ""]
    df = per_patient_df.sort_values(["accuracy", "images"], ascending=[True, False],
                                    kind="mergesort")
    low = df["accuracy"] < low_accuracy
    lines += [f"{len(df)} patients; {int(low.sum())} below {low_accuracy:.0%} accuracy "
              f"(flagged **LOW**). Per-patient accuracy can vary widely, so read the "
              f"spread per class as well as the mean.", ""]
    spread = []
    for label, group in df.groupby("label", sort=True):
        acc = group["accuracy"]
        spread.append([CLASS_LABELS.get(int(label), str(label)), len(group),
                       int(group["images"].sum()), acc.min(), acc.median(), acc.max(),
                       f"{acc.min():.1%} - {acc.max():.1%}"])
    lines += [_table(["class", "patients", "images", "min accuracy", "median", "max accuracy",
                      "spread"], spread), ""]
    rows = [[r.patient_id, CLASS_LABELS.get(int(r.label), str(r.label)), r.images, r.correct,
             r.accuracy, r.mean_probability, "**LOW**" if is_low else ""]
            for r, is_low in zip(df.itertuples(index=False), low)]
    lines += ["Worst first:", "",
              _table(["patient", "class", "images", "correct", "accuracy", "mean P(ALL)",
                      "flag"], rows), ""]
    return lines


def write_report(eval_dir, metrics: dict, per_patient_df, plots: dict[str, str], title: str,
                 extra_md: str = "", low_accuracy: float = LOW_PATIENT_ACCURACY) -> str:
    """Writes `report.md` into eval_dir.

    Args:
      eval_dir: local directory of the evaluation; created if missing.
      metrics: the dict from `metrics.classification_metrics`.
      per_patient_df: the frame from `metrics.per_patient`, or None.
      plots: figure name -> PNG path; embedded with links relative to eval_dir.
      title: the report's heading.
      extra_md: Markdown appended at the end (e.g. how the model was evaluated).
      low_accuracy: patients below this accuracy are flagged.

    Returns:
      The path of report.md.
    """
    eval_dir = os.fspath(eval_dir)
    os.makedirs(eval_dir, exist_ok=True)
    m = metrics.get
    lines = [f"# {title}", "", "## Headline", "",
             _table(["metric", "value"], [
                 ["**weighted F1** (C-NMC challenge metric)", m("weighted_f1")],
                 ["accuracy", m("accuracy")],
                 ["balanced accuracy", m("balanced_accuracy")],
                 ["ROC AUC", m("roc_auc")],
                 ["PR AUC (average precision)", m("pr_auc")],
                 ["sensitivity (recall ALL)", m("sensitivity")],
                 ["specificity (recall hem)", m("specificity")],
                 ["threshold (ALL if p >= t)", m("threshold")],
                 ["images (N)", m("num_examples")],
             ]), "", "## Per class", "",
             _table(["class", "precision", "recall", "F1", "support"], [
                 [f"{CLASS_LABELS[k]} ({k})", m(f"precision_{key}"), m(f"recall_{key}"),
                  m(f"f1_{key}"), m(f"support_{key}")]
                 for k, key in ((1, "all"), (0, "hem"))]),
             f"\nmacro F1 {_fmt(m('macro_f1'))}", "", "## Confusion matrix", ""]
    cm = m("confusion_matrix")
    if cm is not None:
        lines += [_table(["true \\ predicted", "hem (0)", "ALL (1)"],
                         [["hem (0)", *cm[0]], ["ALL (1)", *cm[1]]]), ""]
    else:
        lines += ["n/a", ""]
    lines += _patient_section(per_patient_df, low_accuracy)
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            link = Path(os.path.relpath(os.fspath(path), eval_dir)).as_posix()
            lines += [f"### {name}", "", f"![{name}]({link})", ""]
    if extra_md:
        lines += [extra_md.rstrip(), ""]
    out = os.path.join(eval_dir, "report.md")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return out


def _mean_std(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def write_comparison(rows: list[dict], out_dir) -> dict:
    """Writes a cross-validation comparison of models: comparison.csv, .md and .png.

    Args:
      rows: one dict per (model, fold or evaluation set) with keys model, fold (or
        eval_set), weighted_f1, roc_auc, images_per_sec, params; missing metrics are left
        blank, other keys are kept as extra CSV columns.
      out_dir: local directory; created if missing.

    Returns:
      {"csv": path, "md": path, "png": path}. The Markdown gives every row, then per model
      the mean ± sample standard deviation (ddof=1) across its folds; the PNG is a grouped
      bar chart of weighted F1 per model and fold.
    """
    if not rows:
        raise ValueError("no comparison rows")
    df = pd.DataFrame(rows)
    if "fold" not in df.columns and "eval_set" in df.columns:
        df = df.rename(columns={"eval_set": "fold"})
    for key in ("model", "fold"):
        if key not in df.columns:
            raise ValueError(f"every comparison row needs '{key}'; columns: {list(df.columns)}")
    for col in COMPARISON_COLUMNS[2:]:
        # None (a metric not measured) and missing columns both become NaN.
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    df = df[COMPARISON_COLUMNS + [c for c in df.columns if c not in COMPARISON_COLUMNS]]
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"comparison.{k}") for k in ("csv", "md", "png")}
    df.to_csv(paths["csv"], index=False)

    def params(v) -> str:
        return "n/a" if pd.isna(v) else f"{int(v):,}"

    fold_rows = [[r.model, str(r.fold), r.weighted_f1, r.roc_auc,
                  _fmt(r.images_per_sec, 1), params(r.params)]
                 for r in df.itertuples(index=False)]
    summary = []
    for model, group in df.groupby("model", sort=False):
        speed = group["images_per_sec"].dropna()
        summary.append([model, len(group), _mean_std(group["weighted_f1"]),
                        _mean_std(group["roc_auc"]),
                        _fmt(speed.mean(), 1) if len(speed) else "n/a",
                        params(group["params"].dropna().iloc[0])
                        if group["params"].notna().any() else "n/a"])
    header = ["model", "fold / eval set", "weighted_f1", "roc_auc", "images_per_sec", "params"]
    md = ["# Model comparison", "", "## Per fold", "", _table(header, fold_rows), "",
          "## Mean ± std across folds", "",
          _table(["model", "folds", "weighted_f1", "roc_auc", "images_per_sec", "params"],
                 summary), "", "![weighted F1 per model and fold](comparison.png)", ""]
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(md))

    models = list(pd.unique(df["model"]))
    folds = list(pd.unique(df["fold"]))
    width = 0.8 / len(folds)
    fig = _figure(max(7.0, 2.5 + len(models) * (0.6 + 0.35 * len(folds))), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(models))
    for j, fold in enumerate(folds):
        sub = df[df["fold"] == fold].groupby("model")["weighted_f1"].mean()
        heights = [float(sub.get(model, np.nan)) for model in models]
        bars = ax.bar(x + (j - (len(folds) - 1) / 2) * width, np.nan_to_num(heights), width,
                      label=str(fold))
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.3f}" for h in heights],
                     fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, labels=[str(m) for m in models])
    ax.set(ylabel="weighted F1", ylim=(0, 1.1), title="weighted F1 per model and fold")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="fold / eval set", fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    _save(fig, paths["png"])
    return paths
