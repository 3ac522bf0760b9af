"""Train a C-NMC classifier (absl entry point; the library is leukemia_tf.training).

  python -m leukemia_tf.train --records_dir=R --model_dir=M --model=resnet_small \
      --epochs=30 --batch_size=128 --image_size=224 --strategy=auto --mixed_precision=auto

Flags become one frozen Config, written to <model_dir>/config.json. --flagfile works.
"""
import json
import sys

from absl import app, flags, logging

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf import config as config_lib

FLAGS = flags.FLAGS
_D, _M, _T = config_lib.DataConfig(), config_lib.ModelConfig(), config_lib.TrainConfig()
_A = config_lib.AugmentConfig()

flags.DEFINE_enum("preset", "default", sorted(config_lib.PRESETS),
                  "Starting configuration; other flags override it when given.")
# data
flags.DEFINE_string("records_dir", None, "Converted records (manifest.json inside).")
flags.DEFINE_integer("image_size", _D.image_size, "Model input size (square).")
flags.DEFINE_list("train_folds", ["0", "1", "2"], "Training folds to train on.")
flags.DEFINE_string("val_split", _D.val_split, "validation (the labeled set), fold<k>, or cv "
                    "(the held-out --cv_fold of the training folds).")
flags.DEFINE_string("cache", _D.cache, "auto | memory | disk:<path> | none.")
flags.DEFINE_float("cache_budget_gb", _D.cache_budget_gb, "RAM budget for caches "
                   "(0 = half the available RAM).")
flags.DEFINE_integer("shuffle_buffer", _D.shuffle_buffer, "Example shuffle buffer.")
flags.DEFINE_integer("private_threadpool_size", 0, "tf.data private pool (0 = shared).")
flags.DEFINE_enum("class_balance", _D.class_balance, ["weights", "resample", "none"],
                  "Class imbalance handling (~2.15:1 ALL:hem).")
# model
flags.DEFINE_string("model", _M.name, "seed_cnn | resnet_small | efficientnetv2_b0 | resnet50.")
flags.DEFINE_string("weights", _M.weights, "none | imagenet | <path to weights>.")
flags.DEFINE_float("dropout", _M.dropout, "Dropout before the classifier.")
flags.DEFINE_float("l1", _M.l1, "Kernel L1 regularisation.")
flags.DEFINE_float("l2", _M.l2, "Kernel L2 regularisation.")
flags.DEFINE_integer("width", _M.width, "Base width of the project's CNNs.")
flags.DEFINE_bool("augment", _A.enabled, "In-model augmentation (training only).")
flags.DEFINE_float("rotate_degrees", _A.rotate_degrees, "Random rotation range.")
flags.DEFINE_float("zoom", _A.zoom, "Random zoom fraction (0 = off).")
flags.DEFINE_float("color_jitter", 1.0, "Scale brightness/contrast/hue/saturation jitter.")
flags.DEFINE_float("stain", _A.stain, "Stain jitter strength in optical density (0 = off).")
flags.DEFINE_enum("stain_space", _A.stain_space, ["hed", "rgb"], "Stain jitter space.")
flags.DEFINE_enum("normalize", _M.normalize, ["none", "per_image", "channel_mean"],
                  "Per-image normalisation over the cell's pixels (training and inference).")
flags.DEFINE_string("cv_assignment", _D.cv_assignment, "Grouped-CV fold CSV "
                    "(leukemia_tf.grouping); with --cv_fold and --val_split=cv.")
flags.DEFINE_integer("cv_fold", _D.cv_fold, "The held-out CV fold of --cv_assignment.")
# training
flags.DEFINE_string("model_dir", None, "Output dir (local or gs://).")
flags.DEFINE_integer("epochs", _T.epochs, "Epochs.")
flags.DEFINE_integer("batch_size", _T.batch_size, "Global batch size (all replicas).")
flags.DEFINE_integer("steps_per_epoch", 0, "0 = one pass over the training folds.")
flags.DEFINE_float("learning_rate", _T.learning_rate, "Peak learning rate.")
flags.DEFINE_enum("schedule", _T.schedule, ["cosine", "constant"], "LR schedule.")
flags.DEFINE_float("warmup_epochs", _T.warmup_epochs, "Linear warm-up (cosine).")
flags.DEFINE_enum("optimizer", _T.optimizer, ["adam", "adamw"], "Optimizer.")
flags.DEFINE_float("weight_decay", _T.weight_decay, "AdamW weight decay.")
flags.DEFINE_enum("loss", _T.loss, ["bce", "focal"], "Loss.")
flags.DEFINE_float("focal_gamma", _T.focal_gamma, "Focal loss gamma.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_enum("strategy", _T.strategy,
                  ["auto", "default", "one_device", "mirrored", "multi_worker"],
                  "Distribution strategy.")
flags.DEFINE_enum("mixed_precision", _T.mixed_precision,
                  ["auto", "float32", "mixed_float16", "mixed_bfloat16"], "Precision policy.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and tf.data order (slower).")
flags.DEFINE_integer("backup_every_steps", _T.backup_every_steps,
                     "Preemption backup frequency in steps (also every epoch end).")
flags.DEFINE_integer("early_stopping_patience", 0, "Epochs without val weighted F1 gain.")
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard logs.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into N logical devices (testing "
                     "MirroredStrategy without GPUs).")


def _given(name: str) -> bool:
    return FLAGS[name].present


def config_from_flags() -> config_lib.Config:
    """The preset, overridden by every flag given on the command line (or flagfile)."""
    cfg = config_lib.PRESETS[FLAGS.preset](FLAGS.records_dir or "", FLAGS.model_dir or "")
    data = {"records_dir": FLAGS.records_dir or "", "image_size": FLAGS.image_size,
            "train_folds": tuple(int(f) for f in FLAGS.train_folds),
            "val_split": FLAGS.val_split, "cache": FLAGS.cache,
            "cache_budget_gb": FLAGS.cache_budget_gb, "shuffle_buffer": FLAGS.shuffle_buffer,
            "private_threadpool_size": FLAGS.private_threadpool_size,
            "class_balance": FLAGS.class_balance, "deterministic": FLAGS.deterministic,
            "seed": FLAGS.seed, "cv_assignment": FLAGS.cv_assignment, "cv_fold": FLAGS.cv_fold}
    model = {"name": FLAGS.model, "image_size": FLAGS.image_size, "weights": FLAGS.weights,
             "dropout": FLAGS.dropout, "l1": FLAGS.l1, "l2": FLAGS.l2, "width": FLAGS.width,
             "normalize": FLAGS.normalize}
    train = {k: getattr(FLAGS, k) for k in (
        "epochs", "batch_size", "steps_per_epoch", "learning_rate", "schedule",
        "warmup_epochs", "optimizer", "weight_decay", "loss", "focal_gamma",
        "label_smoothing", "strategy", "mixed_precision", "jit_compile", "seed",
        "deterministic", "backup_every_steps", "early_stopping_patience", "tensorboard",
        "verbose", "cpu_devices")}
    train["model_dir"] = FLAGS.model_dir or ""
    flag_of = {"name": "model"}
    pick = lambda section: {k: v for k, v in section.items()  # noqa: E731
                            if FLAGS.preset == "default" or _given(flag_of.get(k, k))
                            or k in ("records_dir", "model_dir")}
    augment = dict(config_lib.dataclasses.asdict(cfg.model.augment))
    if FLAGS.preset == "default" or _given("augment"):
        augment["enabled"] = FLAGS.augment
    if FLAGS.preset == "default" or _given("rotate_degrees"):
        augment["rotate_degrees"] = FLAGS.rotate_degrees
    if FLAGS.preset == "default" or _given("zoom"):
        augment["zoom"] = FLAGS.zoom
    for key in ("stain", "stain_space"):
        if FLAGS.preset == "default" or _given(key):
            augment[key] = getattr(FLAGS, key)
    for key in ("brightness", "contrast", "hue", "saturation"):
        augment[key] = getattr(config_lib.AugmentConfig(), key) * FLAGS.color_jitter
    model_changes = pick(model)
    if _given("image_size") or FLAGS.preset == "default":
        model_changes["image_size"] = FLAGS.image_size
    model_changes["augment"] = config_lib.AugmentConfig(**augment)
    return config_lib.replace(cfg, data=pick(data), model=model_changes, train=pick(train))


def main(argv):
    del argv
    leukemia_tf.quiet_tensorflow_logs()
    if not FLAGS.records_dir or not FLAGS.model_dir:
        raise app.UsageError("--records_dir and --model_dir are required")
    cfg = config_from_flags()
    from leukemia_tf import training
    try:
        summary = training.run(cfg)
    except (ValueError, FloatingPointError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    if summary.get("chief", True) and "validation" in summary:
        v = summary["validation"]
        ips = summary.get("train_images_per_sec")
        print(f"best epoch {summary.get('best_epoch')}: validation weighted F1 "
              f"{v['weighted_f1']:.4f}, accuracy {v['accuracy']:.4f}, ROC AUC "
              f"{v['roc_auc'] if v['roc_auc'] is None else round(v['roc_auc'], 4)}; "
              f"training {ips or 0:.1f} images/s; exported to {cfg.train.model_dir}/export")
    else:
        print(json.dumps({k: summary[k] for k in ("chief", "strategy", "replicas")}))
    return 0


def console_main():
    app.run(main)


if __name__ == "__main__":
    console_main()
