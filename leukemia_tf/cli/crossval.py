"""Cross-validate and compare models (absl entry point).

  python tools/crossval.py --records_dir=R --out_dir=CV --models=seed_cnn,resnet_small
      --epochs=20 --image_size=224 --batch_size=64

  python tools/crossval.py --records_dir=R --out_dir=CV --cv=patients --folds=0,1,2
      --num_folds=5 --models=resnet_small

Writes CV/<model>/<fold>/ (one training run each) and CV/comparison.{csv,md,png}:
mean ± std over the held-out folds; the all-folds -> validation run as its own row.
With --cv=patients also CV/cv_assignment.csv and CV/per_patient.csv.
Prints `run k/N: <model> fold <k>` before each run and a summary line at the end.
"""
import sys

from absl import app, flags

import leukemia_tf  # noqa: F401
from leukemia_tf import config as config_lib
from leukemia_tf.cli import common

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("records_dir", None, "Converted records.")
    d.string("out_dir", None, "Where runs and the comparison go.")
    d.list("models", ["seed_cnn", "resnet_small"], "Models to compare.")
    d.list("folds", ["0", "1", "2"], "Training folds to rotate through.")
    d.bool("with_validation", True, "Also train on all folds, validate on the "
           "labeled validation set.")
    d.integer("epochs", 20, "Epochs per run.")
    d.integer("batch_size", 64, "Global batch.")
    d.integer("image_size", 224, "Input size.")
    d.float("learning_rate", 1e-3, "Peak learning rate.")
    d.integer("steps_per_epoch", 0, "0 = a pass over the training folds.")
    d.string("strategy", "auto", "Distribution strategy.")
    d.string("mixed_precision", "auto", "Precision policy.")
    d.integer("width", 32, "Base width of the project's CNNs.")
    d.enum("cv", "official", ["official", "patients"],
           "official: rotate the official folds (they leak duplicates); patients: regroup "
           "--folds into --num_folds patient- and duplicate-disjoint folds, stratified by "
           "class.")
    d.integer("num_folds", 5, "Folds for --cv=patients (lowered, with a note, when a class "
              "has fewer patients).")


def main(argv):
    del argv
    if not FLAGS.records_dir or not FLAGS.out_dir:
        raise app.UsageError("--records_dir and --out_dir are required")
    from leukemia_tf.crossval import run as crossval
    size = FLAGS.image_size
    base = config_lib.Config(
        data=config_lib.DataConfig(records_dir=FLAGS.records_dir, image_size=size),
        model=config_lib.ModelConfig(image_size=size, width=FLAGS.width),
        train=config_lib.TrainConfig(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                                     learning_rate=FLAGS.learning_rate,
                                     steps_per_epoch=FLAGS.steps_per_epoch,
                                     strategy=FLAGS.strategy,
                                     mixed_precision=FLAGS.mixed_precision, verbose=0))
    result = crossval.run(base, FLAGS.models, FLAGS.out_dir,
                          folds=[int(f) for f in FLAGS.folds],
                          include_validation=FLAGS.with_validation,
                          on_progress=lambda line: print(line, flush=True),
                          cv=FLAGS.cv, num_folds=FLAGS.num_folds)
    from leukemia_tf import io
    print(io.read_text(result["md"]))
    for w in result["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)
    print(result["summary"], flush=True)
    return 0


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
