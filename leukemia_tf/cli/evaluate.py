"""Evaluate a trained model on a labeled split (absl entry point).

  python -m leukemia_tf.evaluate --model_dir=M --records_dir=R [--split=validation]
      [--tta=none|flips|dihedral8] [--threshold=0.5|youden|f1] [--allow_biased_threshold]
      [--adapt_bn=none|set|patient] [--calibrate=none|run|<split>] [--neighbour_vote=k]
      [--noshortcut_probe]

Writes one folder per evaluation, <model_dir>/eval/<split>[-<tta>][-thr_<how>]/:
metrics.json, predictions.csv, per_patient.csv, patients.csv, plots, report.md; and updates
<model_dir>/eval/index.md, which lists every evaluation of the model.
"""
from absl import app, flags

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.cli import common

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("model_dir", None, "Training model dir, export/ dir or .keras file; several, "
             "comma-separated: an ensemble (mean probability; evaluate needs --out_dir).")
    d.string("records_dir", None, "Converted records (manifest.json inside).")
    d.string("split", "validation", "validation (labeled set) or fold<k>.")
    d.enum("tta", "none", ["none", "flips", "dihedral8"],
           "Test-time augmentation: probabilities averaged over the views.")
    d.string("threshold", "0.5", "A value in [0, 1], or youden / f1 chosen on "
             "--threshold_split (never on the reported split).")
    d.string("threshold_split", "auto", "auto | validation | fold<k>. auto: the run's "
             "selection split, else a held-out fold; never the reported split.")
    d.bool("allow_biased_threshold", False, "Allow --threshold=youden|f1 to be chosen on a "
           "split the model was trained on (recorded as biased).")
    d.integer("batch_size", 64, "Images per forward pass.")
    d.string("out_dir", "", "Root of the evaluation folders (default <model_dir>/eval); "
             "each evaluation writes <out_dir>/<name>/.")
    d.enum("adapt_bn", "none", ["none", "set", "patient"], "Test-time BN adaptation on the "
           "scored cells (transductive): the whole set, or each patient's cells.")
    d.string("calibrate", "none", "none | run (the run's calibration.json) | <split>: "
             "temperature fitted on that labeled split, applied to the probabilities.")
    d.integer("neighbour_vote", 0, "k > 0: each cell takes the mean probability of its k "
              "nearest scored cells in penultimate features (transductive); 0 = off.")
    d.bool("shortcut_probe", True, "Score a hand-feature baseline fitted on the training "
           "cells beside the CNN (reads the training images once).")


def main(argv):
    del argv
    if not FLAGS.model_dir or not FLAGS.records_dir:
        raise app.UsageError("--model_dir and --records_dir are required")
    from leukemia_tf.evaluation import evaluate as evaluation
    cfg = evaluation.EvalConfig(
        model_dir=FLAGS.model_dir, records_dir=FLAGS.records_dir, split=FLAGS.split,
        tta=FLAGS.tta, threshold=FLAGS.threshold, threshold_split=FLAGS.threshold_split,
        allow_biased_threshold=FLAGS.allow_biased_threshold, batch_size=FLAGS.batch_size,
        out_dir=FLAGS.out_dir, progress=True, adapt_bn=FLAGS.adapt_bn,
        calibrate=FLAGS.calibrate, neighbour_vote=FLAGS.neighbour_vote,
        shortcut_probe=FLAGS.shortcut_probe)
    try:
        m = evaluation.evaluate(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise common.UserError(str(e)) from e
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    on = (f" ({m['threshold_method']} on {m['threshold_chosen_on']})"
          if m["threshold_chosen_on"] else "")
    print(f"{m['split']} ({m['split_role']}): {m['num_examples']} images, weighted F1 "
          f"{m['weighted_f1']:.4f}, accuracy {m['accuracy']:.4f}, balanced accuracy "
          f"{m['balanced_accuracy']:.4f}, ROC AUC (exact) {auc}, threshold "
          f"{m['threshold']:.3f}{on} (tta={m['tta']})")
    for w in m["warnings"]:
        print(f"WARNING: {w}")
    print(f"report: {m['report']}")
    print(f"all evaluations: {m['index']}")
    return 0


def console_main():
    common.run(main, define_flags, __doc__)


if __name__ == "__main__":
    console_main()
