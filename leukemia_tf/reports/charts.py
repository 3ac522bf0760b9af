"""The figures of an evaluation or a cross-validation, written through leukemia_tf.io.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot: this works headless, leaves the process-wide backend alone and keeps no global
figure state between calls. Each is rendered to PNG bytes and written with
`io.write_figure`, so model dirs on gs:// or ram:// get their plots too.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

from leukemia_tf import io
from leukemia_tf.metrics.classification import validate_scores

CLASS_LABELS = {0: "hem", 1: "ALL"}
# (panel title, train column candidates); the validation column is "val_" + the train
# column Keras logged. No AUC panel on purpose: Keras' bucketed AUC differs from the exact
# (sklearn) ROC AUC the reports give, and one AUC must not look like the other.
_CURVES = (
    ("loss", ("loss",)),
    ("accuracy", ("accuracy", "binary_accuracy", "acc")),
    ("weighted F1", ("weighted_f1",)),
)
# The y-axis label of each panel: what is drawn, and which way is better.
_Y_LABELS = {"loss": "loss (lower is better)", "accuracy": "accuracy (higher is better)",
             "weighted F1": "weighted F1 (higher is better)"}
# Smallest font of a label that must be read, rotated text included (points).
MIN_LABEL_PT = 9
# --monitor -> (history column, higher is better); `last` and val_auc have no column
# here: the kept epoch is then taken from the run (best_epoch) or is the last one.
_MONITOR_COLUMNS = {"val_weighted_f1": ("val_weighted_f1", True), "val_loss": ("val_loss", False)}


def _best_index(history: pd.DataFrame, epochs: np.ndarray, best_epoch: Optional[int],
                monitor: str) -> Optional[int]:
    """Row of the kept epoch: the run's own best_epoch when known, else by the monitor's
    column (first optimum, as the checkpoint keeps it), else the last row for `last`."""
    if best_epoch is not None:
        rows = np.flatnonzero(epochs == int(best_epoch))
        return int(rows[0]) if rows.size else None
    column, higher = _MONITOR_COLUMNS.get(monitor, (None, True))
    if column is not None and column in history and history[column].notna().any():
        return int(history[column].idxmax() if higher else history[column].idxmin())
    return len(history) - 1 if monitor == "last" and len(history) else None


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png) -> str:
    out_png = os.fspath(out_png)
    fig.tight_layout()
    io.write_figure(out_png, fig)
    return out_png


def _epochs(history: pd.DataFrame) -> np.ndarray:
    """Epoch numbers from 1: Keras' CSV logs count from 0, the trainer may log from 1."""
    if "epoch" not in history.columns:
        return np.arange(1, len(history) + 1)
    epochs = history["epoch"].to_numpy()
    return epochs + 1 if len(epochs) and epochs.min() == 0 else epochs


def plot_training_curves(history_csv_path, out_png, val_label: str = "validation",
                         best_epoch: Optional[int] = None,
                         monitor: str = "val_weighted_f1") -> str:
    """Plots train and validation loss / accuracy / weighted F1 per epoch.

    The kept epoch (the run's best_epoch, or the optimum of its --monitor) is marked by a
    dashed line in every panel, and starred on the curve that chose it (loss for
    val_loss, weighted F1 for val_weighted_f1), so each curve shows where the kept
    weights come from.

    Args:
      history_csv_path: the run's history.csv (any file system). Each curve is drawn when
        its train or val column exists; epochs are shown from 1.
      out_png: where to write the figure.
      val_label: legend of the validation curves (e.g. "fold2 (selection)").
      best_epoch: the epoch the run kept (summary.json), if known.
      monitor: the measure that chose it (val_auc, val_loss, val_weighted_f1, last).

    Returns:
      out_png as a string.

    Raises:
      ValueError: the file has none of the known curves.
    """
    history = io.read_csv(os.fspath(history_csv_path)).reset_index(drop=True)
    epochs = _epochs(history)
    panels = []
    chose = _MONITOR_COLUMNS.get(monitor, (None,))[0]
    for title, candidates in _CURVES:
        train = next((c for c in candidates if c in history.columns), None)
        val = next((f"val_{c}" for c in candidates if f"val_{c}" in history.columns), None)
        if train or val:
            chooses = val is not None and val == chose
            panels.append((title, train, val, chooses))
    if not panels:
        raise ValueError(f"{history_csv_path}: no loss/accuracy/weighted_f1 columns in "
                         f"{list(history.columns)}")
    best = _best_index(history, epochs, best_epoch, monitor)
    fig = _figure(5.0 * len(panels), 4.0)
    for i, (title, train, val, chooses) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if train:
            ax.plot(epochs, history[train], marker=".", label="train")
        if val:
            ax.plot(epochs, history[val], marker=".", label=val_label)
        if best is not None:
            ax.axvline(epochs[best], color="grey", linestyle="--", linewidth=1,
                       label=f"kept epoch {epochs[best]} ({monitor})")
            if chooses and val:
                ax.plot(epochs[best], history[val][best], "k*", markersize=10,
                        label=f"kept {history[val][best]:.4f}")
        ax.set_title(title + (" (chooses the epoch)" if chooses else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel(_Y_LABELS[title])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
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


def operating_point(labels, probabilities, threshold: float) -> dict:
    """FPR, TPR and precision when predicting ALL for probability >= threshold."""
    y, p = validate_scores(labels, probabilities)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    return {"threshold": float(threshold),
            "fpr": float(pred[neg].mean()) if neg.any() else None,
            "tpr": float(pred[pos].mean()) if pos.any() else None,
            "precision": float(y[pred].mean()) if pred.any() else None}


def plot_roc_pr(labels, probabilities, out_png, threshold: float | None = None) -> str:
    """Draws the ROC curve and the precision-recall curve (ALL positive) side by side.

    The legend gives the exact ROC AUC (sklearn) and average precision; with `threshold`
    both panels mark the operating point (its FPR/TPR and recall/precision). On a
    single-class set the curves are undefined; the panels then say so instead of failing.

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
        if threshold is not None:
            op = operating_point(y, p, threshold)
            roc_ax.plot([op["fpr"], op["fpr"], 0], [0, op["tpr"], op["tpr"]], color="red",
                        linestyle="--", linewidth=0.8)
            roc_ax.plot(op["fpr"], op["tpr"], "o", color="red", markersize=8, zorder=5,
                        label=f"threshold {threshold:.3f}: FPR {op['fpr']:.3f}, "
                              f"TPR {op['tpr']:.3f}")
            if op["precision"] is not None:
                pr_ax.plot(op["tpr"], op["precision"], "o", color="red", markersize=8, zorder=5,
                           label=f"threshold {threshold:.3f}: recall {op['tpr']:.3f}, "
                                 f"precision {op['precision']:.3f}")
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
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            # "best": the legend avoids the curve and the operating point where it can.
            ax.legend(loc="best", fontsize=8, framealpha=0.8)
    return _save(fig, out_png)


def plot_comparison(df: pd.DataFrame, out_png) -> str:
    """A grouped bar chart of weighted F1 per model: one bar per held-out fold, their
    mean ± std (error bar), and the all-folds -> validation run apart (hatched).

    Args:
      df: comparison rows with columns model, eval_split, fold (empty for the
        validation run), weighted_f1.
    """
    models = list(pd.unique(df["model"]))
    held = df[df["fold"].notna()]
    other = df[df["fold"].isna()]
    series = [(str(s), held[held["eval_split"] == s], {}) for s in pd.unique(held["eval_split"])]
    if len(held):
        series.append(("mean ± std of folds", held, {"color": "grey"}))
    series += [(f"{s} (all folds, not averaged)", other[other["eval_split"] == s],
                {"hatch": "//", "color": "white", "edgecolor": "black"})
               for s in pd.unique(other["eval_split"])]
    width = 0.8 / len(series)
    fig = _figure(max(7.0, 3.5 + len(models) * (0.6 + 0.35 * len(series))), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(models))
    for j, (label, rows, style) in enumerate(series):
        grouped = rows.groupby("model")["weighted_f1"]
        heights = [float(grouped.mean().get(m, np.nan)) for m in models]
        errors = None
        if label.startswith("mean"):
            errors = [float(grouped.std(ddof=1).get(m, np.nan)) for m in models]
            errors = np.nan_to_num(errors)
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, np.nan_to_num(heights), width,
                      yerr=errors, capsize=4 if errors is not None else 0, label=label,
                      **style)
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.3f}" for h in heights],
                     fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, labels=[str(m) for m in models])
    ax.set(ylabel="weighted F1", ylim=(0, 1.15), title="weighted F1 per model and split")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="evaluated split", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out_png)


def plot_mistakes(cells: list, out_png, columns: int = 6) -> str:
    """A grid of misclassified cells, most confident first.

    Args:
      cells: dicts with image (uint8 [H, W, 3]), patient_id, label (truth 0/1) and
        probability (of ALL), in the order to show.
      out_png: where to write the figure.

    Returns:
      out_png as a string.
    """
    if not cells:
        raise ValueError("no cells to show")
    columns = min(columns, len(cells))
    rows = -(-len(cells) // columns)
    fig = _figure(1.9 * columns, 2.2 * rows)
    for i, cell in enumerate(cells):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(cell["image"])
        ax.set_xticks([])
        ax.set_yticks([])
        truth = CLASS_LABELS[int(cell["label"])]
        ax.set_title(f"patient {cell['patient_id'] or '?'}\ntruth {truth}, "
                     f"P(ALL) {cell['probability']:.3f}", fontsize=8)
    return _save(fig, out_png)


def plot_patient_fractions(table: pd.DataFrame, out_png, threshold: float = 0.5) -> str:
    """Fraction of each patient's cells called ALL, one bar per patient, coloured by the
    patient's truth; the dashed line at 0.5 is where a patient's majority call flips.

    Args:
      table: `patients.patient_table` with labels (patient, cells, fraction_called_all,
        truth).
    """
    df = table.sort_values(["truth", "fraction_called_all", "patient"], kind="mergesort")
    colours = {1: "tab:red", 0: "tab:blue"}
    fig = _figure(max(5.0, 1.5 + 0.35 * len(df)), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(df))
    bars = ax.bar(x, df["fraction_called_all"], color=[colours[int(t)] for t in df["truth"]])
    ax.bar_label(bars, labels=[f"{f:.0%}" for f in df["fraction_called_all"]], fontsize=7,
                 padding=1)   # a patient with no cell called ALL still gets a mark
    line = ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    handles = [Patch(color=colours[k], label=f"truth {CLASS_LABELS[k]}") for k in (1, 0)
               if (df["truth"] == k).any()]
    ax.legend(handles=handles + [line], labels=[h.get_label() for h in handles]
              + ["majority call flips"], fontsize=8, loc="best")
    ax.set_xticks(x, labels=[f"{p} ({n})" for p, n in zip(df["patient"], df["cells"])],
                  rotation=90, fontsize=MIN_LABEL_PT)
    ax.set(ylim=(0, 1.05), ylabel=f"fraction of cells called ALL (p >= {threshold:g})",
           xlabel="patient (cells)", title="per patient: fraction of cells called ALL")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_png)


def plot_reliability(bins: pd.DataFrame, path, title: str = "reliability") -> str:
    """Draws a reliability diagram from `calibration.reliability_bins` and writes it as PNG.

    Top: accuracy per bin as bars against the diagonal (perfect calibration), with the
    ECE in the legend. Bottom: the number of images per bin.

    Returns:
      path as a string.
    """
    path = str(path)
    used = bins[bins["count"] > 0]
    ece = float((used["count"] * used["gap"].abs()).sum() / max(int(used["count"].sum()), 1))
    fig = Figure(figsize=(5.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    width = (bins["high"] - bins["low"]).to_numpy()
    top.bar(bins["low"], np.nan_to_num(bins["accuracy"].to_numpy()), width=width,
            align="edge", edgecolor="black", label=f"accuracy (ECE {ece:.4f})")
    top.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle="--", label="perfect")
    top.plot(used["confidence"], used["accuracy"], "o", color="red", markersize=4,
             label="(mean confidence, accuracy)")
    top.set(ylabel="accuracy of the call", ylim=(0.0, 1.02), title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(bins["low"], bins["count"], width=width, align="edge", edgecolor="black")
    bottom.set(xlabel="confidence max(p, 1 - p)", ylabel="images", xlim=(0.5, 1.0))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    io.write_figure(path, fig)
    return path
