"""The run(s) a model comes from, as an evaluation sees them: config.json and summary.json
of each run dir (empty when absent, e.g. a bare export/), the role of a split for them
(an ensemble: the worst of its members'), and the report's run context table.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import leukemia_tf
from leukemia_tf import io
from leukemia_tf.config import EvalConfig
from leukemia_tf.errors import UserError
from leukemia_tf.metrics import split_roles

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a model's run dir says about how the model was made (config.json,
    summary.json); empty dicts when absent (e.g. a bare export/)."""
    path: str
    config: dict
    summary: dict

    @property
    def train_folds(self) -> Optional[tuple]:
        folds = self.config.get("data", {}).get("train_folds")
        return None if folds is None else tuple(int(f) for f in folds)

    @property
    def val_split(self) -> Optional[str]:
        return self.config.get("data", {}).get("val_split")

    def role(self, split: str) -> str:
        return split_roles.role(split, self.train_folds, self.val_split)


def load_trained(path: str) -> TrainedRun:
    """Read config.json and summary.json of a run dir (any file system); UserError
    naming the file when one is not a JSON object."""
    found = {}
    for name in ("config", "summary"):
        file = io.join(path, f"{name}.json")
        found[name] = io.read_json(file) if io.exists(file) else {}
        if not isinstance(found[name], dict):
            raise UserError(f"{file} is not a run's {name} (a JSON object expected): "
                            "restore it from a copy of the run, or train again")
    if not found["config"]:
        log.warning("no config.json in %s: split roles are unknown", path)
    return TrainedRun(path, found["config"], found["summary"])


def split_role(split: str, trained: Sequence[TrainedRun]) -> str:
    """The split's role for these models (an ensemble: the worst of its members)."""
    return split_roles.worst(t.role(split) for t in trained)


def _joined(trained: Sequence[TrainedRun], get) -> str:
    values = []
    for t in trained:
        value = get(t)
        value = "n/a" if value in (None, "") else str(value)
        if value not in values:
            values.append(value)
    return " / ".join(values) if values else "n/a"


def run_context(cfg: EvalConfig, predictor, trained: Sequence[TrainedRun], result: dict):
    """(field, value) pairs of the report's run context table (also in metrics.json)."""
    def conf(section, key):
        return lambda t: t.config.get(section, {}).get(key)

    def params(t):
        p = t.summary.get("params")
        return None if p is None else f"{int(p):,}"

    if result["threshold_chosen_on"]:
        threshold = (f"{result['threshold']:.4f} ({result['threshold_method']}, chosen on "
                     f"{result['threshold_chosen_on']}: {result['threshold_split_role']})")
    else:
        threshold = f"{result['threshold']:.4f} (fixed)"
    folds = _joined(trained, lambda t: None if t.train_folds is None
                    else ", ".join(map(str, t.train_folds)))
    yield "model", f"{_joined(trained, conf('model', 'name'))} ({predictor.path})"
    yield "parameters", _joined(trained, params)
    yield "image size", f"{predictor.image_size} x {predictor.image_size} px"
    yield "epochs (best epoch)", (f"{_joined(trained, conf('train', 'epochs'))} (best "
                                  f"{_joined(trained, lambda t: t.summary.get('best_epoch'))})")
    yield "precision", _joined(trained, lambda t: t.summary.get("precision")
                               or t.config.get("train", {}).get("mixed_precision"))
    yield "strategy", _joined(trained, lambda t: t.summary.get("strategy")
                              or t.config.get("train", {}).get("strategy"))
    yield "train folds", folds
    yield "selection split (chose the best epoch)", _joined(trained, lambda t: t.val_split)
    yield "evaluated split", f"{result['split']} ({result['split_role']})"
    yield "test-time augmentation", result["tta"]
    yield "threshold (ALL if p >= t)", threshold
    yield "records", cfg.records_dir
    yield "records fingerprint (manifest.json content)", result["records_manifest_sha256"]
    yield "leukemia_tf version", leukemia_tf.__version__
    yield "date", result["date"]
