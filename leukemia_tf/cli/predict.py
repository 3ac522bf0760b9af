"""Predict ALL probabilities for the final test set, a folder or single images.

  python -m leukemia_tf.predict --model_dir=M --input=<records dir | folder | file[,file]>
      --output=predictions.csv [--tta=flips] [--threshold=0.5]

The CSV (file, probability, label, path) follows the final-test numbering (1.bmp ...
2586.bmp) so it can be submitted. Image files of any size are made into model input by
leukemia_tf/data/preprocess.py with the model's own preprocessing.json (canvas: centre
crop / black pad, never stretched; then the training resize). Files that cannot be read
are reported by name (stderr and <output>.errors.csv; a stale one from an earlier run is
removed); the rest are still predicted. When every file name carries its patient
(UID_<patient>_...), the patient-level calls go to <output>.patients.csv.
"""
import sys

from absl import app, flags

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.cli import common

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("model_dir", None, "Training model dir, export/ dir or .keras file; several, "
             "comma-separated: an ensemble (mean probability; evaluate needs --out_dir).")
    d.list("input", None, "A records dir (manifest.json), a folder of images, or "
           "image files (comma-separated).")
    d.string("output", None, "CSV to write (columns: file, probability, label, path).")
    d.string("split", "test", "Split to predict when --input is a records dir.")
    d.enum("tta", "none", ["none", "flips", "dihedral8"], "Test-time augmentation.")
    d.float("threshold", 0.5, "Probability at or above which the label is 1 (ALL).")
    d.integer("batch_size", 64, "Images per forward pass.")
    d.enum("adapt_bn", "none", ["none", "set", "patient"], "Test-time BN adaptation on the "
           "predicted cells (transductive); patient: ids from UID_<patient>_ file names.")
    d.enum("calibrate", "none", ["none", "run"], "run: apply the temperature the training "
           "run stored (calibration.json) to the probabilities.")
    d.integer("neighbour_vote", 0, "k > 0: each cell takes the mean probability of its k "
              "nearest predicted cells in penultimate features (transductive); 0 = off.")


def main(argv):
    del argv
    if not FLAGS.model_dir or not FLAGS.input or not FLAGS.output:
        raise app.UsageError("--model_dir, --input and --output are required")
    from leukemia_tf.evaluation import options, options_report, predict as prediction
    try:
        opts = options.Options(adapt_bn=FLAGS.adapt_bn, calibrate=FLAGS.calibrate,
                               neighbour_vote=FLAGS.neighbour_vote, shortcut_probe=False)
        table, errors = prediction.predict(
            FLAGS.model_dir, FLAGS.input, split=FLAGS.split, tta=FLAGS.tta,
            threshold=FLAGS.threshold, batch_size=FLAGS.batch_size, opts=opts.check())
    except (ValueError, FileNotFoundError) as e:
        raise common.UserError(str(e)) from e
    path = prediction.write_outputs(table, errors, FLAGS.output)
    by_patient = options_report.write_patient_csv(table, FLAGS.threshold, FLAGS.output)
    if by_patient:
        print(f"per-patient calls -> {by_patient}")
    print(f"{len(table)} predictions ({int(table['label'].sum())} ALL) -> {FLAGS.output}")
    for e in errors:
        print(f"could not predict {e['file']}: {e['reason']}", file=sys.stderr)
    if path:
        print(f"{len(errors)} files not predicted, listed in {path}", file=sys.stderr)
    return 0 if len(table) else 1


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
