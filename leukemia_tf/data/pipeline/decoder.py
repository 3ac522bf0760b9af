"""Layer 1 of the pipeline: a serialized tf.train.Example -> tensors as stored.

Reads the shared `records.FEATURES` schema and decodes the stored pixels (raw, PNG, JPEG
or BMP, per the manifest's settings) to uint8 [H, W, 3]; nothing here knows about models.
"""
from __future__ import annotations

from typing import Callable, Dict

import tensorflow as tf

from leukemia_tf.data import records


def make_decoder(settings: dict, with_metadata: bool = False
                 ) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
    """serialized -> {"image": uint8 [H, W, 3] as stored, "label": int64} (plus
    "patient_id" and "source_path" with metadata).

    Args:
      settings: a records manifest's "settings" (encoding and stored size).
      with_metadata: also return the patient id and source path (evaluation).
    """
    decode = records.decoder(settings["encoding"], int(settings["stored_size"] or 0))

    def fn(serialized):
        ex = records.parse_example(serialized)
        out = {"image": decode(ex), "label": ex["image/class/label"]}
        if with_metadata:
            out["patient_id"] = ex["image/patient_id"]
            out["source_path"] = ex["image/source_path"]
        return out
    return fn
