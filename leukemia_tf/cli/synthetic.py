"""Write a synthetic C-NMC-shaped tree at <output_dir>/C-NMC_Leukemia/.

    python tools/make_synthetic_cnmc.py --output_dir=demo_out/data             # demo size
    python tools/make_synthetic_cnmc.py --output_dir=D --full                  # real counts

With --full, the size flags given explicitly still override the real counts.
"""
from __future__ import annotations

import dataclasses
import time

from absl import app, flags

from leukemia_tf.data import synthetic
from leukemia_tf.cli import common

_DEFAULT = synthetic.SyntheticConfig()


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """This entry point's flags, defined into `fv` (by the entry point or a test)."""
    d = common.definer(fv)
    d.string("output_dir", None, "The tree is written at <output_dir>/C-NMC_Leukemia/.")
    d.integer("seed", _DEFAULT.seed, "Same seed, byte-identical tree.")
    d.bool("full", False, "Mirror the real counts (~15,000 images, ~9 GB).")
    d.integer("train_per_fold_all", _DEFAULT.train_all[0], "ALL images per fold.")
    d.integer("train_per_fold_hem", _DEFAULT.train_hem[0], "hem images per fold.")
    d.integer("patients_per_fold_all", _DEFAULT.patients_all[0],
              "ALL subjects per fold.")
    d.integer("patients_per_fold_hem", _DEFAULT.patients_hem[0],
              "Healthy subjects per fold (subject 3 is written h3).")
    d.integer("num_validation", _DEFAULT.num_validation,
              "Validation (prelim-phase) images, ~65% ALL as in the real set.")
    d.integer("num_test", _DEFAULT.num_test, "Final-test images (600x600, unlabeled).")
    d.integer("num_duplicates", _DEFAULT.num_duplicates,
              "fold_0 ALL images copied byte for byte into fold_2 under another "
              "patient's id (71 with --full, as in the real data).")
    d.bool("v5_validation", _DEFAULT.v5_validation,
           "Validation BMPs with the real 124-byte V5 header (608,538 bytes).")
    d.integer("num_workers", _DEFAULT.num_workers,
              "Rendering processes; 0 = one per CPU for trees of 2000+ images, else 1.")


FLAGS = flags.FLAGS

# flag -> (config field, flag value -> field value)
_SIZE_FLAGS = {
    "train_per_fold_all": ("train_all", lambda v: (v, v, v)),
    "train_per_fold_hem": ("train_hem", lambda v: (v, v, v)),
    "patients_per_fold_all": ("patients_all", lambda v: (v, v, v)),
    "patients_per_fold_hem": ("patients_hem", lambda v: (v, v, v)),
    "num_validation": ("num_validation", int),
    "num_test": ("num_test", int),
    "num_duplicates": ("num_duplicates", int),
}


def config_from_flags() -> synthetic.SyntheticConfig:
    base = synthetic.full_config() if FLAGS.full else _DEFAULT
    changes = {"seed": FLAGS.seed, "v5_validation": FLAGS.v5_validation,
               "num_workers": FLAGS.num_workers}
    for name, (field, convert) in _SIZE_FLAGS.items():
        if not FLAGS.full or FLAGS[name].present:
            changes[field] = convert(FLAGS[name].value)
    return dataclasses.replace(base, **changes)


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
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    cfg = config_from_flags()
    start = time.perf_counter()
    summary = synthetic.make_tree(FLAGS.output_dir, cfg)
    for line in summary_lines(summary):
        print(line)
    print(f"wrote {summary['root']} in {time.perf_counter() - start:.1f} s")


def console_main():
    common.run(main, define_flags, __doc__, uses_tensorflow=False)


if __name__ == "__main__":
    console_main()
