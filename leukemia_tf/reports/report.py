"""Markdown reports of an evaluation: report.md per evaluation and eval/index.md.

Every link is relative to the file that holds it, so a report renders with its pictures
on GitHub and in a local Markdown viewer opened from its own folder. Files are written
through leukemia_tf.io (local, gs://, ram://). The figures live in reports.charts.
"""
from __future__ import annotations

import math
import os
import posixpath
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import io, provenance
from leukemia_tf.metrics.classification import format_ci
from leukemia_tf.reports.charts import CLASS_LABELS
from leukemia_tf.wording import count

LOW_PATIENT_ACCURACY = 0.5   # patients below this accuracy are flagged in the report
INDEX = "index.md"
REPORT = "report.md"


def fmt(value, digits: int = 4) -> str:
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


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; cells formatted by `fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _patient_section(per_patient_df: pd.DataFrame | None, low_accuracy: float) -> list[str]:
    lines = ["## Per patient", ""]
    if per_patient_df is None or per_patient_df.empty:
        return lines + ["No per-patient results (no patient IDs or labels).", ""]
    df = per_patient_df.sort_values(["accuracy", "images"], ascending=[True, False],
                                    kind="mergesort")
    low = df["accuracy"] < low_accuracy
    lines += [f"{count(len(df), 'patient')}; {int(low.sum())} below {low_accuracy:.0%} accuracy "
              f"(flagged **LOW**). Per-patient accuracy can vary widely, so read the "
              f"spread per class as well as the mean.", ""]
    spread = []
    for label, group in df.groupby("label", sort=True):
        acc = group["accuracy"]
        spread.append([CLASS_LABELS.get(int(label), str(label)), len(group),
                       int(group["images"].sum()), acc.min(), acc.median(), acc.max(),
                       f"{acc.min():.1%} - {acc.max():.1%}"])
    lines += [markdown_table(["class", "patients", "images", "min accuracy", "median",
                              "max accuracy", "spread"], spread), ""]
    rows = [[r.patient_id, CLASS_LABELS.get(int(r.label), str(r.label)), r.images, r.correct,
             r.accuracy, r.mean_probability, "**LOW**" if is_low else ""]
            for r, is_low in zip(df.itertuples(index=False), low)]
    lines += ["Worst first:", "",
              markdown_table(["patient", "class", "images", "correct", "accuracy", "mean P(ALL)",
                              "flag"], rows), ""]
    return lines


def relative_link(path: str, base_dir: str) -> str:
    """`path` as a Markdown link relative to `base_dir` ('/'-separated, any file system).

    Raises:
      ValueError: path is a URL outside base_dir (no relative link can reach it).
    """
    path, base_dir = os.fspath(path), os.fspath(base_dir)
    if io.is_url(path) or io.is_url(base_dir):
        prefix = base_dir.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not under {base_dir}: no relative link reaches it")
        return path[len(prefix):]
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))
    return rel.replace(os.sep, posixpath.sep)


def _escape(value) -> str:
    """A table cell: pipes would split the cell, newlines would end the row."""
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def _with_ci(metrics: dict, name: str):
    """The value with its bootstrap interval when metrics.json has one, else the value."""
    ci = metrics.get("confidence_intervals")
    if not ci or metrics.get(name) is None:
        return metrics.get(name)
    text = format_ci(ci, name, 4)
    return text if not ci.get("note") else f"{text} ({ci['note']})"


def write_report(eval_dir, metrics: dict, per_patient_df, plots: dict[str, str], title: str,
                 extra_md: str = "", low_accuracy: float = LOW_PATIENT_ACCURACY,
                 context: Sequence[Tuple[str, object]] = (), banners: Sequence[str] = ()
                 ) -> str:
    """Writes `report.md` into eval_dir (any file system).

    Args:
      eval_dir: directory of this evaluation; created if missing.
      metrics: the dict from `metrics.classification_metrics`.
      per_patient_df: the frame from `metrics.per_patient`, or None.
      plots: figure name -> PNG path (under eval_dir); linked relative to eval_dir.
      title: the report's heading.
      extra_md: Markdown appended at the end (e.g. how the model was evaluated).
      low_accuracy: patients below this accuracy are flagged.
      context: (field, value) rows of the run context table, shown first.
      banners: warnings shown as block quotes right under the title (biased splits).

    Returns:
      The path of report.md.
    """
    eval_dir = os.fspath(eval_dir)
    m = metrics.get
    lines = [f"# {title}", ""]
    banners = list(banners) + [w for w in m("small_n_warnings") or [] if w not in banners]
    for text in banners:
        lines += [f"> **Warning:** {text}", ""]
    if context:
        lines += ["## Run context", "",
                  markdown_table(["field", "value"], [[k, _escape(v)] for k, v in context]), ""]
    lines += _metric_sections(metrics)
    lines += _patient_section(per_patient_df, low_accuracy)
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            lines += [f"### {name}", "", f"![{name}]({relative_link(path, eval_dir)})", ""]
    if extra_md:
        lines += [extra_md.rstrip(), ""]
    out = io.join(eval_dir, REPORT)
    io.write_text(out, "\n".join(lines))
    return out


def _metric_sections(metrics: dict) -> list:
    """The headline table, the per-class table and the confusion matrix, as lines."""
    m = metrics.get
    lines = ["## Headline", "",
             markdown_table(["metric", "value"], [
                 ["**weighted F1** (C-NMC challenge metric)", _with_ci(metrics, "weighted_f1")],
                 ["accuracy", m("accuracy")],
                 ["balanced accuracy", m("balanced_accuracy")],
                 ["ROC AUC (exact, sklearn)", _with_ci(metrics, "roc_auc")],
                 ["PR AUC (average precision)", m("pr_auc")],
                 ["sensitivity (recall ALL)", m("sensitivity")],
                 ["specificity (recall hem)", m("specificity")],
                 ["threshold (ALL if p >= t)", m("threshold")],
                 ["images (N)", m("num_examples")],
             ]), "", "## Per class", "",
             markdown_table(["class", "precision", "recall", "F1", "support"], [
                 [f"{CLASS_LABELS[k]} ({k})", m(f"precision_{key}"), m(f"recall_{key}"),
                  m(f"f1_{key}"), m(f"support_{key}")]
                 for k, key in ((1, "all"), (0, "hem"))]),
             f"\nmacro F1 {fmt(m('macro_f1'))}", "", "## Confusion matrix", ""]
    cm = m("confusion_matrix")
    if cm is None:
        return lines + ["n/a", ""]
    return lines + [markdown_table(["true \\ predicted", "hem (0)", "ALL (1)"],
                                   [["hem (0)", *cm[0]], ["ALL (1)", *cm[1]]]), ""]


def _index_row(eval_root: str, name: str, m: dict, stale: bool = False) -> list:
    threshold = fmt(m.get("threshold"))
    if m.get("threshold_chosen_on"):
        threshold += f" ({m.get('threshold_method')} on {m['threshold_chosen_on']})"
    role = m.get("split_role", "n/a")
    if role not in ("held-out", "n/a"):
        role = f"**{role}**"
    mark = " **stale**" if stale else ""
    mark += " **other records**" if m.get("other_records") else ""
    mark += " **other model**" if m.get("other_model") else ""
    return [f"[{name}]({name}/{REPORT}){mark}", m.get("split", "n/a"), role, m.get("tta", "n/a"),
            threshold, m.get("num_examples"), m.get("weighted_f1"), m.get("roc_auc"),
            m.get("date", "n/a")]


def write_index(eval_root: str) -> Optional[str]:
    """(Re)writes `<eval_root>/index.md`: one row per evaluation folder holding a
    metrics.json, linking its report. Returns the path, or None if there is none."""
    eval_root = os.fspath(eval_root)
    if not io.isdir(eval_root):
        return None
    rows, hashes, stale, other = [], {}, 0, False
    for name in io.listdir(eval_root):
        path = io.join(eval_root, name, "metrics.json")
        if io.isdir(io.join(eval_root, name)) and io.exists(path):
            m = io.read_json(path)
            is_stale = provenance.stale(eval_root, m, hashes)
            stale += is_stale
            rows.append(_index_row(eval_root, name, m, is_stale))
            other = other or bool(m.get("other_records") or m.get("other_model"))
    if not rows:
        return None
    lines = ["# Evaluations", "",
             "One folder per evaluation, named "
             "`<split>[-<tta>][-<options>][-thr_<method>_<split>]`. "
             "Split roles: **held-out** (neither trained on nor used to pick the best "
             "epoch: unbiased), **selection** (chose the best epoch: optimistic), "
             "**trained-on** (a training fold: not an estimate of generalisation).", "",
             *([f"**stale**: {stale} of these scored another model than the current "
                "model.keras (its sha256 differs; e.g. a continued training exported a new "
                "one): evaluate again.", ""] if stale else []),
             *(["**other records** / **other model**: scored on purpose with records or a "
                "model.keras other than the run's own (--allow_other_records, "
                "--allow_other_model); see that report's warning.", ""] if other else []),
             markdown_table(["evaluation", "split", "role", "TTA", "threshold", "images",
                             "weighted F1", "ROC AUC", "date"], rows), ""]
    out = io.join(eval_root, INDEX)
    io.write_text(out, "\n".join(lines))
    return out
