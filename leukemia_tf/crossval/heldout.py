"""Scores of a pooled-CV run's held-out patients: every epoch, and the exported model
with the inference options.

A pooled study (crossval.run with cv="pooled") trains each fold with the cells of its
held-out patients removed and chooses nothing on them: the trainer's `--split` is a
selection split of other patients. To compare ways of choosing the epoch afterwards
(the last epoch, or the best by selection AUC, loss or weighted F1) without training
again, `EpochScores` scores the held-out cells *and* the selection cells at the end of
every epoch (`epoch_scores.csv`); `score_variants` scores the exported model's held-out
cells plain, with dihedral TTA and with BN statistics re-estimated on them
(`variants.csv`). The pooled tables are computed from these files (crossval.pooled).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tf_keras as keras

from leukemia_tf import io
from leukemia_tf.config import Config
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data import pipeline
from leukemia_tf.inference import adapt_bn, options, scoring
from leukemia_tf.inference import loading

EPOCH_SCORES = "epoch_scores.csv"
VARIANTS = "variants.csv"
HELD_OUT, SELECTION = "heldout", "selection"
# (name, BN statistics re-estimated on the held-out cells, TTA)
VARIANT_SPECS = (("plain", False, "none"), ("dihedral8", False, "dihedral8"),
                 ("adapt_bn", True, "none"), ("adapt_bn+dihedral8", True, "dihedral8"))


def held_out_data(cfg: Config):
    """(data section, selection) that reads exactly the run's held-out CV fold."""
    data = dataclasses.replace(cfg.data, val_split="cv")
    return data, manifest_lib.parse_val_split("cv", data.train_folds)


def _datasets(cfg: Config, manifest: dict, batch_size: int) -> dict:
    held, held_sel = held_out_data(cfg)
    sel = manifest_lib.parse_val_split(cfg.data.val_split, cfg.data.train_folds)
    return {HELD_OUT: pipeline.make_dataset(held, held_sel, training=False,
                                            batch_size=batch_size, manifest=manifest,
                                            cache="memory", with_metadata=True),
            SELECTION: pipeline.make_dataset(cfg.data, sel, training=False,
                                             batch_size=batch_size, manifest=manifest,
                                             cache="memory", with_metadata=True)}


class EpochScores(keras.callbacks.Callback):
    """Appends, at every epoch end, each held-out and selection cell's probability to
    `<model_dir>/epoch_scores.csv` (epoch from 1, set, source_path, patient_id, label,
    probability). Rows of epochs a resumed run repeats are replaced. One device or
    MirroredStrategy on one machine (the study's setting), chief only."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.path = io.join(cfg.train.model_dir, EPOCH_SCORES)
        self._cfg = cfg
        self._rows = None
        self._data = None

    def on_train_begin(self, logs=None):
        manifest = manifest_lib.load(self._cfg.data.records_dir)
        self._data = _datasets(self._cfg, manifest, self._cfg.train.batch_size)

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:
            self._rows = []
            if io.exists(self.path):
                old = io.read_csv(self.path, dtype={"patient_id": str})
                self._rows = [old[old["epoch"] <= epoch]]

    def on_epoch_end(self, epoch, logs=None):
        predict = scoring.keras_predict_fn(self.model)
        for name, ds in self._data.items():
            frame = scoring.score_dataset(predict, ds)
            self._rows.append(frame.assign(epoch=epoch + 1, set=name))
        io.write_csv(self.path, pd.concat(self._rows, ignore_index=True))


def score_variants(cfg: Config) -> pd.DataFrame:
    """The exported model (model.keras, loaded with the trust checks) on the held-out
    cells, once per VARIANT_SPECS entry (the BN ones only for a model with batch norm);
    written to `<model_dir>/variants.csv` with one probability column per variant."""
    md = cfg.train.model_dir
    model = options.keras_model(loading.load_model(md))
    manifest = manifest_lib.load(cfg.data.records_dir)
    data, sel = held_out_data(cfg)
    ds = pipeline.make_dataset(data, sel, training=False, batch_size=cfg.train.batch_size,
                               manifest=manifest, with_metadata=True)
    images, meta = [], {"source_path": [], "patient_id": [], "label": []}
    for batch in ds:
        images.append(batch["image"].numpy())
        for key in ("source_path", "patient_id"):
            meta[key] += [v.decode() for v in batch[key].numpy()]
        meta["label"] += [int(v) for v in batch["label"].numpy().reshape(-1)]
    images = np.concatenate(images)
    frame = pd.DataFrame(meta)
    predict = scoring.keras_predict_fn(model)
    batch = cfg.train.batch_size
    for name, adapt, tta in VARIANT_SPECS:
        if adapt and not adapt_bn.has_batch_norm(model):
            continue  # nothing to re-estimate (a model without BatchNormalization)
        if adapt:
            frame[name] = options.adapt(model, frame, images, "set", tta, batch)
        else:
            frame[name] = np.concatenate([scoring.predict_batch(predict, images[i:i + batch],
                                                                tta)
                                          for i in range(0, len(images), batch)])
    io.write_csv(io.join(md, VARIANTS), frame)
    return frame
