"""Evaluate a trained model on a labeled split (absl entry point).

  python -m leukemia_tf.evaluate --model_dir=M --records_dir=R [--split=validation]
      [--tta=none|flips|dihedral8] [--threshold=0.5|youden|f1]

Writes <model_dir>/eval/: metrics.json, predictions.csv, per_patient.csv, plots, report.md.
"""
import sys

from absl import app, flags, logging

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.cli import common

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("model_dir", None, "Training model dir, export/ dir or .keras file.")
    d.string("records_dir", None, "Converted records (manifest.json inside).")
    d.string("split", "validation", "validation (labeled set) or fold<k>.")
    d.enum("tta", "none", ["none", "flips", "dihedral8"],
           "Test-time augmentation: probabilities averaged over the views.")
    d.string("threshold", "0.5", "A value in [0, 1], or youden / f1 chosen on "
             "--threshold_split (never on the reported split).")
    d.string("threshold_split", "auto", "auto | validation | fold<k>.")
    d.integer("batch_size", 64, "Images per forward pass.")
    d.string("out_dir", "", "Output dir (default <model_dir>/eval).")


def main(argv):
    del argv
    if not FLAGS.model_dir or not FLAGS.records_dir:
        raise app.UsageError("--model_dir and --records_dir are required")
    from leukemia_tf import evaluation
    cfg = evaluation.EvalConfig(
        model_dir=FLAGS.model_dir, records_dir=FLAGS.records_dir, split=FLAGS.split,
        tta=FLAGS.tta, threshold=FLAGS.threshold, threshold_split=FLAGS.threshold_split,
        batch_size=FLAGS.batch_size, out_dir=FLAGS.out_dir, progress=True)
    try:
        m = evaluation.evaluate(cfg)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    print(f"{m['split']}: {m['num_examples']} images, weighted F1 {m['weighted_f1']:.4f}, "
          f"accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
          f"ROC AUC {auc}, threshold {m['threshold']:.3f} (tta={m['tta']})")
    for w in m["leakage_warnings"]:
        print(f"WARNING: {w}")
    print(f"report: {m['report']}")
    return 0


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
