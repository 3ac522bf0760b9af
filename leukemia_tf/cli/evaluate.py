"""Evaluate a trained model on a labeled split (absl entry point).

  leukemia-evaluate --model_dir=M --records_dir=R [--split=validation|fold<k>]
      [--tta=none|flips|dihedral8] [--threshold=0.5|youden|f1] [--allow_biased_threshold]
      [--adapt_bn=none|set|patient] [--calibrate=none|run|<split>] [--neighbour_vote=k]
      [--noshortcut_probe]

Writes one folder per evaluation, <model_dir>/eval/<split>[-<tta>][-thr_<how>]/:
metrics.json, predictions.csv (`label` the truth, `prediction` the predicted class),
per_patient.csv, patients.csv, plots, report.md; and updates <model_dir>/eval/index.md, which lists
every evaluation of the model. Flags, paths and split names are checked before
TensorFlow loads.
"""
from absl import flags

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf import config as config_lib
from leukemia_tf import io, provenance
from leukemia_tf.cli import flag_table, runner, splits
from leukemia_tf.errors import UserError
from leukemia_tf.evaluation import destinations
from leukemia_tf.metrics import classification as metrics
from leukemia_tf.wording import count

FLAGS = flags.FLAGS
A = flag_table.Alias

ALIASES = {
    "model_dir": A("model_dir", "Training model dir, export/ dir or .keras file; several, "
                   "comma-separated: an ensemble (mean probability; needs --out_dir).",
                   "model", required=True),
    "records_dir": A("records_dir", "Converted records (manifest.json inside).", "data",
                     required=True),
    "split": A("split", "Split to evaluate: validation (the labeled set) or fold<k>.",
               "data"),
    "tta": A("tta", "Test-time augmentation: probabilities averaged over the views "
             "(dihedral8: the 8 flips and quarter turns, the measured best; none: 8x faster).",
             "model"),
    "batch_size": A("batch_size", "Images per forward pass.", "model"),
    "threshold": A("threshold", "A value in [0, 1], or youden / f1 chosen on "
                   "--threshold_split (never on the reported split).", "threshold"),
    "threshold_split": A("threshold_split", "auto | validation | fold<k>. auto: the run's "
                         "selection split, else a held-out fold; never the reported split.",
                         "threshold"),
    "allow_biased_threshold": A("allow_biased_threshold", "Allow --threshold=youden|f1 to "
                                "be chosen on a split the model was trained on (recorded "
                                "as biased).", "threshold"),
    "trust_saved_model": A("trust_saved_model", "Allow a SavedModel (export/), which runs "
                           "its own graph; model.keras loads with safe_mode and runs none.",
                           "model"),
    "allow_other_records": A("allow_other_records", "Score records the model was not "
                             "trained on (its trained_on.json names others); the report "
                             "says so.", "data"),
    "allow_other_model": A("allow_other_model", "Score a model.keras that is not the one "
                           "its run's summary.json names; the report names the network "
                           "really loaded.", "model"),
    "out_dir": A("out_dir", "Root of the evaluation folders (default <model_dir>/eval); "
                 "each evaluation writes <out_dir>/<name>/.", "output"),
    "adapt_bn": A("inference.adapt_bn", "Test-time BN adaptation on the scored cells "
                  "(transductive): set (all of them) or patient (each patient's).", "model"),
    "calibrate": A("inference.calibrate", "none | run (the run's calibration.json) | "
                   "<split>: a temperature fitted on that labeled split, applied to the "
                   "scores.", "model"),
    "neighbour_vote": A("inference.neighbour_vote", "k > 0: each cell takes the mean "
                        "probability of its k nearest scored cells in penultimate features "
                        "(transductive).", "model"),
    "shortcut_probe": A("shortcut_probe", "Score a hand-feature baseline fitted on the "
                        "training cells beside the CNN (reads the training images once).",
                        "output"),
}

COMMAND = flag_table.Command(
    script="leukemia-evaluate", doc=__doc__,
    base=lambda: config_lib.EvalConfig(model_dir="", records_dir="", progress=True),
    aliases=ALIASES, usage="--model_dir=DIR --records_dir=DIR [--split=NAME] [flags]")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues) -> config_lib.EvalConfig:
    """EvalConfig from the flags given (short or dotted)."""
    return flag_table.config_from_flags(fv, COMMAND)


def check_model_paths(model_dir: str) -> None:
    """Each comma-separated local model path exists (URLs are checked when loaded)."""
    for path in (p.strip() for p in model_dir.split(",") if p.strip()):
        if "://" not in path and not io.exists(path):
            raise UserError(f"--model_dir: {path} does not exist")


def check_inputs(cfg: config_lib.EvalConfig) -> None:
    """Paths, split names, the threshold and a writable evaluation folder, without
    TensorFlow."""
    check_model_paths(cfg.model_dir)
    folds = splits.manifest_folds(cfg.records_dir)
    splits.check(cfg.split, folds, "--split", cfg.records_dir, ("validation", "fold"))
    splits.check(cfg.threshold_split, folds, "--threshold_split", cfg.records_dir,
                 ("auto", "validation", "fold"))
    provenance.check_evaluation([p.strip() for p in cfg.model_dir.split(",") if p.strip()],
                                cfg.records_dir, cfg.allow_other_records, cfg.allow_other_model)
    if cfg.threshold not in metrics.THRESHOLD_METHODS:
        try:
            ok = 0.0 <= float(cfg.threshold) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"--threshold={cfg.threshold} is neither a value in "
                            "[0, 1] nor youden or f1")
    if cfg.out_dir or "," not in cfg.model_dir:
        destinations.check_not_serving(cfg.model_dir, cfg.out_dir)
        destinations.check(destinations.eval_root(cfg.model_dir, cfg.out_dir),
                           destinations.EVALUATE_HINT)


def main(argv):
    flag_table.no_arguments(argv, COMMAND)
    cfg = config_from_flags(FLAGS)
    check_inputs(cfg)
    runner.import_tensorflow_quietly()
    from leukemia_tf.evaluation import evaluate as evaluation
    try:
        m = evaluation.run(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    except OSError as e:  # a disk that became full or read-only while writing
        raise destinations.refusal(e, destinations.eval_root(cfg.model_dir, cfg.out_dir),
                                   destinations.EVALUATE_HINT) or e
    from leukemia_tf.metrics.classification import format_ci
    ci = m.get("confidence_intervals")
    on = (f" ({m['threshold_method']} on {m['threshold_chosen_on']})"
          if m["threshold_chosen_on"] else "")
    balanced = "n/a" if m["balanced_accuracy"] is None else f"{m['balanced_accuracy']:.4f}"
    print(f"{m['split']} ({m['split_role']}): {count(m['num_examples'], 'image')}, accuracy "
          f"{m['accuracy']:.4f}, balanced accuracy {balanced}, threshold "
          f"{m['threshold']:.3f}{on} (tta={m['tta']})")
    print(f"  weighted F1 {format_ci(ci, 'weighted_f1', 3)}")
    print(f"  ROC AUC (exact) {format_ci(ci, 'roc_auc', 3)}")
    for w in m["warnings"]:
        print(f"WARNING: {w}")
    print(f"report: {m['report']}")
    print(f"all evaluations: {m['index']}")
    return 0


def console_main():
    runner.run(main, define_flags, __doc__, command=COMMAND)


if __name__ == "__main__":
    console_main()
