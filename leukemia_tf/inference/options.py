"""Inference options of evaluate and predict: what changes the scores, and what is measured
beside them.

Order (each step sees the previous step's probabilities; every step keeps its own column
`probability_<step>` so predictions.csv shows what each one did):

  1. adapt_bn (none | set | patient): test-time batch-norm adaptation on the scored cells
     (`adapt_bn`), TTA views scored with the adapted statistics. Transductive.
  2. calibrate (none | run | <split>): divide the logit by a temperature, the one the run
     stored at training end (`stored_calibration`) or one fitted here on a named labeled
     split's plain model scores. Never the evaluated split.
  3. neighbour_vote (k > 0): each cell's probability becomes the mean probability of its k
     nearest scored cells (itself included) in the model's penultimate features
     (`neighbours`; features of the model as loaded). Transductive.

The options are one config section, `config.InferenceConfig` (its declared choices and
minimums are the checks). Measured whenever possible, changing nothing: the patient table
(patient ids known), ECE / Brier score (labels), the shortcut probe (labels, evaluate's
`shortcut_probe` on).

Options 1 and 3 need the in-memory network: they load `model.keras` (safe_mode) and
refuse a SavedModel or an ensemble with one line. The scored cells' images are held in
memory for them (N x S x S x 3 bytes: ~100 MB for 2,000 cells at 128 px).
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import config as config_lib
from leukemia_tf import provenance
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.errors import UserError
from leukemia_tf.inference import adapt_bn, cells, neighbours, scoring, shortcut
from leukemia_tf.inference import stored_calibration
from leukemia_tf.metrics import calibration, patients
from leukemia_tf.metrics import classification as metrics
from leukemia_tf.model import keras_file

log = logging.getLogger(__name__)


class OptionsError(ValueError, UserError):
    """An inference option that cannot run on this model or input; names the option."""


def needs_network(opts: config_lib.InferenceConfig) -> bool:
    """BN adaptation or the neighbour vote: the options that run the in-memory network."""
    return opts.adapt_bn != "none" or int(opts.neighbour_vote) > 0


def keras_model(predictor):
    """The predictor's network as an in-memory tf_keras model, loaded again from its
    model.keras through the trust checks of `keras_file.load` (never a SavedModel), so
    nothing here touches the predictor's own copy or the file."""
    if hasattr(predictor, "member_paths"):
        raise OptionsError("--adapt_bn and --neighbour_vote take one model, not an ensemble")
    path = str(predictor.path)
    if not path.endswith(".keras"):
        raise OptionsError(f"{path}: --adapt_bn and --neighbour_vote need the model dir's "
                           "model.keras, not a SavedModel")
    return keras_file.load(path)


def _ordered(images: np.ndarray, paths: List[str], wanted) -> np.ndarray:
    index = {p: i for i, p in enumerate(paths)}
    missing = [p for p in wanted if p not in index]
    if missing:
        raise RuntimeError(f"{len(missing)} scored cells were not read again, e.g. {missing[0]}")
    return images[[index[p] for p in wanted]]


def _adapted(model, images: np.ndarray, groups: List[np.ndarray], tta: str,
             batch_size: int) -> np.ndarray:
    fn = scoring.keras_predict_fn(model)
    out = np.empty(len(images), np.float64)
    for idx in groups:
        with adapt_bn.adapted_batch_norm(model, images[idx], batch_size):
            for i in range(0, idx.size, batch_size):
                part = idx[i:i + batch_size]
                out[part] = scoring.predict_batch(fn, images[part], tta)
    return out


def adapt(model, frame: pd.DataFrame, images: np.ndarray, mode: str, tta: str,
          batch_size: int) -> np.ndarray:
    """Probabilities with BN statistics re-estimated on all cells ('set') or on each
    patient's cells ('patient'); the model's statistics are restored afterwards."""
    if not adapt_bn.has_batch_norm(model):
        raise OptionsError(f"--adapt_bn={mode}: model {model.name!r} has no "
                           "BatchNormalization layer, nothing to adapt")
    if mode == "set":
        groups = [np.arange(len(frame))]
    else:
        ids = frame["patient_id"].astype(str).to_numpy()
        if (ids == "").any():
            raise OptionsError("--adapt_bn=patient needs a patient id for every cell")
        groups = [np.flatnonzero(ids == p) for p in np.unique(ids)]
    return _adapted(model, images, groups, tta, batch_size)


def temperature(opts: config_lib.InferenceConfig, run_dir: Optional[str], split: str,
                score_split: Callable[[str], pd.DataFrame]) -> dict:
    """{temperature, fitted_on, n} for --calibrate=run (the run's calibration.json) or
    --calibrate=<split> (fitted on that split's scores from `score_split(split)`)."""
    if opts.calibrate == "run":
        if not run_dir:
            raise OptionsError("--calibrate=run needs one training run dir")
        value = stored_calibration.load(run_dir)
        return {k: value[k] for k in ("temperature", "fitted_on", "n")}
    if opts.calibrate == split:
        raise OptionsError(f"--calibrate={split} is the evaluated split: a temperature fitted "
                           "on the reported cells overstates calibration")
    scores = score_split(opts.calibrate)
    scores = scores[scores["label"] >= 0]
    t = calibration.fit_temperature(scores["probability"], scores["label"])
    return {"temperature": t, "fitted_on": opts.calibrate, "n": int(len(scores))}


def vote(model, images: np.ndarray, probs: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Mean probability of each cell's k nearest scored cells (itself included)."""
    feats, _ = neighbours.predict_features(model, images, batch_size)
    return neighbours.neighbour_vote(feats, probs, int(k), mode="mean")


def transform(frame: pd.DataFrame, opts: config_lib.InferenceConfig, *, predictor, tta: str,
              batch_size: int, read_images: Callable[[], Tuple[np.ndarray, List[str]]],
              run_dir: Optional[str] = None, split: str = "",
              score_split: Optional[Callable[[str], pd.DataFrame]] = None
              ) -> Tuple[pd.DataFrame, List[str], dict]:
    """Apply the score-changing options to `frame` (source_path, patient_id, probability).

    Args:
      read_images: () -> (uint8 images, their source paths), the scored cells read again;
        called only when an option needs the network.
      run_dir, split, score_split: for --calibrate (see `temperature`).

    Returns:
      (frame with `probability` replaced and `probability_<step>` columns, notes for the
      report, metrics.json entries under "options").
    """
    config_lib.check(opts)
    notes, info = [], {"adapt_bn": opts.adapt_bn, "calibrate": opts.calibrate,
                       "neighbour_vote": int(opts.neighbour_vote), "transductive": False}
    frame = frame.copy()
    if opts.adapt_bn == "none" and opts.calibrate == "none" and not opts.neighbour_vote:
        return frame, notes, info
    frame["probability_model"] = frame["probability"]
    model = images = None
    if needs_network(opts):
        model = keras_model(predictor)
        stored, paths = read_images()
        images = _ordered(stored, paths, frame["source_path"].tolist())
    if opts.adapt_bn != "none":
        frame["probability"] = frame["probability_adapted"] = adapt(
            model, frame, images, opts.adapt_bn, tta, batch_size)
        info["transductive"] = True
        notes.append(_ADAPT_NOTES[opts.adapt_bn])
    if opts.calibrate != "none":
        found = temperature(opts, run_dir, split, score_split)
        info["temperature"] = found
        frame["probability"] = frame["probability_calibrated"] = calibration.apply_temperature(
            frame["probability"], found["temperature"])
        notes.append(f"Calibrated: logits divided by the temperature "
                     f"{found['temperature']:.4f} fitted on {found['fitted_on']} "
                     f"({found['n']} cells).")
    if opts.neighbour_vote:
        frame["probability"] = frame["probability_voted"] = vote(
            model, images, frame["probability"].to_numpy(), opts.neighbour_vote, batch_size)
        info["transductive"] = True
        notes.append(f"Neighbour vote (transductive): each cell took the mean probability of "
                     f"its {int(opts.neighbour_vote)} nearest scored cells (itself included) "
                     "in the model's penultimate features, so a cell's score depends on the "
                     "other cells scored with it.")
    return frame, notes, info


_ADAPT_NOTES = {
    "set": "Test-time BN adaptation on the whole scored set (transductive): batch-norm "
           "statistics were re-estimated on these cells before scoring them, so a cell's "
           "score depends on the other cells scored with it. Weights were not changed.",
    "patient": "Test-time BN adaptation per patient (transductive): batch-norm statistics "
               "were re-estimated on each patient's cells. Every C-NMC patient is a single "
               "class, so per-patient statistics can erase the between-patient difference "
               "that carries the label."}


def measurements(frame: pd.DataFrame, threshold: float, calibrated: bool) -> dict:
    """metrics.json entries that change nothing: patients (ids known) and calibration
    (labels: ECE, Brier and NLL of the final probabilities, and of the model's own ones
    when a temperature was applied)."""
    out = {}
    labeled = "label" in frame and (frame["label"] >= 0).all()
    if patients.patient_ids_known(frame):
        table = patients.patient_table(frame["patient_id"], frame["probability"],
                                       frame["label"] if labeled else None, threshold)
        out["patients"] = {"count": int(len(table)),
                           "called_all": int(table["call"].sum()),
                           "accuracy": patients.patient_accuracy(table) if labeled else None}
    if labeled:
        summary = calibration.calibration_summary(frame["probability"], frame["label"])
        if calibrated:   # the temperature step alone: its input and its output
            before = frame.get("probability_adapted", frame["probability_model"])
            summary["uncalibrated"] = calibration.calibration_summary(before, frame["label"])
            summary["calibrated"] = calibration.calibration_summary(
                frame["probability_calibrated"], frame["label"])
        out["calibration"] = summary
    return out


def apply_inference_options(predictor, scores: pd.DataFrame, cfg, trained, manifest: dict,
                            sel, threshold: float) -> Tuple[pd.DataFrame, List[str], dict]:
    """evaluate's hook: the options of `cfg` (an EvalConfig) on a split's scores.

    Args:
      predictor: what scored `scores` (its `.path` names the model.keras to load).
      cfg: the EvalConfig (its `inference` section, `shortcut_probe`, records and batch).
      trained: the run(s) of the predictor (`.path`, `.config`: evaluation.trained_run).
      sel: the pipeline Selection that was scored.
      threshold: the operating threshold (patient calls).

    Returns:
      (frame, report notes, metrics.json entries: "options", "patients", "calibration",
      "shortcut_probe" and "before_options" where they apply).
    """
    opts = cfg.inference
    size, batch = predictor.image_size, cfg.batch_size

    def score_split(name):
        return scoring.score_selection(predictor, cfg.records_dir, manifest,
                                       manifest_lib.parse_val_split(name), cfg.tta, batch,
                                       cfg.progress)

    frame, notes, info = transform(
        scores, opts, predictor=predictor, tta=cfg.tta, batch_size=batch,
        read_images=lambda: cells.read_images(cfg.records_dir, manifest, sel, size, batch),
        run_dir=trained[0].path if len(trained) == 1 else None, split=cfg.split,
        score_split=score_split)
    out = {"options": info, **measurements(frame, threshold, opts.calibrate != "none")}
    if "probability_model" in frame:
        before = metrics.classification_metrics(frame["label"], frame["probability_model"],
                                                threshold)
        out["before_options"] = {k: before[k] for k in ("weighted_f1", "accuracy",
                                                        "balanced_accuracy", "roc_auc")}
    if cfg.shortcut_probe and (frame["label"] >= 0).all():
        try:
            out["shortcut_probe"] = cells.probe(cfg.records_dir, manifest, sel, size, batch,
                                                [t.config for t in trained], frame)
        except shortcut.ShortcutError as e:   # e.g. one class or one patient to fit on
            notes.append(f"Shortcut probe not run: {e}.")
    return frame, notes, out


def apply_to_predictions(predictor, table: pd.DataFrame, opts: config_lib.InferenceConfig,
                         read_images, tta: str, batch_size: int
                         ) -> Tuple[pd.DataFrame, List[str]]:
    """predict's hook: the score-changing options on a predictions table (file,
    probability, path). Patients come from the file names (`UID_<patient>_...`);
    --calibrate takes only 'run' here (no labels to fit on)."""
    if opts.calibrate not in config_lib.PREDICT_CALIBRATE:
        raise OptionsError("predict takes --calibrate=none|run (fit a temperature on a "
                           "labeled split with evaluate --calibrate=<split>)")
    ids = patients.name_patient_ids(table["file"])
    frame = table.assign(source_path=table["path"], patient_id=ids or "")
    run = (None if hasattr(predictor, "member_paths")
           else provenance.run_dir(str(predictor.path)))
    frame, notes, _ = transform(frame, opts, predictor=predictor, tta=tta,
                                batch_size=batch_size, read_images=read_images, run_dir=run)
    return frame.drop(columns=["source_path", "patient_id"]), notes
