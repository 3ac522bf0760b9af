"""Split names on the command line, checked against the records' manifest before
TensorFlow loads (the manifest is JSON; leukemia_tf.data.manifest reads it without TF).

One vocabulary for every command: `--split` names a split (`validation`, `fold<k>`,
`cv`, `test`, as each command allows), and an error lists every value the command takes.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from leukemia_tf import io
from leukemia_tf.data import cnmc
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.errors import UserError

# What each name means, in the order an error lists them.
MEANING = {"validation": "validation (the labeled set)",
           "cv": "cv (the held-out --cv_fold of the training folds)",
           "test": "test (the unlabeled final test set)",
           "auto": "auto"}


def manifest_folds(records_dir: str) -> Optional[List[int]]:
    """The training folds a local records dir holds (UserError naming the dir or file if
    there is no usable manifest); None for a URL (reading it would load TensorFlow: the
    library checks it later)."""
    loaded = local_manifest(records_dir)
    return None if loaded is None else manifest_lib.train_folds(loaded[0])


def local_manifest(records_dir: str) -> Optional[Tuple[dict, str]]:
    """(manifest, its fingerprint) of a local records dir, read once (UserError
    naming the dir or file if there is no usable manifest); None for a URL."""
    if "://" in records_dir:
        return None
    if not io.isdir(records_dir):
        raise UserError(f"records dir {records_dir} does not exist (convert the images "
                        "first: leukemia-convert)")
    if not io.exists(manifest_lib.manifest_path(records_dir)) and _is_image_tree(records_dir):
        raise UserError(f"--records_dir {records_dir} is a C-NMC image tree, not converted "
                        f"records: convert it first (leukemia-convert --data_dir="
                        f"{records_dir} --output_dir=<records dir>) and pass that "
                        "--records_dir")
    return manifest_lib.load_pinned(records_dir)


def _is_image_tree(path: str) -> bool:
    try:
        cnmc.find_root(path)
    except cnmc.CnmcError:
        return False
    return True


def check(name: str, folds: Optional[Sequence[int]], flag: str, records_dir: str,
          allowed: Sequence[str]) -> None:
    """UserError unless `name` is one of `allowed` ("fold" = fold<k> for a fold the
    manifest lists; any k when `folds` is None), naming `flag` and every valid value."""
    k = name[4:] if name.startswith("fold") else ""
    if k.isdigit() and "fold" in allowed:
        if folds is not None and int(k) not in folds:
            raise UserError(f"{flag}={name}: there is no fold {k} in {records_dir} "
                            f"(folds: {', '.join(map(str, folds))})")
        return
    if name in allowed and name != "fold":
        return
    ks = "?" if folds is None else ", ".join(map(str, folds))
    values = [f"fold<k> (training fold k: {ks})" if a == "fold" else MEANING[a]
              for a in allowed]
    raise UserError(f"{flag}={name} is not a split this command takes: one of "
                    f"{', '.join(values)}")
