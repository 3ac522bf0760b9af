"""Predict ALL probabilities for the final test set, a folder or single images.

  leukemia-predict --model_dir=M --input=<records dir | folder | file[,file]>
      --output=predictions.csv [--tta=flips] [--threshold=0.5]

The CSV (file, probability, prediction, path) follows the final-test numbering (1.bmp ...
2586.bmp) so it can be submitted; `prediction` is the predicted class (1 = ALL), the
column an evaluation's predictions.csv uses too (there `label` is the truth). Image files
of any size are made into model input by leukemia_tf/data/preprocess.py with the model's
own preprocessing.json (canvas: centre crop / black pad, never stretched; then the
training resize). Files that cannot be read are reported by name (stderr and
<output>.errors.csv; a stale one from an earlier run is removed); the rest are still
predicted. When every file name carries its patient (UID_<patient>_...), the
patient-level calls go to <output>.patients.csv. Flags and paths are checked before
TensorFlow loads.
"""
import sys

from absl import flags

import leukemia_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf import config as config_lib
from leukemia_tf import io, provenance
from leukemia_tf.cli import flag_table, runner, splits
from leukemia_tf.errors import UserError
from leukemia_tf.cli.evaluate import check_model_paths
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.evaluation import destinations, output_rules
from leukemia_tf.wording import count

FLAGS = flags.FLAGS
A = flag_table.Alias

ALIASES = {
    "model_dir": A("model_dir", "Training model dir, export/ dir or .keras file; several, "
                   "comma-separated: an ensemble (mean probability).", "model",
                   required=True),
    "input": A("input", "A records dir (manifest.json), a folder of images, or image "
               "files (comma-separated).", "data", required=True),
    "split": A("split", "Split to predict when --input is a records dir: test, "
               "validation or fold<k>.", "data"),
    "tta": A("tta", "Test-time augmentation, as evaluate's (dihedral8 by default: what "
             "evaluate measured; none: 8x faster, as the served SavedModel).", "model"),
    "batch_size": A("batch_size", "Images per forward pass.", "model"),
    "threshold": A("threshold", "Probability at or above which the prediction is 1 (ALL).",
                   "threshold"),
    "trust_saved_model": A("trust_saved_model", "Allow a SavedModel (export/), which runs "
                           "its own graph; model.keras loads with safe_mode and runs none.",
                           "model"),
    "allow_other_model": A("allow_other_model", "Predict with a model.keras that is not "
                           "the one its run's summary.json names (the log names it).",
                           "model"),
    "output": A("output", "CSV to write (columns: file, probability, prediction, path); "
                "never an input, nor inside a model or records dir.", "output",
                required=True),
    "overwrite": A("overwrite", "Replace an existing --output (and its .errors.csv, "
                   ".patients.csv).", "output"),
    "adapt_bn": A("inference.adapt_bn", "Test-time BN adaptation on the predicted cells "
                  "(transductive); patient: ids from UID_<patient>_ file names.", "model"),
    "calibrate": A("inference.calibrate", "run: apply the temperature the training run "
                   "stored (calibration.json) to the probabilities.", "model",
                   choices=config_lib.PREDICT_CALIBRATE),
    "neighbour_vote": A("inference.neighbour_vote", "k > 0: each cell takes the mean "
                        "probability of its k nearest predicted cells in penultimate "
                        "features (transductive).", "model"),
}

COMMAND = flag_table.Command(
    script="leukemia-predict", doc=__doc__, base=config_lib.PredictConfig, aliases=ALIASES,
    usage="--model_dir=DIR --input=PATH[,PATH] --output=FILE.csv [flags]")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues) -> config_lib.PredictConfig:
    """PredictConfig from the flags given (short or dotted)."""
    return flag_table.config_from_flags(fv, COMMAND)


def check_inputs(cfg: config_lib.PredictConfig) -> None:
    """Paths (--output: `evaluation.output_rules`), the split of a records dir and the
    threshold, without TensorFlow."""
    check_model_paths(cfg.model_dir)
    provenance.check_models([p.strip() for p in cfg.model_dir.split(",") if p.strip()],
                            cfg.allow_other_model)
    for path in io.rejoin_commas(cfg.input):
        if "://" not in path and not io.exists(path):
            raise UserError(f"--input: {path} does not exist")
    output_rules.check(cfg.output, cfg.input, cfg.overwrite)
    if not 0.0 <= cfg.threshold <= 1.0:
        raise UserError(f"--threshold={cfg.threshold} is not in [0, 1]")
    if (len(cfg.input) == 1 and "://" not in cfg.input[0]
            and io.exists(manifest_lib.manifest_path(cfg.input[0]))):
        folds = splits.manifest_folds(cfg.input[0])
        splits.check(cfg.split, folds, "--split", cfg.input[0],
                     ("test", "validation", "fold"))


def main(argv):
    flag_table.no_arguments(argv, COMMAND)
    cfg = config_from_flags(FLAGS)
    check_inputs(cfg)
    runner.import_tensorflow_quietly()
    from leukemia_tf.evaluation import predict as prediction
    try:
        table, errors = prediction.run(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    try:
        path, by_patient = prediction.write(cfg, table, errors)
    except OSError as e:  # a disk that became full or read-only while writing
        raise destinations.refusal(e, io.dirname(cfg.output) or ".",
                                   destinations.PREDICT_HINT) or e
    if by_patient:
        print(f"per-patient calls -> {by_patient}")
    print(f"{count(len(table), 'prediction')} ({int(table['prediction'].sum())} ALL) -> "
          f"{cfg.output}")
    for e in errors:
        print(f"could not predict {e['file']}: {e['reason']}", file=sys.stderr)
    if path:
        print(f"{count(len(errors), 'file')} not predicted, listed in {path}", file=sys.stderr)
    return 0 if len(table) else 1


def console_main():
    runner.run(main, define_flags, __doc__, command=COMMAND)


if __name__ == "__main__":
    console_main()
