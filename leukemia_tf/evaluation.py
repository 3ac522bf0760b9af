"""Evaluate an exported model on a labeled split: metrics, per-patient table, plots, report.

Every image of the split is scored exactly once (pipeline without drop_remainder or
repeat; scoring refuses duplicates), optionally averaged over TTA views.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Optional

import pandas as pd
import tensorflow as tf

from leukemia_tf import config as config_lib
from leukemia_tf import export, metrics, report, scoring
from leukemia_tf.data import pipeline, preprocess

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    model_dir: str                 # a training model dir, an export/ dir or a .keras file
    records_dir: str
    split: str = "validation"      # validation | fold<k>
    tta: str = "none"              # none | flips | dihedral8
    threshold: str = "0.5"         # a value, or youden | f1 (chosen on threshold_split)
    threshold_split: str = "auto"  # auto | validation | fold<k>
    batch_size: int = 64
    out_dir: str = ""              # default <model_dir>/eval
    progress: bool = False


def _model_config(model_dir: str) -> Optional[config_lib.Config]:
    path = os.path.join(model_dir, "config.json")
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            return config_lib.from_dict(json.load(f))
    return None


def score_selection(predictor, records_dir: str, manifest: dict, sel: pipeline.Selection,
                    tta: str, batch_size: int, progress: bool = False) -> pd.DataFrame:
    """Predictions for every record of a selection, at the predictor's input size."""
    # The model's saved preprocessing (canvas, resize) must be the records' one.
    preprocess.check_records(predictor.spec, manifest["settings"], records_dir)
    cfg = config_lib.Config(data=config_lib.DataConfig(records_dir=records_dir,
                                                       image_size=predictor.image_size))
    ds = pipeline.make_dataset(cfg, sel, False, manifest=manifest, batch_size=batch_size,
                               with_metadata=True)
    scores = scoring.score_dataset(predictor, ds, tta=tta, progress=progress)
    expected = pipeline.count_examples(manifest, sel)
    if len(scores) != expected:
        raise RuntimeError(f"scored {len(scores)} images of {sel.name}, manifest has {expected}")
    return scores


def _threshold_selection(cfg: EvalConfig, trained: Optional[config_lib.Config],
                         reported: pipeline.Selection) -> pipeline.Selection:
    """A labeled selection other than the reported one, and not trained on if possible."""
    if cfg.threshold_split != "auto":
        sel = pipeline.parse_val_split(cfg.threshold_split)
        if sel == reported:
            raise ValueError("--threshold_split must differ from --split: a threshold tuned "
                             "on the reported images overstates the result")
        return sel
    if reported.split == "train":
        return pipeline.Selection("validation")
    train_folds = set(trained.data.train_folds) if trained else {0, 1, 2}
    held_out = sorted({0, 1, 2} - train_folds)
    if not held_out:
        raise ValueError("--threshold=youden|f1 needs labeled images that are neither "
                         "reported nor trained on, but the model trained on every fold: "
                         "pass --threshold_split=fold<k> (biased) or a numeric threshold")
    return pipeline.Selection("train", (held_out[0],))


def evaluate(cfg: EvalConfig) -> dict:
    """Score, measure, plot and write the report; returns metrics.json's content.

    Writes into `out_dir`: metrics.json, predictions.csv, per_patient.csv, PNG plots and
    report.md.
    """
    manifest = pipeline.load(cfg.records_dir)
    sel = pipeline.parse_val_split(cfg.split)
    trained = _model_config(cfg.model_dir)
    predictor = export.load_model(cfg.model_dir, batch_size=cfg.batch_size)
    scores = score_selection(predictor, cfg.records_dir, manifest, sel, cfg.tta,
                             cfg.batch_size, cfg.progress)
    if (scores["label"] < 0).any():
        raise ValueError(f"{sel.name} has unlabeled images: evaluate labeled data; use "
                         "leukemia_tf.predict for the final test set")

    method = cfg.threshold
    threshold_on = None
    if method in metrics.THRESHOLD_METHODS:
        tsel = _threshold_selection(cfg, trained, sel)
        tscores = score_selection(predictor, cfg.records_dir, manifest, tsel, cfg.tta,
                                  cfg.batch_size)
        threshold = metrics.choose_threshold(tscores["label"], tscores["probability"], method)
        threshold_on = tsel.name
    else:
        threshold = metrics.choose_threshold(None, None, method)

    result = metrics.classification_metrics(scores["label"], scores["probability"], threshold)
    result.update(split=sel.name, tta=cfg.tta, threshold_method=method,
                  threshold_chosen_on=threshold_on, model=predictor.path,
                  image_size=predictor.image_size)
    scores["file"] = scores["source_path"].map(os.path.basename)
    scores["prediction"] = (scores["probability"] >= threshold).astype(int)
    scores = scores[["source_path", "file", "patient_id", "label", "probability", "prediction"]]
    patients = metrics.per_patient(scores)

    out = cfg.out_dir or os.path.join(cfg.model_dir, "eval")
    os.makedirs(out, exist_ok=True)
    scores.to_csv(os.path.join(out, "predictions.csv"), index=False)
    patients.to_csv(os.path.join(out, "per_patient.csv"), index=False)
    plots = {"Confusion matrix": report.plot_confusion_matrix(
        result["confusion_matrix"], os.path.join(out, "confusion_matrix.png"))}
    if result["roc_auc"] is not None:
        plots["ROC and PR curves"] = report.plot_roc_pr(
            scores["label"], scores["probability"], os.path.join(out, "roc_pr.png"))
    history = os.path.join(cfg.model_dir, "history.csv")
    if os.path.exists(history):
        plots = {"Training curves": report.plot_training_curves(
            history, os.path.join(out, "training_curves.png")), **plots}
    result["leakage_warnings"] = leakage_warnings(manifest, trained, sel)
    extra = "".join(f"\n> **Leakage warning:** {w}\n" for w in result["leakage_warnings"])
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    result["report"] = report.write_report(
        out, result, patients, {k: os.path.basename(v) for k, v in plots.items()},
        title=f"{os.path.basename(os.path.abspath(cfg.model_dir))} on {sel.name}",
        extra_md=extra)
    return result


def leakage_warnings(manifest: dict, trained: Optional[config_lib.Config],
                     reported: pipeline.Selection) -> list:
    """Byte-identical images on both sides of the train / evaluation boundary."""
    if trained is None:
        return []
    train_folds = set(trained.data.train_folds)
    out = []
    n = 0
    for group in manifest.get("duplicate_groups", []):
        in_train = bool(train_folds & set(group["folds"])) and "train" in group["splits"]
        if reported.split == "train":
            in_eval = bool(set(reported.folds) & set(group["folds"]))
        else:
            in_eval = reported.split in group["splits"]
        if in_train and in_eval:
            n += 1
    if n:
        out.append(f"{n} groups of byte-identical images are in both the training folds "
                   f"{sorted(train_folds)} and {reported.name}: those images were seen in "
                   "training, so the reported metrics are optimistic")
    return out
