"""What a split was to the model being measured: held-out, selection or trained-on.

Why a module of its own: a number is only honest with its split's role beside it. The
same rule labels evaluation reports, cross-validation rows and threshold choices, so it
lives in one place (and an ensemble of models takes the worst role of its members).

  held-out    neither trained on nor used to pick the best epoch: an unbiased estimate
  selection   the run's `val_split`: it chose the best epoch, so its numbers are optimistic
  trained-on  one of the run's `train_folds`: the model was fitted on these images
  unknown     the model's config.json is missing, so nothing can be said
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

HELD_OUT = "held-out"
SELECTION = "selection"
TRAINED_ON = "trained-on"
UNKNOWN = "unknown"
# Worst first: an ensemble's role on a split is the worst of its members' roles.
_SEVERITY = (TRAINED_ON, UNKNOWN, SELECTION, HELD_OUT)


def split_fold(split: str) -> Optional[int]:
    """The fold number of `fold<k>`, else None (validation, test)."""
    if split.startswith("fold") and split[4:].isdigit():
        return int(split[4:])
    return None


def role(split: str, train_folds: Optional[Sequence[int]], val_split: Optional[str]) -> str:
    """The role of `split` ("validation" or "fold<k>") for a run trained on `train_folds`
    that selected its best epoch on `val_split`; unknown when train_folds is None."""
    if train_folds is None:
        return UNKNOWN
    fold = split_fold(split)
    if fold is not None and fold in {int(f) for f in train_folds}:
        return TRAINED_ON
    if split == val_split:
        return SELECTION
    return HELD_OUT


def of_run_split(monitor: str) -> str:
    """The role of a run's own `val_split` for the run itself: it chose the best epoch
    (selection), unless `--monitor=last` kept the final epoch without looking at it."""
    return HELD_OUT if monitor == "last" else SELECTION


def run_split_name(val_split: str, cv_fold: int = -1) -> str:
    """A run's `val_split` as a user names it: `fold2`, `validation`, `cv fold 3`."""
    return f"cv fold {cv_fold}" if val_split == "cv" and cv_fold >= 0 else val_split


def titled(split: str, split_role: str) -> str:
    """`fold2 (selection split)`: a split with its role, for a line of output."""
    return f"{split} ({split_role} split)"


def worst(roles: Iterable[str]) -> str:
    """The most biased of several roles (e.g. the members of an ensemble)."""
    roles = list(roles)
    if not roles:
        return UNKNOWN
    return min(roles, key=_SEVERITY.index)


def banner(split: str, split_role: str, train_folds: Optional[Sequence[int]] = None) -> str:
    """A one-paragraph warning for a biased role; "" for held-out."""
    if split_role == SELECTION:
        return (f"{split} is this model's selection split: it chose the best epoch, so "
                "these numbers are optimistic. For an unbiased estimate evaluate a held-out "
                "split (neither in the run's --train_folds nor its --split).")
    if split_role == TRAINED_ON:
        folds = "" if train_folds is None else f" (train_folds {', '.join(map(str, train_folds))})"
        return (f"{split} is a training fold of this model{folds}: it was fitted on these "
                "images, so these numbers measure fit, not generalisation.")
    if split_role == UNKNOWN:
        return (f"the model's config.json was not found, so it is unknown whether {split} "
                "was trained on or chose the best epoch: treat these numbers as possibly "
                "biased.")
    return ""


def threshold_biased(split: str, split_role: str) -> bool:
    """Whether a threshold tuned on `split` is fitted to training images: a trained-on
    split, or an unknown role on a fold (the trainer never trains on `validation`)."""
    if split_role == TRAINED_ON:
        return True
    return split_role == UNKNOWN and split_fold(split) is not None


def check_threshold_split(split: str, split_role: str, allow_biased: bool) -> None:
    """Refuse to tune a threshold on images the model was fitted on (unless allowed).

    Raises:
      ValueError: `threshold_biased(split, split_role)` and allow_biased is False.
    """
    if allow_biased or not threshold_biased(split, split_role):
        return
    why = ("the model was trained on it" if split_role == TRAINED_ON
           else "the model's config.json is missing, so it may have been trained on")
    raise ValueError(
        f"refusing to choose the threshold on {split}: {why}, so the threshold would fit "
        "the training images. Use --threshold_split with a split that is neither trained "
        "on nor reported, a numeric --threshold, or --allow_biased_threshold to accept the "
        "bias (it is then recorded in metrics.json and the report).")
