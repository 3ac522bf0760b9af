"""Cross-validate and compare models (absl entry point).

  leukemia-crossval --records_dir=R --out_dir=CV --models=seed_cnn,resnet_small
      --epochs=20 --image_size=224 --batch_size=64

  leukemia-crossval --records_dir=R --out_dir=CV --cv=patients --folds=0,1,2
      --num_folds=5 --models=resnet_small

  leukemia-crossval --records_dir=R --out_dir=CV --cv=pooled --folds=1 --num_folds=5
      --selection_split=fold0 --seeds=0,1,2 --preset=pretrained --models=efficientnet_lite0

Writes CV/<model>/<fold>/ (one training run each) and CV/comparison.{csv,md,png}:
mean ± std over the held-out folds; the all-folds -> validation run as its own row.
With --cv=patients also CV/cv_assignment.csv and CV/per_patient.csv. With --cv=pooled
(the study protocol for new patients): CV/<model>/s<seed>/cv<k>/ per seed and fold, and
CV/pooled.{csv,md}, CV/oof.csv, CV/per_patient.csv: every held-out cell scored once per
seed, measures pooled over all folds (mean, spread and a patient-bootstrap interval over
seeds), for each way of choosing the epoch, TTA, BN adaptation and threshold.
Prints `run k/N: <model> fold <k>` before each run and a summary line at the end.
Every run's other settings: --config.run.<section>.<name>=VALUE (e.g.
--config.run.train.warmup_epochs=0).
"""
import sys

from absl import flags

import leukemia_tf  # noqa: F401
from leukemia_tf import config as config_lib
from leukemia_tf import io
from leukemia_tf import model as model_names
from leukemia_tf.cli import flag_table, runner, splits
from leukemia_tf.errors import UserError

FLAGS = flags.FLAGS
A = flag_table.Alias

ALIASES = {
    "records_dir": A("run.data.records_dir", "Converted records.", "data", required=True),
    "folds": A("folds", "Training folds to rotate through.", "data"),
    "with_validation": A("with_validation", "Also train on all folds, validate on the "
                         "labeled validation set.", "data"),
    "cv": A("cv", "official: rotate the official folds (they leak duplicates); patients: "
            "regroup --folds into --num_folds patient- and duplicate-disjoint folds, "
            "stratified by class; pooled: the same folds, each trained per --seeds with "
            "its epoch chosen on --selection_split, held-out predictions pooled.", "data"),
    "selection_split": A("selection_split", "--cv=pooled: the split of other patients "
                         "that chooses each fold's epoch (e.g. fold0).", "data"),
    "seeds": A("seeds", "--cv=pooled: training seeds; each fold is trained once per seed.",
               "optimisation"),
    "num_folds": A("num_folds", "Folds for --cv=patients (lowered, with a note, when a "
                   "class has fewer patients).", "data"),
    "image_size": A("run.data.image_size", "Input size.", "data"),
    "models": A("models", "Models to compare: " + ", ".join(model_names.NAMES) + ".",
                "model"),
    "width": A("run.model.width", "Base width of the project's CNNs.", "model"),
    "epochs": A("run.train.epochs", "Epochs per run.", "optimisation"),
    "batch_size": A("run.train.batch_size", "Global batch.", "optimisation"),
    "learning_rate": A("run.train.learning_rate", "Peak learning rate.", "optimisation"),
    "steps_per_epoch": A("run.train.steps_per_epoch", "0 = a pass over the training folds.",
                         "optimisation"),
    "strategy": A("run.train.strategy", "Distribution strategy.", "distribution"),
    "mixed_precision": A("run.train.mixed_precision", "Precision policy.", "distribution"),
    "out_dir": A("out_dir", "Where runs and the comparison go.", "output", required=True),
}

COMMAND = flag_table.Command(
    script="leukemia-crossval", doc=__doc__, base=config_lib.CrossvalConfig,
    aliases=ALIASES, usage="--records_dir=DIR --out_dir=DIR [--models=A,B] [flags]",
    presets=True, preset_at="run")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues) -> config_lib.CrossvalConfig:
    """CrossvalConfig from the flags given (short or dotted)."""
    return flag_table.config_from_flags(fv, COMMAND)


def check_inputs(cfg: config_lib.CrossvalConfig) -> None:
    """Model names and folds, without TensorFlow."""
    unknown = [m for m in cfg.models if m not in model_names.NAMES]
    if unknown:
        raise UserError(f"--models: no model {', '.join(unknown)}; models: "
                        f"{', '.join(model_names.NAMES)}")
    folds = splits.manifest_folds(cfg.run.data.records_dir)
    missing = [f for f in cfg.folds if folds is not None and f not in folds]
    if missing:
        raise UserError(
            f"--folds: there is no fold {', '.join(map(str, missing))} in "
            f"{cfg.run.data.records_dir} (folds: {', '.join(map(str, folds))})")
    if cfg.cv == "pooled":
        if not cfg.selection_split:
            raise UserError("--cv=pooled needs --selection_split (a split of other "
                            "patients that chooses each fold's epoch, e.g. fold0)")
        splits.check(cfg.selection_split, folds, "--selection_split",
                     cfg.run.data.records_dir, ("validation", "fold"))
        if cfg.selection_split in {f"fold{k}" for k in cfg.folds}:
            raise UserError(f"--selection_split={cfg.selection_split} is one of "
                            "the --folds that are regrouped and held out")


def main(argv):
    flag_table.no_arguments(argv, COMMAND)
    cfg = config_from_flags(FLAGS)
    check_inputs(cfg)
    runner.import_tensorflow_quietly()
    from leukemia_tf.crossval import run as crossval
    result = crossval.run(cfg.run, list(cfg.models), cfg.out_dir, folds=list(cfg.folds),
                          include_validation=cfg.with_validation,
                          on_progress=lambda line: print(line, flush=True),
                          cv=cfg.cv, num_folds=cfg.num_folds, seeds=cfg.seeds,
                          selection_split=cfg.selection_split)
    print(io.read_text(result["md"]))
    for w in result["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)
    print(result["summary"], flush=True)
    return 0


def console_main():
    runner.run(main, define_flags, __doc__, command=COMMAND)


if __name__ == "__main__":
    console_main()
