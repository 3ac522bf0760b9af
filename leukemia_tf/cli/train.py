"""Train a C-NMC classifier (absl entry point; the library is leukemia_tf.training).

  python -m leukemia_tf.train --records_dir=R --model_dir=M --model=resnet_small
      --epochs=30 --batch_size=128 --image_size=224 --strategy=auto --mixed_precision=auto

Flags become one frozen Config, written to <model_dir>/config.json. --flagfile works.
"""
import json

from absl import app, flags

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf import config as config_lib
from leukemia_tf.cli import common

FLAGS = flags.FLAGS
_D, _M, _T = config_lib.DataConfig(), config_lib.ModelConfig(), config_lib.TrainConfig()
_A = config_lib.AugmentConfig()


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """The trainer's flags, defined into `fv` (called by the entry point, or a test)."""
    d = common.definer(fv)
    d.enum("preset", "default", sorted(config_lib.PRESETS),
           "Starting configuration; other flags override it when given.")
    # data
    d.string("records_dir", None, "Converted records (manifest.json inside).")
    d.integer("image_size", _D.image_size, "Model input size (square).")
    d.list("train_folds", ["0", "1", "2"], "Training folds to train on.")
    d.string("val_split", _D.val_split, "validation (the labeled set), fold<k>, or cv "
             "(the held-out --cv_fold of the training folds).")
    d.string("cache", _D.cache, "auto | memory | disk:<path> | none.")
    d.float("cache_budget_gb", _D.cache_budget_gb, "RAM budget for caches "
            "(0 = half the available RAM).")
    d.integer("shuffle_buffer", _D.shuffle_buffer, "Example shuffle buffer.")
    d.integer("private_threadpool_size", 0, "tf.data private pool (0 = shared).")
    d.enum("class_balance", _D.class_balance, ["weights", "resample", "none"],
           "Class imbalance handling (~2.15:1 ALL:hem).")
    # model
    d.string("model", _M.name, "seed_cnn | resnet_small | efficientnet_lite0/1/2 | "
             "efficientnetv2_b0 | resnet50.")
    d.string("weights", _M.weights, "none | imagenet | <path to weights>.")
    d.float("dropout", _M.dropout, "Dropout before the classifier.")
    d.float("l1", _M.l1, "Kernel L1 regularisation.")
    d.float("l2", _M.l2, "Kernel L2 regularisation.")
    d.integer("width", _M.width, "Base width of the project's CNNs.")
    d.bool("freeze_backbone_bn", _M.freeze_backbone_bn, "Pretrained backbone's BatchNorm in "
           "inference mode.")
    d.bool("augment", _A.enabled, "In-model augmentation (training only).")
    d.float("rotate_degrees", _A.rotate_degrees, "Random rotation range.")
    d.float("zoom", _A.zoom, "Random zoom fraction (0 = off).")
    d.float("color_jitter", 1.0, "Scale brightness/contrast/hue/saturation jitter.")
    d.float("stain", _A.stain, "Stain jitter strength in optical density (0 = off).")
    d.enum("stain_space", _A.stain_space, ["hed", "rgb"], "Stain jitter space.")
    d.enum("normalize", _M.normalize, ["none", "per_image", "channel_mean"],
           "Per-image normalisation over the cell's pixels (training and inference).")
    d.string("cv_assignment", _D.cv_assignment, "Grouped-CV fold CSV "
             "(leukemia_tf.data.grouping); with --cv_fold and --val_split=cv.")
    d.integer("cv_fold", _D.cv_fold, "The held-out CV fold of --cv_assignment.")
    # training
    d.string("model_dir", None, "Output dir (local or gs://).")
    d.integer("epochs", _T.epochs, "Epochs.")
    d.integer("batch_size", _T.batch_size, "Global batch size (all replicas).")
    d.integer("steps_per_epoch", 0, "0 = one pass over the training folds.")
    d.float("learning_rate", _T.learning_rate, "Peak learning rate.")
    d.enum("schedule", _T.schedule, ["cosine", "constant"], "LR schedule.")
    d.float("warmup_epochs", _T.warmup_epochs, "Linear warm-up (cosine).")
    d.enum("optimizer", _T.optimizer, ["adam", "adamw"], "Optimizer.")
    d.float("weight_decay", _T.weight_decay, "AdamW weight decay.")
    d.enum("loss", _T.loss, ["bce", "focal"], "Loss.")
    d.float("focal_gamma", _T.focal_gamma, "Focal loss gamma.")
    d.float("label_smoothing", 0.0, "Label smoothing.")
    d.enum("strategy", _T.strategy,
           ["auto", "default", "one_device", "mirrored", "multi_worker"],
           "Distribution strategy.")
    d.enum("mixed_precision", _T.mixed_precision,
           ["auto", "float32", "mixed_float16", "mixed_bfloat16"], "Precision policy.")
    d.bool("jit_compile", False, "XLA-compile the train step.")
    d.integer("seed", 0, "Random seed.")
    d.bool("deterministic", False, "Deterministic ops and tf.data order (slower).")
    d.integer("backup_every_steps", _T.backup_every_steps,
              "Preemption backup frequency in steps (also every epoch end).")
    d.integer("early_stopping_patience", 0, "Epochs without val weighted F1 gain.")
    d.integer("freeze_backbone_epochs", 0, "Epochs training the head only (backbone lr 0).")
    d.float("backbone_lr_multiplier", 1.0, "Backbone learning rate / the head's, after them.")
    d.bool("tensorboard", True, "Write TensorBoard logs.")
    d.integer("verbose", 2, "Keras fit verbosity.")
    d.integer("cpu_devices", 0, "Split the CPU into N logical devices (testing "
              "MirroredStrategy without GPUs).")
    d.bool("overwrite", False, "Start fresh in a --model_dir that holds a finished run or a "
           "run with other settings: deletes only the trainer's own files (config.json, "
           "history.csv, summary.json, model.keras, preprocessing.json, best/, backup/, "
           "logs/, export/, eval/).")


def _given_in(fv: flags.FlagValues, name: str) -> bool:
    return fv[name].present


def config_from_flags(fv: flags.FlagValues = FLAGS) -> config_lib.Config:
    """The preset, overridden by every flag given on the command line (or flagfile)."""
    cfg = config_lib.PRESETS[fv.preset](fv.records_dir or "", fv.model_dir or "")
    data = {"records_dir": fv.records_dir or "", "image_size": fv.image_size,
            "train_folds": tuple(int(f) for f in fv.train_folds),
            "val_split": fv.val_split, "cache": fv.cache,
            "cache_budget_gb": fv.cache_budget_gb, "shuffle_buffer": fv.shuffle_buffer,
            "private_threadpool_size": fv.private_threadpool_size,
            "class_balance": fv.class_balance, "deterministic": fv.deterministic,
            "seed": fv.seed, "cv_assignment": fv.cv_assignment, "cv_fold": fv.cv_fold}
    model = {"name": fv.model, "image_size": fv.image_size, "weights": fv.weights,
             "dropout": fv.dropout, "l1": fv.l1, "l2": fv.l2, "width": fv.width,
             "normalize": fv.normalize, "freeze_backbone_bn": fv.freeze_backbone_bn}
    train = {k: getattr(fv, k) for k in (
        "epochs", "batch_size", "steps_per_epoch", "learning_rate", "schedule",
        "warmup_epochs", "optimizer", "weight_decay", "loss", "focal_gamma",
        "label_smoothing", "strategy", "mixed_precision", "jit_compile", "seed",
        "deterministic", "backup_every_steps", "early_stopping_patience", "tensorboard",
        "verbose", "cpu_devices", "overwrite", "freeze_backbone_epochs",
        "backbone_lr_multiplier")}
    train["model_dir"] = fv.model_dir or ""
    flag_of = {"name": "model"}
    pick = lambda section: {k: v for k, v in section.items()  # noqa: E731
                            if fv.preset == "default" or _given_in(fv, flag_of.get(k, k))
                            or k in ("records_dir", "model_dir")}
    augment = dict(config_lib.dataclasses.asdict(cfg.model.augment))
    if fv.preset == "default" or _given_in(fv, "augment"):
        augment["enabled"] = fv.augment
    if fv.preset == "default" or _given_in(fv, "rotate_degrees"):
        augment["rotate_degrees"] = fv.rotate_degrees
    if fv.preset == "default" or _given_in(fv, "zoom"):
        augment["zoom"] = fv.zoom
    for key in ("stain", "stain_space"):
        if fv.preset == "default" or _given_in(fv, key):
            augment[key] = getattr(fv, key)
    for key in ("brightness", "contrast", "hue", "saturation"):
        augment[key] = getattr(config_lib.AugmentConfig(), key) * fv.color_jitter
    model_changes = pick(model)
    if _given_in(fv, "image_size") or fv.preset == "default":
        model_changes["image_size"] = fv.image_size
    model_changes["augment"] = config_lib.AugmentConfig(**augment)
    return config_lib.replace(cfg, data=pick(data), model=model_changes, train=pick(train))


def main(argv):
    del argv
    if not FLAGS.records_dir or not FLAGS.model_dir:
        raise app.UsageError("--records_dir and --model_dir are required")
    cfg = config_from_flags()
    from leukemia_tf import training
    try:
        summary = training.run(cfg)
    except Exception as e:  # expected failures: one line; anything else: traceback
        message = training.expected_error(e)
        if message is None:
            raise
        raise common.UserError(message) from e
    # A finished run of the same settings is logged by the trainer ("nothing to do").
    if summary.get("chief", True) and "validation" in summary:
        v = summary["validation"]
        ips = summary.get("train_images_per_sec")
        speed = f"training {ips:.1f} images/s" if ips else "training speed not measured"
        print(f"best epoch {summary.get('best_epoch')}: validation weighted F1 "
              f"{v['weighted_f1']:.4f}, accuracy {v['accuracy']:.4f}, ROC AUC "
              f"{v['roc_auc'] if v['roc_auc'] is None else round(v['roc_auc'], 4)}; "
              f"{speed}; exported to {cfg.train.model_dir}/export")
    else:
        print(json.dumps({k: summary[k] for k in ("chief", "strategy", "replicas")}))
    return 0


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
