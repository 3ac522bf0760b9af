"""Several trained models as one predictor: the mean of their probabilities.

An ensemble of the k fold models of a grouped cross-validation is the cheapest accuracy
a from-scratch CNN can buy here (the C-NMC winners all ensembled). `Ensemble` has the
interface of `loading.Predictor` (`image_size`, `path`, `batch_size`, `__call__` on uint8
[N, S, S, 3] -> float32 [N]), so `scoring.score_dataset`, evaluation and prediction take
it unchanged, and `load("a,b,c")` returns a plain Predictor when given one model.

Averaging is linear, so test-time augmentation around the ensemble (scoring's `tta`)
equals TTA inside every member; `member_tta` exists for callers that cannot wrap.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np

from leukemia_tf.inference import loading
from leukemia_tf.inference import scoring


def split_paths(model_dirs: Union[str, Sequence[str]]) -> List[str]:
    """"a,b,c" or ["a", "b,c"] -> ["a", "b", "c"] (blank entries dropped)."""
    items = [model_dirs] if isinstance(model_dirs, str) else list(model_dirs)
    out = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not out:
        raise ValueError("no model dir given")
    return out


class Ensemble:
    """Mean probability of ALL over member predictors.

    Attributes:
      members: the member predictors, in the order given.
      member_paths: what each member loaded (for reports).
      image_size: the members' common input side S.
      path: the member paths joined by commas.
    """

    def __init__(self, members: Sequence, member_tta: str = "none", batch_size: int = 64):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        sizes = {int(m.image_size) for m in members}
        if len(sizes) != 1:
            # Members at different sizes would each need their own resize from the
            # canvas; the scoring pipelines resize once, to one size.
            raise ValueError(f"ensemble members take different input sizes {sorted(sizes)}: "
                             "train them at one --image_size")
        if member_tta not in scoring.TTA_MODES:
            raise ValueError(f"member_tta must be one of {scoring.TTA_MODES}")
        specs = {getattr(m, "spec", None) for m in members}
        if len(specs) != 1:
            raise ValueError(f"ensemble members were trained with different preprocessing "
                             f"{sorted(map(str, specs))}: they must share canvas, size and "
                             "resize method")
        self.spec = specs.pop()
        self.members = list(members)
        self.member_paths = [str(getattr(m, "path", "?")) for m in self.members]
        self.image_size = sizes.pop()
        self.path = ",".join(self.member_paths)
        self.batch_size = batch_size
        self.member_tta = member_tta

    def member_probabilities(self, images) -> np.ndarray:
        """float32 [members, N]: each member's probabilities (after its TTA)."""
        return np.stack([scoring.predict_batch(m, images, self.member_tta)
                         for m in self.members]).astype(np.float32)

    def __call__(self, images) -> np.ndarray:
        """uint8 [N, S, S, 3] -> float32 [N]: the members' mean probability of ALL."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        return self.member_probabilities(images).mean(axis=0)


def load(model_dirs: Union[str, Sequence[str]], batch_size: int = 64,
         member_tta: str = "none", trust_saved_model: bool = False):
    """A predictor for one model dir, or an `Ensemble` for several.

    Args:
      model_dirs: "a,b,c", or a list; each entry is whatever `loading.load_model` takes.
      batch_size: images per forward pass of each member.
      member_tta: TTA inside each member (see the module docstring).
      trust_saved_model: allow SavedModel members (they run their own graph).

    Returns:
      `loading.Predictor` for one path without member TTA, else `Ensemble`.
    """
    paths = split_paths(model_dirs)
    members = [loading.load_model(p, batch_size=batch_size,
                                  trust_saved_model=trust_saved_model) for p in paths]
    if len(members) == 1 and member_tta == "none":
        return members[0]
    return Ensemble(members, member_tta=member_tta, batch_size=batch_size)


def members_of(predictor) -> List[str]:
    """The member paths of a predictor (one entry for a single model), for reports."""
    return list(getattr(predictor, "member_paths", [predictor.path]))
