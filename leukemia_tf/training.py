"""`run(cfg)`: train, checkpoint, export and summarise one model (no flags here).

Strategy, precision policy, optimizer, loss and metrics are chosen from the config; only
the chief writes logs, checkpoints and exports. BackupAndRestore lets a killed job resume
at the step where its last backup was taken.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import Config
from leukemia_tf.data import pipeline

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- devices and policy
def split_cpu(num_devices: int) -> None:
    """Expose the CPU as `num_devices` logical devices (test MirroredStrategy without GPUs)."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:  # runtime already initialised; fine if already split
        if len(tf.config.list_logical_devices("CPU")) < num_devices:
            raise RuntimeError(f"cannot split the CPU into {num_devices} devices: {e}") from e


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto | default | one_device | mirrored | multi_worker -> a tf.distribute strategy."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = sum(len(v) for k, v in tf_config.get("cluster", {}).items()
                  if k in ("chief", "worker"))
    # MultiWorkerMirroredStrategy configures collectives at runtime start-up: create it
    # before anything (even listing logical devices) initialises the TF context.
    if name == "multi_worker" or (name == "auto" and workers > 1):
        if workers < 1:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG with a cluster "
                             "(see README: several machines)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device" if len(gpus) == 1 else "default"
    if workers > 1:
        raise ValueError(f"TF_CONFIG describes {workers} workers but --strategy={name}; "
                         "use --strategy=multi_worker (or auto)")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(devices=[d.name for d in gpus])
        # CPU replicas (tests, CPU-only machines): CPU collectives keep process-global
        # instance keys, so a second strategy in one process would collide with the
        # first; reducing through one device avoids collectives altogether.
        return tf.distribute.MirroredStrategy(
            devices=[d.name for d in tf.config.list_logical_devices("CPU")],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}")


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The --strategy value that names this strategy."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    return "default"


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_precision(name: str) -> str:
    """auto: bf16 on Ampere+ GPUs, fp16 on compute capability 7.x, bf16 on CPUs with
    AVX-512-BF16/AMX, else float32."""
    if name != "auto":
        if name not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"unknown mixed precision policy {name!r}")
        return name
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        caps = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                for g in gpus]
        major = min(c[0] for c in caps)
        return "mixed_bfloat16" if major >= 8 else "mixed_float16" if major >= 7 else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


# ----------------------------------------------------------------- metrics and optimizer
@keras.saving.register_keras_serializable(package="leukemia_tf")
class WeightedF1(keras.metrics.Metric):
    """Support-weighted F1 over both classes at a threshold: the C-NMC challenge metric
    (sklearn `f1_score(average="weighted")`), from confusion counts summed over replicas."""

    def __init__(self, threshold: float = 0.5, name: str = "weighted_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.counts = self.add_weight("counts", shape=(4,), initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = tf.reshape(tf.cast(y_true, tf.float32), [-1]) > 0.5
        p = tf.reshape(tf.cast(y_pred, tf.float32), [-1]) >= self.threshold
        f = lambda c: tf.reduce_sum(tf.cast(c, tf.float32))  # noqa: E731
        self.counts.assign_add(tf.stack([f(y & p), f(~y & p), f(y & ~p), f(~y & ~p)]))

    def result(self):
        tp, fp, fn, tn = tf.unstack(self.counts)
        f1_pos = tf.math.divide_no_nan(2 * tp, 2 * tp + fp + fn)
        f1_neg = tf.math.divide_no_nan(2 * tn, 2 * tn + fn + fp)
        return tf.math.divide_no_nan(f1_pos * (tp + fn) + f1_neg * (tn + fp), tp + fp + fn + tn)

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def make_optimizer(cfg: Config, steps_per_epoch: int, precision: str):
    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    if t.schedule == "cosine":
        warm = min(int(t.warmup_epochs * steps_per_epoch), total - 1)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.learning_rate * (0.0 if warm else 1.0),
            decay_steps=max(1, total - warm), alpha=0.01,
            warmup_target=t.learning_rate if warm else None, warmup_steps=warm)
    elif t.schedule == "constant":
        lr = t.learning_rate
    else:
        raise ValueError(f"unknown schedule {t.schedule!r}")
    if t.optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    elif t.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {t.optimizer!r}")
    if precision == "mixed_float16":  # dynamic loss scaling keeps fp16 gradients finite
        opt = keras.mixed_precision.LossScaleOptimizer(opt)
    return opt


def make_loss(cfg: Config):
    t = cfg.train
    if t.loss == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=t.label_smoothing)
    if t.loss == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=t.focal_gamma,
                                                    label_smoothing=t.label_smoothing)
    raise ValueError(f"unknown loss {t.loss!r}")


def make_metrics():
    return [keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall"),
            keras.metrics.AUC(name="auc"), WeightedF1()]


# ----------------------------------------------------------------- callbacks
class _Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore every N steps *and* at every epoch end."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._backup(epoch=epoch)


class _BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Best weights by a validation metric; the best value survives a restart."""

    def __init__(self, model_dir: str, monitor: str, chief: bool):
        self._state = f"{model_dir}/best/state.json"
        super().__init__(f"{model_dir}/best/weights", monitor=monitor, mode="max",
                         save_best_only=True, save_weights_only=True, verbose=0)
        self._chief = chief

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if tf.io.gfile.exists(self._state):
            with tf.io.gfile.GFile(self._state) as f:
                self.best = json.load(f)["best"]

    def on_epoch_end(self, epoch, logs=None):
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before and self._chief:
            with tf.io.gfile.GFile(self._state, "w") as f:
                json.dump({"best": float(self.best), "epoch": epoch + 1,
                           "monitor": self.monitor}, f)


class _Progress(keras.callbacks.Callback):
    """Images/s (first epoch's compile excluded), resume point and NaN guard."""

    def __init__(self, global_batch: int):
        super().__init__()
        self.global_batch = global_batch
        self.resumed_from_step = 0
        self.first_epoch = None
        self.nan_at = None
        self._steps, self._seconds, self._t0, self._epoch_steps = 0, 0.0, None, 0
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:  # after BackupAndRestore has restored the counters
            self.first_epoch = epoch
            self.resumed_from_step = int(self.model.optimizer.iterations.numpy())
        self._epoch_steps, self._epoch_seconds = 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        dt = time.perf_counter() - self._t0
        self._epoch_steps += 1
        if self._epoch_steps > 2:  # skip tracing/compilation and pipeline warm-up steps
            self._steps += 1
            self._seconds += dt
            self._epoch_seconds += dt
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.nan_at = (batch, float(loss))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._epoch_steps > 2 and self._epoch_seconds > 0:
            rate = (self._epoch_steps - 2) * self.global_batch / self._epoch_seconds
            logs["images_per_sec"] = rate
            self.rates.append(rate)

    @property
    def images_per_sec(self) -> Optional[float]:
        return self._steps * self.global_batch / self._seconds if self._seconds else None


class _CsvHistory(keras.callbacks.Callback):
    """history.csv that stays right across restarts: rows of epochs that a resumed run
    repeats are replaced, not duplicated. Rewritten whole each epoch (works on gs://,
    which cannot append)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:
            self.rows = []
            if tf.io.gfile.exists(self.path):
                import pandas as pd
                with tf.io.gfile.GFile(self.path) as f:
                    old = pd.read_csv(f)
                self.rows = [r for r in old.to_dict("records") if int(r["epoch"]) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        import pandas as pd
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        with tf.io.gfile.GFile(self.path + ".tmp", "w") as f:
            pd.DataFrame(self.rows).to_csv(f, index=False)
        tf.io.gfile.rename(self.path + ".tmp", self.path, overwrite=True)


# ----------------------------------------------------------------- the run
def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker gets here (an all-reduce of ones)."""
    ones = strategy.run(lambda: tf.constant(1.0))
    strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


def _write_json(path: str, obj) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


def run(cfg: Config) -> dict:
    """Train `cfg.model` on `cfg.data`, export it and return the summary.

    Writes (chief only) into cfg.train.model_dir: config.json, history.csv, best/,
    backup/ (while running), logs/ (TensorBoard), export/ (SavedModel), model.keras,
    summary.json.
    """
    from leukemia_tf import export, metrics, models

    t, d = cfg.train, cfg.data
    if not t.model_dir or not d.records_dir:
        raise ValueError("records_dir and model_dir are required")
    if d.image_size != cfg.model.image_size:
        raise ValueError(f"data image_size {d.image_size} != model image_size "
                         f"{cfg.model.image_size}")
    start = time.time()
    if t.strategy != "multi_worker":
        split_cpu(t.cpu_devices)
    strategy = make_strategy(t.strategy)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(t.seed)
    precision = resolve_precision(t.mixed_precision)
    keras.mixed_precision.set_global_policy(precision)
    chief = is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    if t.batch_size % replicas:
        raise ValueError(f"global batch {t.batch_size} is not divisible by the "
                         f"{replicas} replicas")

    manifest = pipeline.load(d.records_dir)
    train_sel = pipeline.Selection("train", tuple(d.train_folds))
    val_sel = pipeline.parse_val_split(d.val_split, d.train_folds)
    if (val_sel.split == "train" and set(val_sel.folds) & set(train_sel.folds)
            and not d.cv_assignment):  # grouped CV filters the folds' records instead
        raise ValueError(f"validation fold {val_sel.folds} is also a training fold "
                         f"{train_sel.folds}: choose --train_folds without it")
    n_train = pipeline.count_examples(manifest, train_sel, d, training=True)
    n_val = pipeline.count_examples(manifest, val_sel, d, training=False)
    if n_train < t.batch_size:
        raise ValueError(f"{n_train} training examples < global batch {t.batch_size}")
    steps = t.steps_per_epoch or n_train // t.batch_size
    weights = pipeline.class_weights(pipeline.label_counts(manifest, d.records_dir, train_sel, d))
    plan = pipeline.cache_plan(d, [("train", n_train), ("validation", n_val)])
    for name, (mode, why) in plan.items():
        log.info("cache for %s: %s (%s)", name, mode, why)
    log.info("strategy %s with %d replicas, precision %s, chief=%s, %d steps/epoch",
             strategy_name(strategy), replicas, precision, chief, steps)

    if chief:
        tf.io.gfile.makedirs(t.model_dir)
        _write_json(f"{t.model_dir}/config.json", cfg.to_dict())

    def train_fn(input_context):
        return pipeline.make_dataset(cfg, train_sel, True, manifest=manifest,
                                     cache=plan["train"][0], input_context=input_context,
                                     weights=weights)
    val_ds = pipeline.make_dataset(cfg, val_sel, False, manifest=manifest,
                                   cache=plan["validation"][0])

    with strategy.scope():
        model = models.build_model(cfg.model)
        model.compile(optimizer=make_optimizer(cfg, steps, precision), loss=make_loss(cfg),
                      metrics=make_metrics(), jit_compile=t.jit_compile,
                      steps_per_execution=1)

    progress = _Progress(t.batch_size)
    callbacks = [progress, _BestCheckpoint(t.model_dir, "val_weighted_f1", chief)]
    if chief:
        callbacks.append(_CsvHistory(f"{t.model_dir}/history.csv"))
        if t.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(f"{t.model_dir}/logs",
                                                         update_freq="epoch"))
    if t.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_weighted_f1", mode="max", patience=t.early_stopping_patience))
    # Last, so an epoch's backup is taken after its log row and best checkpoint are
    # written: a restart never skips an epoch's record.
    callbacks.append(_Backup(f"{t.model_dir}/backup", save_freq=t.backup_every_steps or "epoch",
                             delete_checkpoint=True))

    history = model.fit(keras.utils.experimental.DatasetCreator(train_fn), epochs=t.epochs,
                        steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                        verbose=t.verbose if chief else 0)
    if progress.nan_at is not None:
        batch, loss = progress.nan_at
        raise FloatingPointError(
            f"training stopped: the loss became {loss} at step {batch} of an epoch. "
            "Try a lower --learning_rate, --mixed_precision=float32, or check the records "
            "with tools/convert_to_tfrecords.py --verify.")

    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker:
        _barrier(strategy)  # the chief's best checkpoint is complete before anyone reads it
    if tf.io.gfile.exists(f"{t.model_dir}/best/weights.index"):
        model.load_weights(f"{t.model_dir}/best/weights")
    # The exported copy is a plain single-device model: a SavedModel cannot hold functions
    # over distributed variables, and scoring it needs no other replica or worker. Reading
    # the weights is collective under multi-worker, so every worker takes part.
    values = model.get_weights()
    plain = models.build_model(cfg.model)
    plain.set_weights(values)
    if chief:
        export.export_model(plain, t.model_dir)
    summary = {"status": "ok", "model": cfg.model.name, "strategy": strategy_name(strategy),
               "replicas": replicas, "precision": precision, "chief": chief,
               "epochs": t.epochs, "steps_per_epoch": steps,
               "first_epoch": progress.first_epoch,
               "resumed_from_step": progress.resumed_from_step,
               "train_images_per_sec": progress.images_per_sec,
               "cache": {k: v[0] for k, v in plan.items()}, "class_weights": weights,
               "num_train": n_train, "num_val": n_val, "val_split": d.val_split,
               "params": int(model.count_params())}
    if tf.io.gfile.exists(f"{t.model_dir}/best/state.json"):
        with tf.io.gfile.GFile(f"{t.model_dir}/best/state.json") as f:
            summary["best_epoch"] = json.load(f)["epoch"]
    if not chief:
        return summary
    from leukemia_tf import scoring
    predict_fn = scoring.keras_predict_fn(plain)
    eval_ds = pipeline.make_dataset(cfg, val_sel, False, manifest=manifest,
                                    with_metadata=True)
    scores = scoring.score_dataset(predict_fn, eval_ds)
    summary["validation"] = metrics.classification_metrics(scores["label"],
                                                           scores["probability"])
    summary["weighted_f1"] = summary["validation"]["weighted_f1"]
    labeled = scores[scores["label"] >= 0].assign(
        prediction=lambda f: (f["probability"] >= 0.5).astype(int))
    if len(labeled):  # per held-out patient (grouped CV reports the worst one)
        summary["per_patient"] = metrics.per_patient(labeled).to_dict("records")
    summary["seconds"] = round(time.time() - start, 1)
    summary["history"] = {k: [float(x) for x in v] for k, v in history.history.items()}
    _write_json(f"{t.model_dir}/summary.json", summary)
    return summary
