"""Compare pooled studies (absl entry point; no TensorFlow).

  leukemia-compare --studies=S/lite_bn_8ep_96,S/resnet_small_20ep_96
      --ensembles=lite_bn_8ep_96+resnet_small_20ep_96 --out_dir=S/compare

Each study is a folder written by `leukemia-crossval --cv=pooled`. Writes
OUT/compare.{csv,md}: every study's variants (epoch rules, TTA, BN adaptation,
thresholds) and every ensemble (mean probability), each with its difference to the first
study's plain scores, paired by cell and seed, with a 95% interval resampling patients.
Compared on the seeds every study finished (a study still running counts its finished
seeds).
"""
from absl import flags

from leukemia_tf import io
from leukemia_tf.cli import runner
from leukemia_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_list("studies", [], "Pooled study folders; the first is the baseline.",
                      flag_values=fv)
    flags.DEFINE_list("ensembles", [], "Pairs A+B of study names (folder names) to "
                      "average.", flag_values=fv)
    flags.DEFINE_string("out_dir", "", "Where compare.csv and compare.md go.",
                        flag_values=fv)


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; leukemia-compare takes "
                        "flags only")
    if len(FLAGS.studies) < 1 or not FLAGS.out_dir:
        raise UserError("--studies (one or more pooled study folders) and --out_dir "
                        "are required")
    from leukemia_tf.crossval import compare
    studies = []
    for folder in FLAGS.studies:
        try:
            studies.append(compare.Study(folder))
        except FileNotFoundError as e:
            raise UserError(f"--studies: {e}") from None
    names = {s.name for s in studies}
    pairs = [tuple(p.split("+", 1)) for p in FLAGS.ensembles]
    bad = [p for p in FLAGS.ensembles if "+" not in p or not set(p.split("+", 1)) <= names]
    if bad:
        raise UserError(f"--ensembles: {', '.join(bad)} is not A+B of study names "
                        f"({', '.join(sorted(names))})")
    try:
        rows, seeds = compare.compare(studies, pairs=pairs)
    except ValueError as e:
        raise UserError(f"--studies: {e}") from None
    paths = compare.write(FLAGS.out_dir, rows, seeds)
    print(io.read_text(paths["md"]))
    return 0


def console_main():
    runner.run(main, define_flags, __doc__, uses_tensorflow=False)


if __name__ == "__main__":
    console_main()
