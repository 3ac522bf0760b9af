"""Train a C-NMC classifier (absl entry point; the library is leukemia_tf.training).

  leukemia-train --records_dir=R --model_dir=M --model=resnet_small --epochs=30
      --batch_size=128 --image_size=224 --strategy=auto --mixed_precision=auto
  leukemia-train --preset=seed_cnn --records_dir=R --model_dir=M --config.train.epochs=3

Flags become one frozen Config (leukemia_tf/config.py), written to <model_dir>/config.json;
any setting can be given by its dotted path (--config.train.epochs=3). --flagfile works.
Flags, the records' manifest and the requested folds are checked before TensorFlow loads.
"""
import json
import os
import re
from typing import Optional

from absl import flags

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf import cluster
from leukemia_tf import config as config_lib
from leukemia_tf import model as model_names
from leukemia_tf.cli import flag_table, runner, splits
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.errors import UserError
from leukemia_tf.metrics import split_roles
from leukemia_tf.model import keras_file
from leukemia_tf.training import preflight, rundir
from leukemia_tf.training.trainer_errors import expected_error

FLAGS = flags.FLAGS
A = flag_table.Alias
_AUG = config_lib.AugmentConfig()
_JITTER = ("brightness", "contrast", "hue", "saturation")
_PROGRESS = {"none": 0, "bar": 1, "lines": 2, "auto": 3}


def _jitter(scale: float) -> dict:
    return {f"model.augment.{k}": getattr(_AUG, k) * scale for k in _JITTER}


# The short flags: flag -> setting. Types, defaults and choices come from config.py.
ALIASES = {
    # data
    "records_dir": A("data.records_dir", "Converted records (manifest.json inside).",
                     "data", required=True),
    "image_size": A("data.image_size", "Model input size (square).", "data"),
    "train_folds": A("data.train_folds", "Training folds to train on.", "data"),
    "split": A("data.val_split", "Split validated on (and the best epoch chosen on): "
               "validation (the labeled set), fold<k> (a training fold left out of "
               "--train_folds), or cv (the held-out --cv_fold of the training folds).",
               "data"),
    "val_split": A("data.val_split", "", "data", deprecated="split"),
    "cache": A("data.cache", "auto | memory | disk:<path> | none.", "data"),
    "cache_budget_gb": A("data.cache_budget_gb", "RAM budget for caches "
                         "(0 = half the available RAM).", "data"),
    "shuffle_buffer": A("data.shuffle_buffer", "Example shuffle buffer.", "data"),
    "private_threadpool_size": A("data.private_threadpool_size",
                                 "tf.data private pool (0 = shared).", "data"),
    "class_balance": A("data.class_balance", "Class imbalance handling (~2.15:1 ALL:hem).",
                       "data"),
    "cv_assignment": A("data.cv_assignment", "Grouped-CV fold CSV "
                       "(leukemia_tf.data.grouping); with --cv_fold and --split=cv.", "data"),
    "cv_fold": A("data.cv_fold", "The held-out CV fold of --cv_assignment.", "data"),
    "seed": A("data.seed", "Random seed (weights, augmentation, shuffling).", "data"),
    "deterministic": A("data.deterministic", "Deterministic ops and tf.data order "
                       "(slower).", "data"),
    # model
    "model": A("model.name", "Network.", "model", choices=model_names.NAMES),
    "freeze_backbone_bn": A("model.freeze_backbone_bn", "Pretrained backbone's BatchNorm in "
                            "inference mode (ImageNet statistics kept).", "model"),
    "weights": A("model.weights", "none | imagenet | <path to weights>.", "model"),
    "dropout": A("model.dropout", "Dropout before the classifier.", "model"),
    "l1": A("model.l1", "Kernel L1 regularisation.", "model"),
    "l2": A("model.l2", "Kernel L2 regularisation.", "model"),
    "width": A("model.width", "Base width of the project's CNNs.", "model"),
    "normalize": A("model.normalize", "Per-image normalisation over the cell's pixels "
                   "(training and inference).", "model"),
    "augment": A("model.augment.enabled", "In-model augmentation (training only).",
                 "model"),
    "rotate_degrees": A("model.augment.rotate_degrees", "Random rotation range.", "model"),
    "zoom": A("model.augment.zoom", "Random zoom fraction (0 = off).", "model"),
    "color_jitter": A("", "Scale brightness/contrast/hue/saturation jitter.", "model",
                      derive=_jitter, default=1.0),
    "stain": A("model.augment.stain", "Stain jitter strength in optical density "
               "(0 = off).", "model"),
    "stain_space": A("model.augment.stain_space", "Stain jitter space.", "model"),
    # optimisation
    "epochs": A("train.epochs", "Epochs.", "optimisation"),
    "batch_size": A("train.batch_size", "Global batch size (all replicas).",
                    "optimisation"),
    "steps_per_epoch": A("train.steps_per_epoch", "0 = one pass over the training folds.",
                         "optimisation"),
    "learning_rate": A("train.learning_rate", "Peak learning rate.", "optimisation"),
    "schedule": A("train.schedule", "LR schedule.", "optimisation"),
    "warmup_epochs": A("train.warmup_epochs", "Linear warm-up (cosine).", "optimisation"),
    "optimizer": A("train.optimizer", "Optimizer.", "optimisation"),
    "weight_decay": A("train.weight_decay", "AdamW weight decay.", "optimisation"),
    "loss": A("train.loss", "Loss.", "optimisation"),
    "focal_gamma": A("train.focal_gamma", "Focal loss gamma.", "optimisation"),
    "freeze_backbone_epochs": A("train.freeze_backbone_epochs", "First N epochs train the "
                                "head only (pretrained backbone's learning rate x 0).",
                                "optimisation"),
    "backbone_lr_multiplier": A("train.backbone_lr_multiplier", "Pretrained backbone's "
                                "learning rate / the head's, after the frozen epochs.",
                                "optimisation"),
    "label_smoothing": A("train.label_smoothing", "Label smoothing.", "optimisation"),
    "monitor": A("train.monitor", "What chooses the exported epoch on --split: val_auc, "
                 "val_loss, val_weighted_f1, or last (no choice: the final epoch).",
                 "optimisation"),
    "early_stopping_patience": A("train.early_stopping_patience",
                                 "Epochs without a --monitor gain (0 = off).",
                                 "optimisation"),
    # distribution
    "strategy": A("train.strategy", "Distribution strategy.", "distribution"),
    "mixed_precision": A("train.mixed_precision", "Precision policy.", "distribution"),
    "jit_compile": A("train.jit_compile", "XLA-compile the train step (auto: by device, "
                     "see training/step_settings.py).", "distribution"),
    "steps_per_execution": A("train.steps_per_execution", "Train steps per tf.function "
                             "call.", "distribution"),
    "inter_op_threads": A("train.inter_op_threads", "TensorFlow inter-op threads "
                          "(0 = TensorFlow's choice).", "distribution"),
    "intra_op_threads": A("train.intra_op_threads", "TensorFlow intra-op threads "
                          "(0 = TensorFlow's choice).", "distribution"),
    "cpu_devices": A("train.cpu_devices", "Split the CPU into N logical devices (testing "
                     "MirroredStrategy without GPUs).", "distribution"),
    # output
    "model_dir": A("train.model_dir", "Output dir (local or gs://): the run's state, "
                   "backups, best weights, export/ (default: $AIP_CHECKPOINT_DIR, else "
                   "$AIP_MODEL_DIR).", "output", required=True),
    "overwrite": A("train.overwrite", "Start fresh in a --model_dir that holds a finished "
                   "run or a run with other settings: deletes only the trainer's own files "
                   "(config.json, history.csv, summary.json, model.keras, "
                   "preprocessing.json, best/, backup/, logs/, export/, eval/).", "output"),
    "serving_dir": A("train.serving_dir", "Also export the servable model here: the "
                     "SavedModel at its root, model.keras (default: $AIP_MODEL_DIR).",
                     "output"),
    "tensorboard_dir": A("train.tensorboard_dir", "TensorBoard events here instead of "
                         "<model_dir>/logs (default: $AIP_TENSORBOARD_LOG_DIR).", "output"),
    "backup_every_steps": A("train.backup_every_steps", "Preemption backup frequency in "
                            "steps (also every epoch end).", "output"),
    "tensorboard": A("train.tensorboard", "Write TensorBoard logs.", "output"),
    "progress": A("", "Training display: bar (a per-step bar with ETA; lines when the "
                  "output is not a terminal with a width), lines (a plain line every 30 s "
                  "and per epoch, for logs), auto (bar in a terminal, else lines), none. "
                  "Log detail is absl's --verbosity.", "output",
                  choices=tuple(_PROGRESS), derive=lambda v: {"train.verbose": _PROGRESS[v]},
                  default="auto"),
    "verbose": A("train.verbose", "Training display 0/1/2/3 (the same as --progress "
                 "none/bar/lines/auto).", "output"),
    "keras_progress": A("train.keras_progress", "Keras' own fit output (at --verbose) "
                        "instead of the trainer's bar, lines and summary.", "output"),
}

COMMAND = flag_table.Command(
    script="leukemia-train", doc=__doc__, base=config_lib.Config, aliases=ALIASES,
    usage="--records_dir=DIR --model_dir=DIR [--preset=NAME] [flags]", presets=True)


# Vertex AI custom training's variables (README "Cloud jobs"): variable -> the flag it
# supplies when that setting is not given. The run's whole state (backups included) goes
# to the checkpoint dir; the model dir receives the servable model.
PLATFORM = (("AIP_CHECKPOINT_DIR", "model_dir"), ("AIP_MODEL_DIR", "serving_dir"),
            ("AIP_TENSORBOARD_LOG_DIR", "tensorboard_dir"), ("AIP_MODEL_DIR", "model_dir"))


def from_environment(fv: flags.FlagValues, environ=None) -> tuple:
    """Set each platform setting not given as a flag (short or dotted) from its
    variable; returns what came from where (`train.serving_dir from AIP_MODEL_DIR`)."""
    environ = os.environ if environ is None else environ
    given = {text.partition("=")[0] for text in fv["config"].value or ()}
    notes = []
    for var, name in PLATFORM:
        path = ALIASES[name].path
        if environ.get(var) and not fv[name].present and path not in given:
            fv[name].parse(environ[var])
            notes.append(f"{path} from {var}")
    return tuple(notes)


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """The trainer's flags, defined into `fv` (called by the entry point, or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues) -> config_lib.Config:
    """The preset, overridden by every flag given (short or dotted, or in a flagfile)."""
    return flag_table.config_from_flags(fv, COMMAND)


def check_inputs(cfg: config_lib.Config) -> Optional[preflight.Inputs]:
    """The trainer's pre-flight check, without TensorFlow: the manifest (read once, passed
    to the trainer), the folds, the split, the --weights file, TF_CONFIG, a local
    --model_dir's config.json against these settings, then the records' shards
    (`preflight.prepare`). None: the records are a URL (the trainer reads them) or the
    model dir holds this run finished."""
    d = cfg.data
    try:
        preflight.check_config(cfg)
    except ValueError as e:
        raise UserError(flag_names(expected_error(e))) from None
    loaded = splits.local_manifest(d.records_dir)
    folds = None if loaded is None else manifest_lib.train_folds(loaded[0])
    preflight.check_folds(d, folds)
    splits.check(d.val_split, folds, "--split", d.records_dir, ("validation", "fold", "cv"))
    state = None
    if "://" not in cfg.train.model_dir:  # a URL is read by TensorFlow: the trainer checks it
        try:
            state = rundir.inspect(cfg)
        except rundir.RunDirError as e:
            raise UserError(flag_names(str(e))) from None
    keras_file.weights_path(cfg.model.weights)
    cluster.check(cluster.parse())
    cluster.timeout_s()
    if loaded is None or (state is not None and state.status == "finished"):
        return None
    try:
        return preflight.prepare(cfg, loaded)
    except (UserError, ValueError) as e:
        raise UserError(flag_names(expected_error(e))) from None


def flag_names(message: str) -> str:
    """A trainer message with each setting (`data.val_split: …`) named by its flag
    (`--split: …`), as the user gives it."""
    return re.sub(r"(?<![\w/.\\-])(?:data|model|train)\.[\w.]+(?=:)",
                  lambda m: flag_table.flag_for(COMMAND, m.group(0)), message)


def last_line(cfg: config_lib.Config, summary: dict) -> str:
    """The run's last line: the best epoch's scores on the split it scored, by that
    split's name and role (`fold2 (selection split)`)."""
    d = cfg.data
    split = split_roles.titled(split_roles.run_split_name(d.val_split, d.cv_fold),
                               split_roles.of_run_split(cfg.train.monitor))
    v = summary["validation"]
    ips = summary.get("train_images_per_sec")
    speed = f"training {ips:.1f} images/s" if ips else "training speed not measured"
    auc = v["roc_auc"] if v["roc_auc"] is None else round(v["roc_auc"], 4)
    return (f"best epoch {summary.get('best_epoch')}: {split} weighted F1 "
            f"{v['weighted_f1']:.4f}, accuracy {v['accuracy']:.4f}, ROC AUC {auc}; "
            f"{speed}; exported to {cfg.train.model_dir}/export")


def main(argv):
    flag_table.no_arguments(argv, COMMAND)
    platform = from_environment(FLAGS)
    cfg = config_from_flags(FLAGS)
    if platform:
        cfg = config_lib.replace(cfg, train={"from_environment": platform})
    inputs = check_inputs(cfg)
    runner.import_tensorflow_quietly()
    from leukemia_tf import training
    try:
        summary = training.run(cfg, inputs=inputs)
    except Exception as e:  # expected failures: one line; anything else: traceback
        message = training.expected_error(e)
        if message is None:
            raise
        raise UserError(flag_names(message)) from e
    # A finished run of the same settings is logged by the trainer ("nothing to do").
    if summary.get("chief", True) and "validation" in summary:
        print(last_line(cfg, summary))
    else:
        print(json.dumps({k: summary[k] for k in ("chief", "strategy", "replicas")}))
    return 0


def console_main():
    runner.run(main, define_flags, __doc__, command=COMMAND)


if __name__ == "__main__":
    console_main()
