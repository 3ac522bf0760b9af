"""Score a split exactly once, optionally with test-time augmentation (TTA).

`predict_fn` is any callable uint8 [B,S,S,3] -> probabilities [B] (an in-memory model,
an exported SavedModel, a loaded `.keras` file), so training, evaluation and prediction
share one scoring loop.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, List, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

TTA_MODES = ("none", "flips", "dihedral8")


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


class _Progress:
    """tqdm on a terminal; otherwise a plain line every `every` batches (no carriage-return
    spam in logs), and always a summary line at the end. Lines go to stderr."""

    def __init__(self, desc: str, total: Optional[int], every: int, stream=None):
        self.desc, self.total, self.every = desc, total, max(1, every)
        self.stream = stream or sys.stderr
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="batch", desc=desc, file=self.stream)
        self.batches = self.images = 0
        self.start = time.perf_counter()

    def update(self, images: int) -> None:
        self.batches += 1
        self.images += images
        if self.bar is not None:
            self.bar.update(1)
        elif self.batches % self.every == 0:
            of = f"/{self.total}" if self.total else ""
            print(f"{self.desc}: batch {self.batches}{of}, {self.images} images",
                  file=self.stream, flush=True)

    def close(self) -> str:
        if self.bar is not None:
            self.bar.close()
        seconds = time.perf_counter() - self.start
        rate = self.images / seconds if seconds > 0 else 0.0
        line = (f"{self.desc}: scored {self.images} images in {self.batches} batches, "
                f"{seconds:.1f} s ({rate:.1f} images/s)")
        print(line, file=self.stream, flush=True)
        return line


def score_dataset(predict_fn: Callable, ds: tf.data.Dataset, tta: str = "none",
                  progress: bool = False, total_batches: Optional[int] = None,
                  desc: str = "score", every: int = 20, stream=None) -> pd.DataFrame:
    """Run over a metadata dataset (see pipeline.make_dataset(with_metadata=True)).

    Args:
      progress: show progress (tqdm on a terminal, else a line every `every` batches)
        and end with a summary line, on `stream` (default stderr).
      total_batches: the expected number of batches, for the progress display.

    Returns one row per example: source_path, patient_id, label (-1 unlabeled),
    probability.
    """
    rows = {"source_path": [], "patient_id": [], "label": [], "probability": []}
    shown = _Progress(desc, total_batches, every, stream) if progress else None
    for batch in ds:
        probs = predict_batch(predict_fn, batch["image"], tta)
        rows["probability"].append(probs)
        rows["label"].append(batch["label"].numpy().reshape(-1))
        rows["source_path"] += [p.decode() for p in batch["source_path"].numpy()]
        rows["patient_id"] += [p.decode() for p in batch["patient_id"].numpy()]
        if shown is not None:
            shown.update(len(probs))
    if shown is not None:
        shown.close()
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
