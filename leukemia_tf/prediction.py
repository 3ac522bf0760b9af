"""Prediction on records or image files, ordered like the final-test numbering."""
from __future__ import annotations

import os
import re
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf

from leukemia_tf import export, scoring
from leukemia_tf.data import cnmc, images, pipeline
from leukemia_tf.data import manifest as manifest_file


_SPLIT_FOLDERS = {"train": "training_data/", "validation": "validation_data/",
                  "test": "testing_data/"}


def natural_key(name: str):
    """`2.bmp` < `10.bmp`: numbers compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(inputs: Sequence[str]) -> List[str]:
    """Files given directly, or every image file under given folders."""
    files = []
    for item in inputs:
        if tf.io.gfile.isdir(item):
            for d, _, names in tf.io.gfile.walk(item):
                files += [f"{d.rstrip('/')}/{n}" for n in names
                          if n.lower().endswith(cnmc.IMAGE_EXTENSIONS)]
        elif tf.io.gfile.exists(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return sorted(files, key=lambda p: natural_key(os.path.basename(p)))


def load_image(path: str, canvas: int, size: int) -> np.ndarray:
    """Read -> decode (BMP/PNG/JPEG) -> canvas (crop/pad) -> the pipeline's resize."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    pixels = images.to_canvas(images.decode(data), canvas)
    return pipeline.resize_uint8(tf.constant(pixels), size).numpy()


def predict_files(predictor, files: Sequence[str], canvas: int, tta: str, batch_size: int
                  ) -> Tuple[pd.DataFrame, list]:
    rows, errors, batch, names = [], [], [], []

    def flush():
        if batch:
            probs = scoring.predict_batch(predictor, np.stack(batch), tta)
            rows.extend(zip(names, probs))
            batch.clear()
            names.clear()

    for path in files:
        try:
            batch.append(load_image(path, canvas, predictor.image_size))
            names.append(path)
        except (images.ImageError, OSError, tf.errors.OpError) as e:
            errors.append({"file": os.path.basename(path), "path": path, "reason": str(e)})
        if len(batch) >= batch_size:
            flush()
    flush()
    table = pd.DataFrame(rows, columns=["path", "probability"])
    table.insert(0, "file", table["path"].map(os.path.basename))
    return table, errors


def predict(model_path: str, inputs: Sequence[str], split: str = "test", tta: str = "none",
            threshold: float = 0.5, canvas_size: int = 450, batch_size: int = 64
            ) -> Tuple[pd.DataFrame, list]:
    """Returns (table with file, probability, label [, path/patient], errors by file)."""
    predictor = export.load_model(model_path, batch_size=batch_size)
    inputs = list(inputs)
    if len(inputs) == 1 and tf.io.gfile.exists(f"{inputs[0].rstrip('/')}/{manifest_file.MANIFEST}"):
        from leukemia_tf import evaluation
        manifest = pipeline.load(inputs[0])
        sel = pipeline.Selection(split) if split in ("test", "validation") else \
            pipeline.parse_val_split(split)
        scores = evaluation.score_selection(predictor, inputs[0], manifest, sel, tta,
                                            batch_size)
        table = pd.DataFrame({"file": scores["source_path"].map(os.path.basename),
                              "probability": scores["probability"],
                              "source_path": scores["source_path"],
                              "patient_id": scores["patient_id"]})
        errors = [{"file": os.path.basename(s["path"]), "path": s["path"],
                   "reason": f"skipped at conversion: {s['reason']}"}
                  for s in manifest.get("skipped", [])
                  if s["path"].startswith(_SPLIT_FOLDERS[sel.split])]
    else:
        files = list_images(inputs)
        if not files:
            raise ValueError(f"no image files in {inputs}")
        table, errors = predict_files(predictor, files, canvas_size, tta, batch_size)
    table["label"] = (table["probability"] >= threshold).astype(int)
    order = sorted(range(len(table)), key=lambda i: natural_key(table["file"].iloc[i]))
    table = table.iloc[order].reset_index(drop=True)
    cols = ["file", "probability", "label"] + [c for c in table.columns
                                               if c not in ("file", "probability", "label")]
    return table[cols], errors
