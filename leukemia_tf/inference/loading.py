"""Read any saved form of a trained model back as one kind of predictor, with the trust
checks: model.keras through `keras_file` (modules checked, safe_mode), a SavedModel only
when trusted (it runs its own graph). What a model dir holds: leukemia_tf.model.export.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Optional, Union

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import io
from leukemia_tf.data import preprocess
from leukemia_tf.model import export, keras_file
from leukemia_tf.model.keras_file import ModelFileError, first_line

log = logging.getLogger(__name__)


class Predictor:
    """Probabilities of ALL for uint8 image batches, from any saved form.

    Attributes:
      image_size: the side S the model expects (`__call__` takes [N, S, S, 3]).
      spec: the preprocessing that makes any decoded image into that input
        (`preprocess.to_model_input(image, predictor.spec)`).
      path: what was loaded (a .keras file or a SavedModel dir).
    """

    def __init__(self, fn: Callable[[tf.Tensor], tf.Tensor], spec: preprocess.Spec, path: str,
                 keep_alive=None, batch_size: int = 64):
        self._fn = fn
        # A SavedModel's signature does not own its variables; holding the loaded object
        # stops them being garbage-collected while the predictor lives.
        self._keep_alive = keep_alive
        self.spec = spec
        self.image_size = spec.image_size
        self.path = path
        self.batch_size = batch_size

    @property
    def keras_model(self) -> Optional[keras.Model]:
        """The loaded tf_keras network (None for a SavedModel): what reports name."""
        return self._keep_alive if isinstance(self._keep_alive, keras.Model) else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] (or one [S, S, 3] image) -> float32 [N] probabilities."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            # No silent casting: float inputs in [0, 1] would be scored as near-black.
            raise ValueError(f"expected uint8 images of shape [N, {', '.join(map(str, expected))}],"
                             f" got {images.dtype} {images.shape}; raw images go through "
                             "preprocess.to_model_input(image, predictor.spec) first")
        out = [np.asarray(self._fn(tf.constant(images[i:i + self.batch_size])), np.float32)
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out).reshape(-1) if out else np.zeros([0], np.float32)


def _spec_beside(path: str, image_size: int) -> preprocess.Spec:
    """preprocessing.json in the model's folder; older model dirs lack it. It must agree
    with the spec the SavedModel beside it stores (export/, or the folder's root in a
    serving dir): one source of truth, a changed file is refused."""
    folder = io.dirname(path)
    candidate = io.join(folder, preprocess.SPEC_FILE)
    if not io.exists(candidate):
        log.warning("%s not found beside %s: assuming the %d-px canvas and %s resize",
                    preprocess.SPEC_FILE, path, preprocess.DEFAULT_CANVAS,
                    preprocess.RESIZE_METHOD)
        return preprocess.Spec(image_size=image_size)
    try:
        spec = preprocess.Spec.from_dict(io.read_json(candidate)).check()
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{candidate} is not a preprocessing spec ({first_line(e)}): "
                             "restore it from the run, or evaluate export/ with "
                             "--trust_saved_model") from None
    # The run's export/, or the SavedModel at the folder's root (a serving dir).
    stored = _exported_spec(io.join(folder, export.EXPORT_DIR))
    if stored is None:
        stored = _exported_spec(folder)
    if stored is not None and stored != spec.to_dict():
        raise ModelFileError(
            f"{candidate} says {json.dumps(spec.to_dict(), sort_keys=True)} but the model's "
            f"export/ was made with {json.dumps(stored, sort_keys=True)}: the file was "
            "changed after training; restore it (the export's spec is the true one)")
    return spec


def _exported_spec(export_dir: str) -> Optional[dict]:
    """The spec a SavedModel stores, read from its variables as data (nothing of the
    graph runs); None when there is no export or it holds no spec."""
    prefix = io.join(export_dir, "variables", "variables")
    if not io.exists(prefix + ".index"):
        return None
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            if key.startswith("preprocessing_json/"):
                value = reader.get_tensor(key)
                return json.loads(value.decode() if isinstance(value, bytes) else value)
    except Exception:  # noqa: BLE001 - an export we cannot read as data proves nothing
        return None
    return None


def _keras_predictor(path: str, batch_size: int) -> Predictor:
    # Checked for modules and code before tf_keras reads it (keras_file); compile=False:
    # the training loss/optimizer may be project code that inference does not need.
    model = keras_file.load(path)
    image_size = int(model.input_shape[1])
    spec = _spec_beside(path, image_size)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)])
    def predict(image):
        return export.probability(model, image)["probability"]

    return Predictor(predict, spec, path, keep_alive=model, batch_size=batch_size)


def _saved_model_predictor(path: str, batch_size: int) -> Predictor:
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[export.SIGNATURE]
    if hasattr(loaded, "preprocessing_json"):
        spec = preprocess.Spec.from_dict(json.loads(loaded.preprocessing_json.numpy()))
    else:  # exported before the spec was stored: the signature's static size
        size = int(signature.structured_input_signature[1]["image"].shape[1])
        spec = _spec_beside(path.rstrip("/"), size)

    def predict(image):
        return signature(image=image)["probability"]

    return Predictor(predict, spec.check(), path, keep_alive=loaded, batch_size=batch_size)


def load_model(path: Union[str, os.PathLike], batch_size: int = 64,
               trust_saved_model: bool = False) -> Predictor:
    """Load a model for inference.

    Trust boundary: model.keras is loaded with safe_mode=True (configuration and weights
    only, no code) after `keras_file.check` refused any module outside tf_keras and this
    package's registered classes, and any Lambda layer. A SavedModel is a program:
    loading and calling it runs the graph it holds, whoever wrote it, so it is loaded
    only with `trust_saved_model=True` (`--trust_saved_model`).

    Args:
      path: a model dir (uses model.keras, else export/), a .keras file, or a SavedModel
        dir written by `export_model`.
      batch_size: images per forward pass; larger inputs are split.
      trust_saved_model: allow loading a SavedModel (it runs its own graph).

    Returns:
      A `Predictor`: call it on uint8 [N, S, S, 3] numpy arrays for float32 [N]
      probabilities of ALL; `.spec` says how raw images become [S, S, 3].

    Raises:
      FileNotFoundError: nothing loadable at `path`. ModelFileError: a broken model file
      or preprocessing.json, or an untrusted SavedModel.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        return _keras_predictor(path, batch_size)
    if io.exists(io.join(path, export.KERAS_FILE)):
        return _keras_predictor(io.join(path, export.KERAS_FILE), batch_size)
    for candidate in (io.join(path, export.EXPORT_DIR), path):
        if io.exists(io.join(candidate, "saved_model.pb")):
            if not trust_saved_model:
                instead = "" if candidate == path else f" ({path} has no {export.KERAS_FILE})"
                raise ModelFileError(
                    f"{candidate} is a SavedModel{instead}: loading it runs the graph "
                    "stored in it, so it is loaded only with --trust_saved_model (for "
                    "model dirs you or your team wrote)")
            return _saved_model_predictor(candidate, batch_size)
    raise FileNotFoundError(f"no {export.KERAS_FILE} or SavedModel under {path}")
