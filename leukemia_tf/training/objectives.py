"""What a run optimises and watches: optimizer and schedule, class weights, loss, metrics.

Metric names are what history.csv and the console show. The Keras AUC is a bucketed
approximation, so it is called `auc_approx`: the one exact ROC AUC of a run (sklearn, over
every validation image) is `roc_auc` in summary.json and the evaluation.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf
import tf_keras as keras

from leukemia_tf.config import Config, TrainConfig, choices
from leukemia_tf.model import registry


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


class BackboneAdam(keras.optimizers.Adam):
    """Adam(W) with a learning-rate multiplier for the pretrained backbone's variables:
    0 for the first `freeze_steps` updates (the head alone warms up), then
    `backbone_multiplier`. Every other variable gets the learning rate unchanged.

    A real per-variable learning rate, not scaled gradients (Adam's step does not depend
    on the gradient's scale): the backbone's Adam step and its decoupled weight decay are
    both multiplied. The phase is read from `iterations`, which BackupAndRestore restores,
    so a run killed and resumed at any step freezes and unfreezes at the same update; all
    variables stay trainable, so switching needs no recompile. Adds no variables: its
    checkpoints are Adam's. Works inside LossScaleOptimizer and MirroredStrategy.
    """

    def __init__(self, learning_rate, backbone=(), backbone_multiplier: float = 1.0,
                 freeze_steps: int = 0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.backbone_multiplier = float(backbone_multiplier)
        self.freeze_steps = int(freeze_steps)
        self._backbone = {self._var_key(v) for v in backbone}
        self._lr_scale = None  # set while one backbone variable is updated
        if self._backbone and self.weight_decay is not None:
            # Their decay is applied, scaled, in update_step instead.
            self.exclude_from_weight_decay(var_list=list(backbone))

    def backbone_scale(self):
        """The backbone's learning-rate factor at the current step (float32 scalar)."""
        return tf.where(self.iterations < self.freeze_steps, 0.0, self.backbone_multiplier)

    @property
    def learning_rate(self):
        lr = super().learning_rate
        return lr if getattr(self, "_lr_scale", None) is None else lr * self._lr_scale

    @learning_rate.setter
    def learning_rate(self, value):
        keras.optimizers.Adam.learning_rate.fset(self, value)

    def update_step(self, gradient, variable):
        if self._var_key(variable) not in self._backbone:
            return super().update_step(gradient, variable)
        self._lr_scale = tf.cast(self.backbone_scale(), variable.dtype)
        try:
            if self.weight_decay is not None:  # decoupled, before the step, as Adam's own
                lr = tf.cast(self.learning_rate, variable.dtype)
                variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * lr)
            return super().update_step(gradient, variable)
        finally:
            self._lr_scale = None

    def get_config(self):
        return {**super().get_config(), "backbone_multiplier": self.backbone_multiplier,
                "freeze_steps": self.freeze_steps}


def make_optimizer(cfg: Config, steps_per_epoch: int, precision: str, model=None):
    """The optimizer with its learning-rate schedule (loss-scaled under float16).

    With `model` (a registry model) and cfg.train.freeze_backbone_epochs or
    backbone_lr_multiplier set, a `BackboneAdam` that scales the learning rate of the
    model's pretrained backbone (`registry.backbone_variables`); without `model` (speed
    benchmarks) the plain optimizer.
    """
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
    if t.optimizer not in choices(TrainConfig, "optimizer"):
        raise ValueError(f"unknown optimizer {t.optimizer!r}")
    backbone = _scaled_backbone(cfg, model)
    if backbone:
        opt = BackboneAdam(lr, backbone, t.backbone_lr_multiplier,
                           t.freeze_backbone_epochs * steps_per_epoch,
                           weight_decay=t.weight_decay if t.optimizer == "adamw" else None)
    elif t.optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    else:
        opt = keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)
    if precision == "mixed_float16":  # dynamic loss scaling keeps fp16 gradients finite
        opt = keras.mixed_precision.LossScaleOptimizer(opt)
    return opt


def _scaled_backbone(cfg: Config, model) -> list:
    """The variables whose learning rate cfg scales; [] when it scales none."""
    t = cfg.train
    if t.freeze_backbone_epochs < 0 or t.backbone_lr_multiplier < 0:
        raise ValueError("freeze_backbone_epochs and backbone_lr_multiplier must be >= 0")
    if t.freeze_backbone_epochs == 0 and t.backbone_lr_multiplier == 1.0:
        return []
    if model is None:
        return []
    backbone = registry.backbone_variables(model)
    if not backbone:
        raise ValueError(f"--freeze_backbone_epochs/--backbone_lr_multiplier need a model "
                         f"with a pretrained backbone; {cfg.model.name} has none")
    return backbone


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
