"""The scored cells read again: their images (BN adaptation, neighbour vote), the
shortcut probe's hand features of the model's training cells, and the stored pixels of a
few named cells (the report's gallery).

Records are read through the evaluation pipeline (`pipeline.make_dataset`, one ordered
pass, at the model's input size), the same pixels the model scored; the gallery's few
cells are read at their stored size, filtered by source path before decoding.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf

from leukemia_tf import config as config_lib
from leukemia_tf.data import grouping, pipeline, records
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.inference import shards, shortcut

log = logging.getLogger(__name__)


def dataset(records_dir: str, manifest: dict, sel, image_size: int, batch_size: int):
    """One ordered pass over a selection with metadata (image, label, patient_id,
    source_path), every record once, no CV filter; a bad shard is named (`shards`)."""
    data = config_lib.DataConfig(records_dir=records_dir, image_size=image_size)
    shards.check(records_dir, manifest, sel)
    with shards.named(records_dir, manifest, sel):
        yield from pipeline.make_dataset(data, sel, training=False, manifest=manifest,
                                         batch_size=batch_size, with_metadata=True)


def read_images(records_dir: str, manifest: dict, sel, image_size: int, batch_size: int
                ) -> Tuple[np.ndarray, List[str]]:
    """(uint8 [N, S, S, 3], source paths) of a selection, in pipeline order."""
    images, paths = [], []
    for batch in dataset(records_dir, manifest, sel, image_size, batch_size):
        images.append(batch["image"].numpy())
        paths += [p.decode() for p in batch["source_path"].numpy()]
    return np.concatenate(images), paths


def read_features(records_dir: str, manifest: dict, sel, image_size: int, batch_size: int
                  ) -> pd.DataFrame:
    """The seven hand features (shortcut.FEATURE_NAMES) per record, with source_path,
    patient_id and label; images are not kept."""
    parts = []
    for batch in dataset(records_dir, manifest, sel, image_size, batch_size):
        part = pd.DataFrame(shortcut.features(batch["image"].numpy()),
                            columns=list(shortcut.FEATURE_NAMES))
        part["source_path"] = [p.decode() for p in batch["source_path"].numpy()]
        part["patient_id"] = [p.decode() for p in batch["patient_id"].numpy()]
        part["label"] = batch["label"].numpy().reshape(-1).astype(np.int64)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _training_cells(records_dir: str, manifest: dict, run_config: dict, image_size: int,
                    batch_size: int) -> Optional[pd.DataFrame]:
    """Features of the cells the run trained on: its train_folds, minus the held-out CV
    fold when it used a cv_assignment. None when the run config does not say."""
    data = run_config.get("data", {})
    folds = data.get("train_folds")
    if not folds:
        return None
    feats = read_features(records_dir, manifest, manifest_lib.Selection(
        "train", tuple(int(f) for f in folds)), image_size, batch_size)
    if data.get("cv_assignment"):
        table = grouping.read_assignment(data["cv_assignment"])
        fold = feats["source_path"].map(table.set_index("source_path")["cv_fold"])
        feats = feats[fold.fillna(-1).astype(int) != int(data.get("cv_fold", -1))]
    return feats[feats["label"] >= 0]


def probe(records_dir: str, manifest: dict, sel, image_size: int, batch_size: int,
          run_configs: Sequence[dict], frame: pd.DataFrame) -> dict:
    """The shortcut probe scored on the evaluated cells (`frame`: source_path, label).

    Fitted on the model's training cells when there is one run config that names them;
    otherwise (an ensemble, a bare export) cross-validated over the evaluated cells'
    patients, which `fitted_on` says.
    """
    evaluated = read_features(records_dir, manifest, sel, image_size, batch_size)
    evaluated = evaluated.set_index("source_path").loc[frame["source_path"]].reset_index()
    names = list(shortcut.FEATURE_NAMES)
    train = None
    if len(run_configs) == 1:
        train = _training_cells(records_dir, manifest, run_configs[0], image_size, batch_size)
    if train is not None and len(train):
        fitted = shortcut.fit_probe(train[names], train["label"])
        out = shortcut.score_probe(fitted, evaluated[names], evaluated["label"])
        out["fitted_on"] = "the model's training cells"
        out["num_train"] = int(len(train))
    else:
        out = shortcut.cross_validated_probe(evaluated[names], evaluated["label"],
                                             evaluated["patient_id"])
        out["fitted_on"] = (f"the evaluated cells, {out['folds']}-fold grouped by patient "
                            "(no single training run names its training cells)")
    out["features"] = names
    return out


def read_cells(records_dir: str, split: str, source_paths: Sequence[str]
               ) -> Dict[str, np.ndarray]:
    """The stored pixels (uint8 [H, W, 3]) of the named records of one split."""
    manifest = manifest_lib.load(records_dir)
    sel = manifest_lib.parse_val_split(split) if split != "test" else manifest_lib.Selection("test")
    files = [s["full_path"] for s in manifest_lib.shards_for(manifest, records_dir, sel)]
    wanted = tf.constant(sorted(set(source_paths)) or [""])
    decode = records.decoder(manifest["settings"]["encoding"],
                             int(manifest["settings"]["stored_size"] or 0))
    ds = tf.data.TFRecordDataset(files).map(records.parse_example)
    ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["image/source_path"], wanted)))
    ds = ds.map(lambda ex: (ex["image/source_path"], decode(ex)))
    with shards.named(records_dir, manifest, sel):
        return {path.numpy().decode(): image.numpy() for path, image in ds}
