"""Prediction on records or image files, ordered like the final-test numbering.

`run(cfg)` predicts what a PredictConfig names; `write(cfg, table, errors)` writes the
CSV, its errors file and (file names carrying patients) the per-patient calls.

Image files of any size are read through `leukemia_tf.io`, decoded, and made into model
input by `preprocess.to_model_input` with the model's own saved spec (canvas, size,
resize method): the function the training pipeline and the exported `serving_raw`
signature use too.

The predictions CSV has exactly these columns:
  file         the image's file name (final-test numbering order: 1.bmp, 2.bmp, ...)
  probability  the model's probability of ALL (label 1), TTA-averaged if asked
  prediction   1 (ALL) when probability >= threshold, else 0 (hem); as in an
               evaluation's predictions.csv, where `label` is the truth
  path         where the image came from: the file's path, or for records the source
               path relative to the C-NMC tree (tells apart equal names in two folders)
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf

from leukemia_tf import io, provenance
from leukemia_tf.config import InferenceConfig, PredictConfig
from leukemia_tf.data import cnmc, images, preprocess
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.evaluation import output_rules
from leukemia_tf.evaluation.output_rules import errors_path, patients_path
from leukemia_tf.inference import cells, ensemble, options, scoring
from leukemia_tf.metrics import patients
from leukemia_tf.reports import option_sections

COLUMNS = ("file", "probability", "prediction", "path")
_SPLIT_FOLDERS = {"train": "training_data/", "validation": "validation_data/",
                  "test": "testing_data/"}


def natural_key(name: str):
    """`2.bmp` < `10.bmp`: numbers compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(inputs: Sequence[str]) -> List[str]:
    """Files given directly, or every image file under given folders (a file name that
    holds commas may arrive split: `io.rejoin_commas`)."""
    files = []
    for item in io.rejoin_commas(inputs):
        if io.isdir(item):
            for d, _, names in io.walk(item):
                files += [io.join(d, n) for n in names
                          if n.lower().endswith(cnmc.IMAGE_EXTENSIONS)]
        elif io.exists(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return sorted(files, key=lambda p: natural_key(io.basename(p)))


def load_image(path: str, spec: preprocess.Spec) -> np.ndarray:
    """Read -> decode (BMP/PNG/JPEG) -> `preprocess.to_model_input` -> uint8 [S, S, 3]."""
    pixels = images.decode(io.read_bytes(path))
    return preprocess.function_for(spec)(tf.constant(pixels)).numpy()


def predict_files(predictor, files: Sequence[str], tta: str, batch_size: int
                  ) -> Tuple[pd.DataFrame, list]:
    """Probabilities for image files; unreadable files are listed, not fatal."""
    rows, errors, batch, names = [], [], [], []

    def flush():
        if batch:
            probs = scoring.predict_batch(predictor, np.stack(batch), tta)
            rows.extend(zip(names, probs))
            batch.clear()
            names.clear()

    for path in files:
        try:
            batch.append(load_image(path, predictor.spec))
            names.append(path)
        except (images.ImageError, OSError, tf.errors.OpError) as e:
            errors.append({"file": io.basename(path), "path": path, "reason": str(e)})
        if len(batch) >= batch_size:
            flush()
    flush()
    table = pd.DataFrame(rows, columns=["path", "probability"])
    table.insert(0, "file", table["path"].map(io.basename))
    return table, errors


def records_selection(records_dir: str, split: str) -> Tuple[dict, "manifest_lib.Selection"]:
    """(manifest, selection) of `split` in a records dir; checked before a model loads.

    Raises:
      ValueError: an unknown split name, or a split without images (named, with the
        splits that have some).
    """
    manifest = manifest_lib.load(records_dir)
    if split != "test" and split != "validation" and not (
            split.startswith("fold") and split[4:].isdigit()):
        raise ValueError(f"--split must be test, validation or fold<k>, not {split!r}")
    sel = manifest_lib.Selection(split) if split in ("test", "validation") else \
        manifest_lib.parse_val_split(split)
    check_split(manifest, records_dir, sel, split)
    return manifest, sel


def _predict_records(predictor, records_dir: str, split: str, tta: str, batch_size: int
                     ) -> Tuple[pd.DataFrame, list]:
    manifest, sel = records_selection(records_dir, split)
    preprocess.check_records(predictor.spec, manifest["settings"], records_dir)
    scores = scoring.score_selection(predictor, records_dir, manifest, sel, tta, batch_size)
    table = pd.DataFrame({"file": scores["source_path"].map(io.basename),
                          "probability": scores["probability"],
                          "path": scores["source_path"]})
    errors = [{"file": io.basename(s["path"]), "path": s["path"],
               "reason": f"skipped at conversion: {s['reason']}"}
              for s in manifest.get("skipped", [])
              if s["path"].startswith(_SPLIT_FOLDERS[sel.split])]
    return table, errors


def splits_with_images(manifest: dict) -> List[str]:
    """`--split` values that have images in these records: validation, test, fold<k>."""
    out = [name for name in ("validation", "test")
           if manifest["splits"].get(name, {}).get("num_examples")]
    folds = manifest["splits"].get("train", {}).get("by_fold", {})
    return out + [f"fold{k}" for k, n in folds.items() if n]


def check_split(manifest: dict, records_dir: str, sel, split: str) -> None:
    """Raises ValueError naming the splits that have images when `split` has none."""
    if any(s["num_examples"] for s in manifest["shards"] if s["split"] == sel.split and
           (sel.folds is None or s.get("fold") in sel.folds)):
        return
    have = splits_with_images(manifest)
    why = " (the C-NMC tree it was converted from had no testing_data/)" \
        if split == "test" else ""
    raise ValueError(f"{records_dir} has no {split} images{why}; splits with images: "
                     f"{', '.join(have) or 'none'}. Predict one of them with --split=<name> "
                     "(e.g. --split=validation), or pass image files or a folder as --input")


def predict(model_path: str, inputs: Sequence[str], split: str = "test", tta: str = "none",
            threshold: float = 0.5, batch_size: int = 64, trust_saved_model: bool = False,
            opts: Optional[InferenceConfig] = None, allow_other_model: bool = False
            ) -> Tuple[pd.DataFrame, list]:
    """Returns (table with COLUMNS, errors by file).

    Args:
      model_path: a model dir, export/ dir or .keras file; its preprocessing.json (or the
        SavedModel's spec) says how images become input. Several, comma-separated: an
        ensemble, the mean of their probabilities (same preprocessing required).
      inputs: one records dir (has manifest.json), or image files and folders.
      split: the records' split to predict (test, validation, fold<k>).
      trust_saved_model: allow a SavedModel (it runs its own graph; README "Trust
        boundary").
      opts: the inference options (BN adaptation, --calibrate=run, neighbour vote).
      allow_other_model: predict with a model.keras its run's summary.json does not name
        (else ProvenanceError); the log names the network really loaded.
    """
    inputs = list(inputs)
    from_records = len(inputs) == 1 and io.exists(io.join(inputs[0], manifest_lib.MANIFEST))
    if from_records:
        records_selection(inputs[0], split)  # a missing split fails before the model loads
    checked = provenance.check_models(ensemble.split_paths(model_path), allow_other_model)
    predictor = ensemble.load(model_path, batch_size=batch_size,
                              trust_saved_model=trust_saved_model)
    provenance.log_other_model(checked, predictor)
    if from_records:
        table, errors = _predict_records(predictor, inputs[0], split, tta, batch_size)
    else:
        files = list_images(inputs)
        if not files:
            raise ValueError(f"no image files in {inputs}")
        table, errors = predict_files(predictor, files, tta, batch_size)
    if opts is not None:
        table = _apply_options(predictor, table, opts, inputs, split, tta, batch_size)
    table["prediction"] = (table["probability"] >= threshold).astype(int)
    order = sorted(range(len(table)), key=lambda i: natural_key(table["file"].iloc[i]))
    table = table.iloc[order].reset_index(drop=True)
    return table[list(COLUMNS)], errors


def _apply_options(predictor, table, opts, inputs, split, tta, batch_size):
    def read_images():
        if io.exists(io.join(inputs[0], manifest_lib.MANIFEST)):
            manifest, sel = records_selection(inputs[0], split)
            return cells.read_images(inputs[0], manifest, sel, predictor.image_size,
                                     batch_size)
        paths = list(table["path"])
        return np.stack([load_image(p, predictor.spec) for p in paths]), paths
    table, _ = options.apply_to_predictions(predictor, table, opts, read_images, tta,
                                            batch_size)
    return table


def check_output(output: str) -> None:
    """UserError when `output` cannot be the CSV to write (an existing folder); the
    command line checks all of `output_rules` before TensorFlow loads."""
    if io.isdir(output):
        output_rules.check(output, [])


def write_outputs(table: pd.DataFrame, errors: list, output: str) -> Optional[str]:
    """Write the predictions CSV and, if any, the errors CSV (both through io).

    A stale `<output>.errors.csv` from an earlier run is removed, so the errors file
    always belongs to the predictions beside it. Returns the errors path or None.
    """
    check_output(output)
    io.write_csv(output, table)
    path = errors_path(output)
    io.remove(path)
    if not errors:
        return None
    io.write_csv(path, pd.DataFrame(errors, columns=["file", "path", "reason"]))
    return path


def write_patient_csv(table: pd.DataFrame, threshold: float, output: str):
    """The per-patient CSV (`patients_path(output)`) when every file name carries its
    patient; a stale one from an earlier run is removed. Returns the path or None."""
    path = patients_path(output)
    io.remove(path)
    ids = patients.name_patient_ids(table["file"]) if len(table) else None
    if ids is None:
        return None
    frame = pd.DataFrame({"patient_id": ids, "probability": table["probability"]})
    io.write_csv(path, option_sections.patient_frame(frame, threshold))
    return path


def run(cfg: PredictConfig) -> Tuple[pd.DataFrame, list]:
    """`predict` with the settings of `cfg`, after checking that `cfg.output` can be the
    CSV; returns (table with COLUMNS, errors by file)."""
    check_output(cfg.output)
    return predict(cfg.model_dir, list(cfg.input), split=cfg.split, tta=cfg.tta,
                   threshold=cfg.threshold, batch_size=cfg.batch_size,
                   trust_saved_model=cfg.trust_saved_model, opts=cfg.inference,
                   allow_other_model=cfg.allow_other_model)


def write(cfg: PredictConfig, table: pd.DataFrame, errors: list
          ) -> Tuple[Optional[str], Optional[str]]:
    """Write `run`'s answer to cfg.output; returns (errors CSV, per-patient CSV), each the
    path or None."""
    path = write_outputs(table, errors, cfg.output)
    return path, write_patient_csv(table, cfg.threshold, cfg.output)
