"""The pictures of an evaluation that show cells and patients rather than curves: the
most confidently misclassified cells (read back from the records evaluated) and the
fraction of each patient's cells called ALL.

Only the few cells shown are decoded: the shards of the split are read once and filtered
by source path before decoding.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.metrics import classification as metrics
from leukemia_tf.reports import charts as plots
from leukemia_tf.data import manifest as manifest_lib

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


def read_cells(records_dir: str, split: str, source_paths: Sequence[str]
               ) -> Dict[str, np.ndarray]:
    """The stored pixels (uint8 [H, W, 3]) of the named records of one split."""
    import tensorflow as tf
    from leukemia_tf.data import records
    manifest = manifest_lib.load(records_dir)
    sel = manifest_lib.parse_val_split(split) if split != "test" else manifest_lib.Selection("test")
    files = [s["full_path"] for s in manifest_lib.shards_for(manifest, records_dir, sel)]
    wanted = tf.constant(sorted(set(source_paths)) or [""])
    decode = records.decoder(manifest["settings"]["encoding"],
                             int(manifest["settings"]["stored_size"] or 0))
    ds = tf.data.TFRecordDataset(files).map(records.parse_example)
    ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["image/source_path"], wanted)))
    ds = ds.map(lambda ex: (ex["image/source_path"], decode(ex)))
    from leukemia_tf.inference import shards
    with shards.named(records_dir, manifest, sel):
        return {path.numpy().decode(): image.numpy() for path, image in ds}


def add_figures(records_dir: str, split: str, scores: pd.DataFrame, threshold: float,
                out_dir: str) -> Dict[str, str]:
    """Writes the mistakes grid and the per-patient chart into out_dir (when there is
    something to show) and returns {figure title: png path} for the report."""
    figures = {}
    mistakes = confident_mistakes(scores, threshold)
    if len(mistakes):
        pixels = read_cells(records_dir, split, list(mistakes["source_path"]))
        cells: List[dict] = [{"image": pixels[r.source_path], "patient_id": r.patient_id,
                              "label": r.label, "probability": r.probability}
                             for r in mistakes.itertuples(index=False)
                             if r.source_path in pixels]
        wrong = int(((scores["probability"] >= threshold).astype(int)
                     != scores["label"]).sum())
        title = (f"Most confidently misclassified cells ({len(cells)} of {wrong} mistakes; "
                 "title: patient, truth, probability of ALL)")
        figures[title] = plots.plot_mistakes(cells, io.join(out_dir, "mistakes.png"))
    if metrics.known_patients(scores["patient_id"]):
        from leukemia_tf.metrics import patients
        table = patients.patient_table(scores["patient_id"], scores["probability"],
                                       scores["label"], threshold)
        figures["Fraction of cells called ALL per patient (colour: truth)"] = \
            plots.plot_patient_fractions(table, io.join(out_dir, "patients.png"), threshold)
    return figures
