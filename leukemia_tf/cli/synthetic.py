"""Write a synthetic C-NMC-shaped tree at <output_dir>/C-NMC_Leukemia/.

    leukemia-synthetic --output_dir=demo_out/data             # demo size
    leukemia-synthetic --output_dir=D --full                  # real counts
    (or python -m leukemia_tf.cli.synthetic with the same flags)

With --full, the size flags given explicitly still override the real counts.
"""
from __future__ import annotations

import dataclasses
import time

from absl import flags

from leukemia_tf.cli import flag_table, runner
from leukemia_tf.data import synthetic

FLAGS = flags.FLAGS
A = flag_table.Alias
_DEFAULT = synthetic.SyntheticConfig()


@dataclasses.dataclass(frozen=True)
class SyntheticRun:
    """The command's root: where the tree goes and what it holds."""
    output_dir: str = ""
    tree: synthetic.SyntheticConfig = dataclasses.field(default_factory=synthetic.SyntheticConfig)


def _full(on: bool) -> dict:
    return ({f"tree.{k}": v for k, v in dataclasses.asdict(synthetic.full_config()).items()}
            if on else {})


def _per_fold(field: str, default: int) -> A:
    """A flag giving one count for each of the three folds."""
    return A("", "", "data", derive=lambda v: {f"tree.{field}": (v, v, v)}, default=default)


# --full comes first: the size flags given with it still override its counts.
ALIASES = {
    "full": A("", "Mirror the real counts (~15,000 images, ~9 GB).", "data", derive=_full,
              default=False),
    "seed": A("tree.seed", "Same seed, byte-identical tree.", "data"),
    "train_per_fold_all": dataclasses.replace(_per_fold("train_all", _DEFAULT.train_all[0]),
                                              help="ALL images per fold."),
    "train_per_fold_hem": dataclasses.replace(_per_fold("train_hem", _DEFAULT.train_hem[0]),
                                              help="hem images per fold."),
    "patients_per_fold_all": dataclasses.replace(
        _per_fold("patients_all", _DEFAULT.patients_all[0]), help="ALL subjects per fold."),
    "patients_per_fold_hem": dataclasses.replace(
        _per_fold("patients_hem", _DEFAULT.patients_hem[0]),
        help="Healthy subjects per fold (subject 3 is written h3)."),
    "num_validation": A("tree.num_validation", "Validation (prelim-phase) images, ~65% ALL "
                        "as in the real set.", "data"),
    "num_test": A("tree.num_test", "Final-test images (600x600, unlabeled).", "data"),
    "num_duplicates": A("tree.num_duplicates", "fold_0 ALL images copied byte for byte into "
                        "fold_2 under another patient's id (71 with --full, as in the real "
                        "data).", "data"),
    "v5_validation": A("tree.v5_validation", "Validation BMPs with the real 124-byte V5 "
                       "header (608,538 bytes).", "data"),
    "num_workers": A("tree.num_workers", "Rendering processes; 0 = one per CPU for trees of "
                     "2000+ images, else 1.", "distribution"),
    "output_dir": A("output_dir", "The tree is written at <output_dir>/C-NMC_Leukemia/.",
                    "output", required=True),
}

COMMAND = flag_table.Command(script="leukemia-synthetic", doc=__doc__, base=SyntheticRun,
                             aliases=ALIASES, usage="--output_dir=DIR [--full] [flags]")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    flag_table.define_flags(fv, COMMAND)


def config_from_flags(fv: flags.FlagValues) -> SyntheticRun:
    """SyntheticRun from the flags given (short or dotted)."""
    return flag_table.config_from_flags(fv, COMMAND)


def summary_lines(summary: dict) -> list:
    """One line per split."""
    lines = []
    for fold, c in summary["training"].items():
        lines.append(f"training/{fold}: {c['all']} all, {c['hem']} hem; patients "
                     f"{' '.join(c['patients_all'] + c['patients_hem'])}")
    v, t = summary["validation"], summary["test"]
    lines.append(f"validation: {v['all'] + v['hem']} images ({v['all']} all, {v['hem']} hem), "
                 f"{'V5' if v['v5_header'] else 'classic'} header; patients "
                 f"{' '.join(v['patients_all'] + v['patients_hem'])}")
    lines.append(f"test: {t['all'] + t['hem']} images 600x600 (hidden: {t['all']} all, "
                 f"{t['hem']} hem); patients {' '.join(t['patients_all'] + t['patients_hem'])}")
    lines.append(f"duplicates: {summary['num_duplicates']} byte-identical files across folds")
    return lines


def main(argv):
    flag_table.no_arguments(argv, COMMAND)
    run = config_from_flags(FLAGS)
    start = time.perf_counter()
    summary = synthetic.make_tree(run.output_dir, run.tree)
    for line in summary_lines(summary):
        print(line)
    print(f"wrote {summary['root']} in {time.perf_counter() - start:.1f} s")


def console_main():
    runner.run(main, define_flags, __doc__, uses_tensorflow=False, command=COMMAND)


if __name__ == "__main__":
    console_main()
