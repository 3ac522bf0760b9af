"""What a run optimises and watches: optimizer and schedule, class weights, loss, metrics.

Metric names are what history.csv and the console show. The Keras AUC is a bucketed
approximation, so it is called `auc_approx`: the one exact ROC AUC of a run (sklearn, over
every validation image) is `roc_auc` in summary.json and the evaluation.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import Config

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("bce", "focal")


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
    """The optimizer with its learning-rate schedule (loss-scaled under float16)."""
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


def class_weights(counts: Dict[int, int]) -> Dict[int, float]:
    """Balanced weights n / (2 n_c): each class contributes equally to the loss."""
    total = sum(counts.values())
    return {c: (total / (2.0 * n) if n else 0.0) for c, n in counts.items()}


def make_loss(cfg: Config):
    t = cfg.train
    if t.loss == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=t.label_smoothing)
    if t.loss == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=t.focal_gamma,
                                                    label_smoothing=t.label_smoothing)
    raise ValueError(f"unknown loss {t.loss!r}")


def make_metrics():
    """Per-epoch metrics; `auc_approx` is Keras' bucketed AUC, not the exact ROC AUC."""
    return [keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall"),
            keras.metrics.AUC(name="auc_approx"), WeightedF1()]
