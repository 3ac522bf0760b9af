"""Predict ALL probabilities for the final test set, a folder or single images.

  python -m leukemia_tf.predict --model_dir=M --input=<records dir | folder | file[,file]>
      --output=predictions.csv [--tta=flips] [--threshold=0.5]

The CSV (file, probability, label, path) follows the final-test numbering (1.bmp ...
2586.bmp) so it can be submitted. Image files of any size are made into model input by
leukemia_tf/data/preprocess.py with the model's own preprocessing.json (canvas: centre
crop / black pad, never stretched; then the training resize). Files that cannot be read
are reported by name (stderr and <output>.errors.csv; a stale one from an earlier run is
removed); the rest are still predicted.
"""
import sys

from absl import app, flags, logging

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Training model dir, export/ dir or .keras file.")
flags.DEFINE_list("input", None, "A records dir (manifest.json), a folder of images, or "
                  "image files (comma-separated).")
flags.DEFINE_string("output", None, "CSV to write (columns: file, probability, label, path).")
flags.DEFINE_string("split", "test", "Split to predict when --input is a records dir.")
flags.DEFINE_enum("tta", "none", ["none", "flips", "dihedral8"], "Test-time augmentation.")
flags.DEFINE_float("threshold", 0.5, "Probability at or above which the label is 1 (ALL).")
flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")


def console_main():
    app.run(main)


def main(argv):
    del argv
    leukemia_tf.quiet_tensorflow_logs()
    if not FLAGS.model_dir or not FLAGS.input or not FLAGS.output:
        raise app.UsageError("--model_dir, --input and --output are required")
    from leukemia_tf import prediction
    try:
        table, errors = prediction.predict(
            FLAGS.model_dir, FLAGS.input, split=FLAGS.split, tta=FLAGS.tta,
            threshold=FLAGS.threshold, batch_size=FLAGS.batch_size)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = prediction.write_outputs(table, errors, FLAGS.output)
    print(f"{len(table)} predictions ({int(table['label'].sum())} ALL) -> {FLAGS.output}")
    for e in errors:
        print(f"could not predict {e['file']}: {e['reason']}", file=sys.stderr)
    if path:
        print(f"{len(errors)} files not predicted, listed in {path}", file=sys.stderr)
    return 0 if len(table) else 1


if __name__ == "__main__":
    console_main()
