"""What the trainer checks before it writes anything, and how it names a bad shard.

- The config: every setting in range and every name known (`validate_config`), so a
  typo fails in a second, not after the model dir was touched.
- The records: the manifest exists and parses (`data.manifest.load`, which also keeps
  every shard path inside the records dir); its sha256 is pinned and checked after every
  epoch and before the export (`check_pinned`); every shard the run reads exists, has the
  manifest's size and, for local shards, the manifest's record count. Counting walks the
  TFRecord length headers (12 bytes read per record, no payload), so it costs
  milliseconds; remote shards (gs://) are checked by size only, because each header
  would be one more request.
- A corrupt record met during training (`DataLossError`, which names no file) is traced
  to its shard by re-reading the run's shards (`corrupt_shard_error`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from leukemia_tf import io
from leukemia_tf.config import Config, DataConfig
from leukemia_tf.data import duplicates, grouping
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.model import registry
from leukemia_tf.training import distribution, objectives
from leukemia_tf.training.trainer_errors import InputError

log = logging.getLogger("leukemia_tf.training")

_POSITIVE = ("epochs", "batch_size", "steps_per_execution")
_NON_NEGATIVE = ("steps_per_epoch", "warmup_epochs", "weight_decay", "focal_gamma",
                 "backup_every_steps", "early_stopping_patience", "cpu_devices",
                 "inter_op_threads", "intra_op_threads")


def validate_config(cfg: Config) -> None:
    """Raise ValueError naming the flag for any setting out of range (no I/O)."""
    t, d = cfg.train, cfg.data
    if not t.model_dir or not d.records_dir:
        raise ValueError("records_dir and model_dir are required")
    for name in _POSITIVE:
        if getattr(t, name) < 1:
            raise ValueError(f"--{name} must be at least 1, not {getattr(t, name)}")
    for name in _NON_NEGATIVE:
        if getattr(t, name) < 0:
            raise ValueError(f"--{name} must not be negative, not {getattr(t, name)}")
    # 0 is allowed: nothing moves, the export holds the initial (e.g. ImageNet) weights.
    if not (t.learning_rate >= 0 and math.isfinite(t.learning_rate)):
        raise ValueError(f"--learning_rate must be a number >= 0, not {t.learning_rate}")
    if not 0 <= t.label_smoothing < 1:
        raise ValueError(f"--label_smoothing must be in [0, 1), not {t.label_smoothing}")
    for flag, value, choices in (
            ("schedule", t.schedule, objectives.SCHEDULES),
            ("optimizer", t.optimizer, objectives.OPTIMIZERS),
            ("loss", t.loss, objectives.LOSSES),
            ("strategy", t.strategy, distribution.STRATEGIES),
            ("mixed_precision", t.mixed_precision, distribution.PRECISIONS),
            ("class_balance", d.class_balance, ("weights", "resample", "none")),
            ("jit_compile", str(t.jit_compile).lower(), ("auto", "on", "off", "true", "false"))):
        if value not in choices:
            raise ValueError(f"--{flag}={value} is not one of {', '.join(choices)}")
    if cfg.model.name not in registry.MODELS:
        raise ValueError(f"--model={cfg.model.name} is not one of "
                         f"{', '.join(sorted(registry.MODELS))}")
    if d.image_size < 1:
        raise ValueError(f"--image_size must be at least 1, not {d.image_size}")
    if not d.train_folds:
        raise ValueError("--train_folds is empty")
    if t.monitor == "last" and t.early_stopping_patience:
        raise ValueError("--early_stopping_patience needs a validation --monitor "
                         "(val_auc, val_loss or val_weighted_f1), not last")


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
    """(manifest, sha256 of its bytes) through `data.manifest.load`, the loader every
    reader uses; InputError naming the folder or file that is missing or broken."""
    from leukemia_tf.data import manifest as manifest_file
    if not io.isdir(records_dir):
        raise InputError(f"records dir {records_dir} does not exist (convert the images "
                         "first: leukemia-convert)")
    try:
        pinned = manifest_file.fingerprint(records_dir)
        manifest = manifest_file.load(records_dir)
        if manifest_file.fingerprint(records_dir) != pinned:
            raise manifest_file.ManifestError(
                f"the manifest changed while it was read (a converter at work?), "
                f"{manifest_file.manifest_path(records_dir)}")
    except manifest_file.ManifestError as e:
        raise InputError(str(e)) from None
    return manifest, pinned


def check_pinned(records_dir: str, pinned: str) -> None:
    """InputError when manifest.json is no longer the one the run started with: a
    re-conversion under a running trainer would mix two datasets in one model."""
    from leukemia_tf.data import manifest as manifest_file
    path = manifest_file.manifest_path(records_dir)
    try:
        now = manifest_file.fingerprint(records_dir)
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
    import tf_keras as keras

    class ManifestPin(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            check_pinned(records_dir, pinned)

    return ManifestPin()


def prepare(cfg: Config) -> Inputs:
    """Load and check the records of a run; raises InputError or ValueError."""
    d = cfg.data
    manifest, pinned = load_manifest(d.records_dir)
    train_sel = manifest_lib.Selection("train", tuple(d.train_folds))
    val_sel = manifest_lib.parse_val_split(d.val_split, d.train_folds)
    if (val_sel.split == "train" and set(val_sel.folds) & set(train_sel.folds)
            and not d.cv_assignment):  # grouped CV filters the folds' records instead
        raise ValueError(f"validation fold {val_sel.folds} is also a training fold "
                         f"{train_sel.folds}: choose --train_folds without it")
    for sel in (train_sel, val_sel):
        check_shards(d.records_dir, manifest_lib.shards_for(manifest, d.records_dir, sel))
    n_train = grouping.count_examples(manifest, train_sel, d, training=True)
    n_val = grouping.count_examples(manifest, val_sel, d, training=False)
    if n_train < cfg.train.batch_size:
        raise ValueError(f"{n_train} training examples < global batch {cfg.train.batch_size}")
    leaks = duplicates.leaked_groups(manifest, d.train_folds, d.val_split)
    return Inputs(manifest, train_sel, val_sel, n_train, n_val, leaks, pinned)


def check_shards(records_dir: str, shards: Sequence[dict]) -> None:
    """Each shard exists, has the manifest's size and (local) its record count."""
    for shard in shards:
        path = shard["full_path"]
        if not io.exists(path):
            raise InputError(f"shard {path} is missing (listed in {records_dir}/manifest.json)")
        size = io.size(path)
        if "bytes" in shard and size != shard["bytes"]:
            raise InputError(f"shard {path} is {size} bytes, the manifest says "
                             f"{shard['bytes']}: truncated or replaced; convert again")
        if io.is_url(path):
            continue
        count, problem = count_records(path)
        if problem:
            raise InputError(f"shard {path} is corrupt or truncated: {problem}")
        if count != shard["num_examples"]:
            raise InputError(f"shard {path} holds {count} records, the manifest says "
                             f"{shard['num_examples']}: the manifest does not match the "
                             "shards; convert again")


def count_records(path: str) -> Tuple[int, Optional[str]]:
    """(records, problem) from the TFRecord framing: 8-byte length, 4-byte CRC, payload,
    4-byte CRC. Reads 12 bytes per record; CRCs are not checked (training does)."""
    total = io.size(path)
    n, pos = 0, 0
    with io.open_file(path, "rb") as f:
        while pos < total:
            header = f.read(12)
            if len(header) < 12:
                return n, f"a partial record header at byte {pos}"
            (length,) = struct.unpack("<Q", header[:8])
            pos += 12 + length + 4
            if pos > total:
                return n, f"record {n} runs past the end of the file ({total} bytes)"
            f.seek(pos)
            n += 1
    return n, None


def corrupt_shard_error(records_dir: str, shards: List[dict],
                        error: Exception) -> Optional[InputError]:
    """Re-read `shards` to find the one behind a DataLossError; None if all read fine."""
    for shard in shards:
        n = 0
        try:
            for _ in tf.data.TFRecordDataset(shard["full_path"]):
                n += 1
        except tf.errors.DataLossError as e:
            return InputError(f"shard {shard['full_path']} is corrupt after {n} good records "
                              f"({e.message.splitlines()[0]}): convert again")
    return None


def class_weights(inputs: Inputs, data: DataConfig) -> Dict[int, float]:
    """Balanced class weights of the run's training records (see objectives)."""
    return objectives.class_weights(grouping.label_counts(inputs.manifest, inputs.train_sel,
                                                          data))
