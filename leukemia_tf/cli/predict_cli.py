"""Predict ALL probabilities for the final test set, a folder or single images.

  python -m leukemia_tf.predict --model_dir=M --input=<records dir | folder | file[,file]>
      --output=predictions.csv [--tta=flips] [--threshold=0.5]

The CSV (file, probability, label) follows the final-test numbering (1.bmp ... 2586.bmp)
so it can be submitted. Image files of any size get the converter's canvas rule
(centre crop / black pad to 450, never stretched) and the pipeline's resize. Files that
cannot be read are reported by name (stderr and <output>.errors.csv); the rest are
still predicted.
"""
import os
import re
import sys

from absl import app, flags, logging

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.cli import common

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("model_dir", None, "Training model dir, export/ dir or .keras file.")
    d.list("input", None, "A records dir (manifest.json), a folder of images, or "
           "image files (comma-separated).")
    d.string("output", None, "CSV to write.")
    d.string("split", "test", "Split to predict when --input is a records dir.")
    d.enum("tta", "none", ["none", "flips", "dihedral8"], "Test-time augmentation.")
    d.float("threshold", 0.5, "Probability at or above which the label is 1 (ALL).")
    d.integer("canvas_size", 450, "Canvas of the training images (crop/pad only).")
    d.integer("batch_size", 64, "Images per forward pass.")


def console_main():
    common.run(main, define_flags, __doc__)


def main(argv):
    del argv
    if not FLAGS.model_dir or not FLAGS.input or not FLAGS.output:
        raise app.UsageError("--model_dir, --input and --output are required")
    from leukemia_tf import prediction
    try:
        result = prediction.predict(
            FLAGS.model_dir, FLAGS.input, split=FLAGS.split, tta=FLAGS.tta,
            threshold=FLAGS.threshold, canvas_size=FLAGS.canvas_size,
            batch_size=FLAGS.batch_size)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    table, errors = result
    out_dir = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(out_dir, exist_ok=True)
    table.to_csv(FLAGS.output, index=False)
    print(f"{len(table)} predictions ({int(table['label'].sum())} ALL) -> {FLAGS.output}")
    if errors:
        path = re.sub(r"\.csv$", "", FLAGS.output) + ".errors.csv"
        import pandas as pd
        pd.DataFrame(errors).to_csv(path, index=False)
        for e in errors:
            print(f"could not predict {e['file']}: {e['reason']}", file=sys.stderr)
        print(f"{len(errors)} files not predicted, listed in {path}", file=sys.stderr)
    return 0 if len(table) else 1


if __name__ == "__main__":
    console_main()
