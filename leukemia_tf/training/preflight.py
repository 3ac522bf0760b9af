"""What the trainer checks before it writes anything, and how it names a bad shard.

- The config: every declared choice and range (`config.check`, read from the fields of
  config.py) and the rules that span settings (`check_config`), so a typo fails in a
  second, not after the model dir was touched.
- The records: the manifest exists and parses (`data.manifest.load_pinned`, which also
  keeps every shard path inside the records dir), read once per run: its fingerprint is pinned
  and checked after every epoch and before the export (`check_pinned`); the folds exist
  and the split that chooses the best epoch is not trained on (`check_folds`); every
  shard the run reads exists, has the manifest's size and, for local shards, the
  manifest's record count. Counting walks the TFRecord length headers (12 bytes read per
  record, no payload), so it costs milliseconds; remote shards (gs://) are checked by
  size only, because each header would be one more request.
- A corrupt record met during training (`DataLossError`, which names no file) is traced
  to its shard by re-reading the run's shards (`data.shard_check.corrupt_shard_error`).

No TensorFlow at import: the trainer's entry point runs these checks before it loads.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import Optional, Sequence, Tuple

from leukemia_tf import config as config_lib
from leukemia_tf import io
from leukemia_tf import model as model_names
from leukemia_tf.config import Config, DataConfig
from leukemia_tf.data import duplicates, grouping, shard_check
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.training.trainer_errors import InputError

log = logging.getLogger("leukemia_tf.training")


def check_config(cfg: Config) -> None:
    """Raise ValueError naming the flag for any setting out of range (no I/O)."""
    t, d = cfg.train, cfg.data
    if not t.model_dir or not d.records_dir:
        raise ValueError("records_dir and model_dir are required")
    try:
        config_lib.check(_comparable(cfg))
    except config_lib.ConfigError as e:  # `train.epochs must ...` -> `--epochs must ...`
        raise config_lib.ConfigError(re.sub(r"^(\w+\.)+", "--", str(e)), e.path) from None
    if cfg.model.name not in model_names.NAMES:
        raise ValueError(f"--model={cfg.model.name} is not one of "
                         f"{', '.join(sorted(model_names.NAMES))}")
    if not d.train_folds:
        raise ValueError("--train_folds is empty")
    if t.monitor == "last" and t.early_stopping_patience:
        raise ValueError("--early_stopping_patience needs a validation --monitor "
                         "(val_auc, val_loss or val_weighted_f1), not last")


def _comparable(cfg: Config) -> Config:
    """`cfg` with a jit_compile of older config.json files (true/false) as on/off."""
    jit = str(cfg.train.jit_compile).lower()
    if jit in ("true", "false"):
        return config_lib.replace(cfg, train={"jit_compile": "on" if jit == "true" else "off"})
    return cfg


def check_folds(d: DataConfig, folds: Optional[Sequence[int]]) -> None:
    """ConfigError (a ValueError and a UserError) unless every training fold is one of
    `folds` (the records' training folds; None: not known yet) and the split that chooses
    the best epoch is not trained on (grouped CV filters the folds' records instead)."""
    missing = [f for f in d.train_folds if folds is not None and f not in folds]
    if missing:
        raise config_lib.ConfigError(
            f"--train_folds: there is no fold {', '.join(map(str, missing))} in "
            f"{d.records_dir} (folds: {', '.join(map(str, folds))})", "data.train_folds")
    if d.cv_assignment:
        return
    if d.val_split == "cv":  # the held-out part needs the CV assignment
        trained = tuple(d.train_folds)
        raise config_lib.ConfigError(f"validation fold {trained} is also a training fold "
                                     f"{trained}: choose --train_folds without it",
                                     "data.val_split")
    k = d.val_split[4:] if d.val_split.startswith("fold") else ""
    if k.isdigit() and int(k) in d.train_folds:
        rest = ",".join(str(f) for f in d.train_folds if f != int(k))
        raise config_lib.ConfigError(
            f"--split={d.val_split} is also a training fold (--train_folds="
            f"{','.join(map(str, d.train_folds))}): a split that chooses the best epoch "
            f"must not be trained on; use "
            f"{f'--train_folds={rest}' if rest else 'other --train_folds'} or another --split",
            "data.val_split")


@dataclasses.dataclass
class Inputs:
    """The records a run reads, checked against its manifest."""
    manifest: dict
    train_sel: object
    val_sel: object
    num_train: int
    num_val: int
    leaked_groups: int
    manifest_sha256: str = ""       # manifest.json as the run read it (`check_pinned`)


def load_manifest(records_dir: str) -> Tuple[dict, str]:
    """(manifest, its fingerprint) through `data.manifest.load_pinned`, the loader
    every reader uses; InputError naming the folder or file that is missing or broken."""
    if not io.isdir(records_dir):
        raise InputError(f"records dir {records_dir} does not exist (convert the images "
                         "first: leukemia-convert)")
    try:
        return manifest_lib.load_pinned(records_dir)
    except manifest_lib.ManifestError as e:
        raise InputError(str(e)) from None


def check_pinned(records_dir: str, pinned: str) -> None:
    """InputError when manifest.json is no longer the one the run started with: a
    re-conversion under a running trainer would mix two datasets in one model."""
    path = manifest_lib.manifest_path(records_dir)
    try:
        now = manifest_lib.fingerprint(records_dir)
    except OSError:
        now = None
    if now != pinned:
        raise InputError(
            f"{path} changed (or was removed) while this run trained: the records were "
            "converted again under it, so its epochs mixed two datasets; nothing was "
            "exported. Train again with --overwrite once the conversion is complete")


def manifest_pin(records_dir: str, pinned: str):
    """A Keras callback that runs `check_pinned` after every epoch (first in the list, so
    an epoch of mixed data is neither backed up nor kept as the best)."""
    import tf_keras as keras  # lazy: this module loads without TensorFlow

    class ManifestPin(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            check_pinned(records_dir, pinned)

    return ManifestPin()


def prepare(cfg: Config, loaded: Optional[Tuple[dict, str]] = None) -> Inputs:
    """Load (unless `loaded`: `load_manifest`'s pair, read by the caller) and check the
    records of a run; raises InputError or ValueError."""
    d = cfg.data
    manifest, pinned = loaded or load_manifest(d.records_dir)
    check_folds(d, manifest_lib.train_folds(manifest))
    train_sel = manifest_lib.Selection("train", tuple(d.train_folds))
    val_sel = manifest_lib.parse_val_split(d.val_split, d.train_folds)
    for sel in (train_sel, val_sel):
        shard_check.check_shards(d.records_dir,
                                 manifest_lib.shards_for(manifest, d.records_dir, sel),
                                 error=InputError)
    n_train = grouping.count_examples(manifest, train_sel, d, training=True)
    n_val = grouping.count_examples(manifest, val_sel, d, training=False)
    if n_train < cfg.train.batch_size:
        raise ValueError(f"{n_train} training examples < global batch {cfg.train.batch_size}")
    leaks = duplicates.leaked_groups(manifest, d.train_folds, d.val_split)
    return Inputs(manifest, train_sel, val_sel, n_train, n_val, leaks, pinned)
