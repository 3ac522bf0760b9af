"""The temperature a training run stores beside its model: `<model dir>/calibration.json`.

At the end of training the trainer scores its selection split once (exact metrics); the
same scores fit a temperature (`calibration.fit_temperature`), stored as

    {"temperature": T, "fitted_on": "<selection split>", "n": <images>,
     "ece_before": ..., "ece_after": ...}

It is only stored, never applied to the model: evaluation and prediction apply it when
asked (`--calibrate=run`). The selection split also chose the best epoch, so a temperature
fitted there is slightly optimistic about the model's confidence; a held-out split named at
evaluation (`--calibrate=fold<k>`) avoids that.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.metrics import calibration
from leukemia_tf.errors import UserError

CALIBRATION_FILE = "calibration.json"
log = logging.getLogger(__name__)


class StoredCalibrationError(ValueError, UserError):
    """No usable calibration.json where one is needed; the message names the file."""


def fit_and_store(model_dir: str, scores: pd.DataFrame, fitted_on: str) -> Optional[dict]:
    """Fit a temperature on the labeled rows of `scores` (label, probability) and write
    `<model_dir>/calibration.json`. Returns what was written, or None (with a warning and
    any earlier file removed) when the split cannot be fitted (no labels, one class)."""
    path = io.join(model_dir, CALIBRATION_FILE)
    labeled = scores[scores["label"] >= 0]
    y = labeled["label"].to_numpy(np.int64)
    p = labeled["probability"].to_numpy(np.float64)
    try:
        temperature = calibration.fit_temperature(p, y)
    except calibration.CalibrationError as e:
        log.warning("no temperature fitted on %s (%s): %s not written", fitted_on, e, path)
        io.remove(path)
        return None
    value = {"temperature": temperature, "fitted_on": fitted_on, "n": int(y.size),
             "ece_before": calibration.expected_calibration_error(p, y),
             "ece_after": calibration.expected_calibration_error(
                 calibration.apply_temperature(p, temperature), y)}
    io.write_json(path, value)
    return value


def load(run_dir: str) -> dict:
    """The stored calibration of a run dir.

    Raises:
      StoredCalibrationError: the file is missing or has no valid temperature.
    """
    path = io.join(run_dir, CALIBRATION_FILE)
    if not io.exists(path):
        raise StoredCalibrationError(f"{path}: not found (runs trained before calibration "
                                     "was stored have none): use --calibrate=<split>")
    value = io.read_json(path)
    t = value.get("temperature") if isinstance(value, dict) else None
    if not isinstance(t, (int, float)) or not t > 0:
        raise StoredCalibrationError(f"{path}: no positive temperature in it")
    return value
