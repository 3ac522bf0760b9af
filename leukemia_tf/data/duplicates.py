"""Byte-identical images on both sides of a train / held-out boundary (no TensorFlow).

The converter records every group of identical files in `manifest["duplicate_groups"]`
(with the splits and folds each group spans). Training, evaluation and cross-validation
ask the same question of it: how many groups have a copy among the training folds and
another in the held-out set? Each such group is an image the model has already seen.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Set, Tuple, Union

from leukemia_tf.data.manifest import Selection


def leaked_groups(manifest: dict, train_folds: Sequence[int],
                  held_out: Union[str, Selection]) -> int:
    """Duplicate groups with a copy in the training folds and one in `held_out`.

    Args:
      manifest: a records dir's manifest.
      train_folds: the training folds of the run.
      held_out: "validation", "test", "fold<k>", or a Selection (a split, or training
        folds: a group counts when it has a copy in any of them).
    """
    train = set(int(f) for f in train_folds)
    split, folds = _side(held_out)
    n = 0
    for g in manifest.get("duplicate_groups", []):
        in_train = "train" in g["splits"] and bool(train & set(g["folds"]))
        in_eval = bool(folds & set(g["folds"])) if folds is not None else split in g["splits"]
        n += bool(in_train and in_eval)
    return n


def leak_warnings(n: int, train_folds: Sequence[int], held_out: str) -> List[str]:
    """The warning training, evaluation and cross-validation give for `n` leaked groups
    (`leaked_groups`), or [] when there are none.

    Args:
      held_out: the name of the held-out side ("validation", "fold2", ...).
    """
    if not n:
        return []
    groups = "1 group of byte-identical images is" if n == 1 else \
        f"{n} groups of byte-identical images are"
    folds = sorted(set(int(f) for f in train_folds))
    return [f"{groups} both in the training folds {folds} and in {held_out}: those images "
            f"were seen in training, so scores on {held_out} are optimistic"]


def _side(held_out: Union[str, Selection]) -> Tuple[str, Optional[Set[int]]]:
    """(split, held-out training folds or None for a whole split)."""
    if isinstance(held_out, Selection):
        if held_out.split == "train":
            return "train", set(int(f) for f in held_out.folds or ())
        return held_out.split, None
    if held_out.startswith("fold") and held_out[4:].isdigit():
        return "train", {int(held_out[4:])}
    return held_out, None
