"""Cross-validate and compare models (absl entry point).

  python tools/crossval.py --records_dir=R --out_dir=CV --models=seed_cnn,resnet_small \
      --epochs=20 --image_size=224 --batch_size=64

  python tools/crossval.py --records_dir=R --out_dir=CV --cv=patients --folds=1 \
      --num_folds=2 --models=resnet_small

Writes CV/<model>/<fold>/ (one training run each) and CV/comparison.{csv,md,png}.
"""
import sys

from absl import app, flags

import leukemia_tf  # noqa: F401
from leukemia_tf import config as config_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("records_dir", None, "Converted records.")
flags.DEFINE_string("out_dir", None, "Where runs and the comparison go.")
flags.DEFINE_list("models", ["seed_cnn", "resnet_small"], "Models to compare.")
flags.DEFINE_list("folds", ["0", "1", "2"], "Training folds to rotate through.")
flags.DEFINE_bool("with_validation", True, "Also train on all folds, validate on the "
                  "labeled validation set.")
flags.DEFINE_integer("epochs", 20, "Epochs per run.")
flags.DEFINE_integer("batch_size", 64, "Global batch.")
flags.DEFINE_integer("image_size", 224, "Input size.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
flags.DEFINE_integer("steps_per_epoch", 0, "0 = a pass over the training folds.")
flags.DEFINE_string("strategy", "auto", "Distribution strategy.")
flags.DEFINE_string("mixed_precision", "auto", "Precision policy.")
flags.DEFINE_integer("width", 32, "Base width of the project's CNNs.")
flags.DEFINE_enum("cv", "official", ["official", "patients"],
                  "official: rotate the official folds (they leak duplicates); patients: "
                  "regroup --folds into --num_folds patient- and duplicate-disjoint folds, "
                  "stratified by class.")
flags.DEFINE_integer("num_folds", 5, "Folds for --cv=patients (lowered, with a note, when "
                     "a class has fewer patients).")


def main(argv):
    del argv
    leukemia_tf.quiet_tensorflow_logs()
    if not FLAGS.records_dir or not FLAGS.out_dir:
        raise app.UsageError("--records_dir and --out_dir are required")
    from leukemia_tf import crossval
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
                          cv=FLAGS.cv, num_folds=FLAGS.num_folds)
    print(open(result["md"]).read())
    for w in result["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)
    return 0


def console_main():
    app.run(main)


if __name__ == "__main__":
    console_main()
