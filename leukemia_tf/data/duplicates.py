"""Byte-identical images on both sides of a train / held-out boundary (no TensorFlow).

The converter records every group of identical files in `manifest["duplicate_groups"]`
(with the splits and folds each group spans). Training, evaluation and cross-validation
ask the same question of it: how many groups have a copy among the training folds and
another in the held-out set? Each such group is an image the model has already seen.
"""
from __future__ import annotations

from typing import Sequence


def leaked_groups(manifest: dict, train_folds: Sequence[int], held_out: str) -> int:
    """Duplicate groups with a copy in the training folds and one in `held_out`.

    Args:
      manifest: a records dir's manifest.
      train_folds: the training folds of the run.
      held_out: "validation", "test" or "fold<k>".
    """
    train = set(int(f) for f in train_folds)
    n = 0
    for g in manifest.get("duplicate_groups", []):
        in_train = "train" in g["splits"] and bool(train & set(g["folds"]))
        if held_out.startswith("fold"):
            in_eval = int(held_out[4:]) in g["folds"]
        else:
            in_eval = held_out in g["splits"]
        n += bool(in_train and in_eval)
    return n
