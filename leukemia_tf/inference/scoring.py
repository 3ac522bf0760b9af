"""Score a split exactly once, optionally with test-time augmentation (TTA).

`predict_fn` is any callable uint8 [B,S,S,3] -> probabilities [B] (an in-memory model,
an exported SavedModel, a loaded `.keras` file), so training, evaluation and prediction
share one scoring loop. `score_selection` scores a records selection (pipeline without
drop_remainder or repeat) and refuses any count other than the manifest's.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

from leukemia_tf import config as config_lib
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data import pipeline, preprocess
from leukemia_tf.inference import shards
from leukemia_tf.progress import Progress
from leukemia_tf.wording import count

TTA_MODES = config_lib.fields(config_lib.EvalConfig)["tta"].metadata["choices"]


def tta_views(images: tf.Tensor, mode: str) -> List[tf.Tensor]:
    """The batch as seen by each TTA view; cells have no orientation, so all are valid."""
    if mode == "none":
        return [images]
    if mode == "flips":
        return [images, tf.reverse(images, [2]), tf.reverse(images, [1]),
                tf.reverse(images, [1, 2])]
    if mode == "dihedral8":
        views = []
        for k in range(4):
            rotated = tf.image.rot90(images, k)
            views += [rotated, tf.reverse(rotated, [2])]
        return views
    raise ValueError(f"tta must be one of {TTA_MODES}, not {mode!r}")


def predict_batch(predict_fn: Callable, images, tta: str = "none") -> np.ndarray:
    """Mean probability over the TTA views of one uint8 batch."""
    views = [np.asarray(predict_fn(v), np.float32).reshape(-1) for v in
             tta_views(tf.convert_to_tensor(images), tta)]
    return np.mean(views, axis=0)


def score_dataset(predict_fn: Callable, ds: tf.data.Dataset, tta: str = "none",
                  progress: bool = False, total: Optional[int] = None,
                  desc: str = "score", interval: float = 30.0, stream=None) -> pd.DataFrame:
    """Run over a metadata dataset (see pipeline.make_dataset(with_metadata=True)).

    Args:
      progress: show progress (`progress.Progress`: tqdm on a terminal, else a line every
        `interval` seconds) and end with a summary line, on `stream` (default stderr).
      total: the expected number of images, for the progress display.

    Returns one row per example: source_path, patient_id, label (-1 unlabeled),
    probability.
    """
    rows = {"source_path": [], "patient_id": [], "label": [], "probability": []}
    shown = Progress(total, desc, unit="img", enabled=progress, stream=stream,
                     interval=interval)
    batches = 0
    for batch in ds:
        probs = predict_batch(predict_fn, batch["image"], tta)
        rows["probability"].append(probs)
        rows["label"].append(batch["label"].numpy().reshape(-1))
        rows["source_path"] += [p.decode() for p in batch["source_path"].numpy()]
        rows["patient_id"] += [p.decode() for p in batch["patient_id"].numpy()]
        shown.update(len(probs))
        batches += 1
    seconds = shown.seconds()
    rate = shown.done / seconds if seconds > 0 else 0.0
    shown.close(f"scored {count(shown.done, 'image')} in "
                f"{count(batches, 'batch', 'batches')}, {seconds:.1f} s ({rate:.1f} images/s)")
    out = pd.DataFrame({
        "source_path": rows["source_path"], "patient_id": rows["patient_id"],
        "label": np.concatenate(rows["label"]).astype(int) if rows["label"] else [],
        "probability": np.concatenate(rows["probability"]) if rows["probability"] else []})
    if out["source_path"].duplicated().any():
        raise RuntimeError("an image was scored twice: the evaluation pipeline is broken")
    return out


def keras_predict_fn(model) -> Callable:
    """A compiled inference function for an in-memory Keras model (no augmentation)."""
    size = model.input_shape[1]

    # One trace for every batch size (the last evaluation batch is usually smaller).
    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def fn(images):
        return tf.reshape(tf.cast(model(images, training=False), tf.float32), [-1])
    return fn


def score_selection(predictor, records_dir: str, manifest: dict, sel: manifest_lib.Selection,
                    tta: str, batch_size: int, progress: bool = False) -> pd.DataFrame:
    """Predictions for every record of a selection, at the predictor's input size."""
    # The model's saved preprocessing (canvas, resize) must be the records' one.
    preprocess.check_records(predictor.spec, manifest["settings"], records_dir)
    shards.check(records_dir, manifest, sel)  # a bad shard is named, as the trainer does
    data = config_lib.DataConfig(records_dir=records_dir, image_size=predictor.image_size)
    ds = pipeline.make_dataset(data, sel, training=False, batch_size=batch_size,
                               manifest=manifest, with_metadata=True)
    expected = manifest_lib.count_examples(manifest, sel)
    name = f"fold{sel.folds[0]}" if sel.split == "train" and len(sel.folds) == 1 else sel.name
    with shards.named(records_dir, manifest, sel):
        scores = score_dataset(predictor, ds, tta=tta, progress=progress,
                               total=expected, desc=f"score {name}")
    if len(scores) != expected:
        raise RuntimeError(f"scored {len(scores)} images of {sel.name}, manifest has {expected}")
    return scores
