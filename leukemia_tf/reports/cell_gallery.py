"""The pictures of an evaluation that show cells and patients rather than curves: the
most confidently misclassified cells (their pixels read back by the caller, e.g.
`inference.cells.read_cells`) and the fraction of each patient's cells called ALL.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.metrics import patients
from leukemia_tf.reports import charts

MAX_MISTAKES = 24   # a grid of a few dozen cells at most


def confident_mistakes(scores: pd.DataFrame, threshold: float,
                       limit: int = MAX_MISTAKES) -> pd.DataFrame:
    """Misclassified labeled cells, most confident first (|probability - threshold|).

    Args:
      scores: columns source_path, patient_id, label, probability.
    """
    labeled = scores[scores["label"] >= 0]
    predicted = (labeled["probability"] >= threshold).astype(int)
    wrong = labeled[predicted != labeled["label"]]
    confidence = (wrong["probability"] - threshold).abs()
    order = np.lexsort((wrong["source_path"].to_numpy(), -confidence.to_numpy()))
    return wrong.iloc[order[:limit]].reset_index(drop=True)


def add_figures(scores: pd.DataFrame, threshold: float, out_dir: str,
                read_cells: Callable[[List[str]], Dict[str, np.ndarray]]) -> Dict[str, str]:
    """Writes the mistakes grid and the per-patient chart into out_dir (when there is
    something to show) and returns {figure title: png path} for the report.

    Args:
      read_cells: source paths -> {source path: stored pixels uint8 [H, W, 3]}; called
        once, for the mistakes shown.
    """
    figures = {}
    mistakes = confident_mistakes(scores, threshold)
    if len(mistakes):
        pixels = read_cells(list(mistakes["source_path"]))
        cells: List[dict] = [{"image": pixels[r.source_path], "patient_id": r.patient_id,
                              "label": r.label, "probability": r.probability}
                             for r in mistakes.itertuples(index=False)
                             if r.source_path in pixels]
        wrong = int(((scores["probability"] >= threshold).astype(int)
                     != scores["label"]).sum())
        title = (f"Most confidently misclassified cells ({len(cells)} of {wrong} mistakes; "
                 "title: patient, truth, probability of ALL)")
        figures[title] = charts.plot_mistakes(cells, io.join(out_dir, "mistakes.png"))
    if patients.patient_ids_known(scores["patient_id"]):
        table = patients.patient_table(scores["patient_id"], scores["probability"],
                                       scores["label"], threshold)
        figures["Fraction of cells called ALL per patient (colour: truth)"] = \
            charts.plot_patient_fractions(table, io.join(out_dir, "patients.png"), threshold)
    return figures
