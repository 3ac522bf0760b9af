"""Write a trained model twice, and read either form back as one kind of predictor.

A model dir holds:
  model.keras   native Keras format (config + weights); reloads with safe_mode=True
                because every custom layer is registered and no Lambda is used.
  export/       a SavedModel for serving without this package: signature
                `serving_default(image: uint8 [None, S, S, 3]) -> {"probability": f32 [None]}`
                (inference mode, so no augmentation).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Callable, Union

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

# Importing these registers the custom layers that model.keras refers to.
import leukemia_tf.augment  # noqa: F401
import leukemia_tf.models  # noqa: F401

KERAS_FILE = "model.keras"
EXPORT_DIR = "export"
SIGNATURE = "serving_default"


def _image_spec(image_size: int) -> tf.TensorSpec:
    return tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="image")


def _save_keras(model: keras.Model, path: str) -> None:
    # tf_keras writes .keras archives with zipfile on a local path only, so remote model
    # dirs (gs://...) get a local temporary copy first.
    if "://" not in path:
        model.save(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, KERAS_FILE)
        model.save(local)
        tf.io.gfile.copy(local, path, overwrite=True)


def export_model(model: keras.Model, model_dir: str) -> dict:
    """Write `<model_dir>/model.keras` and the SavedModel `<model_dir>/export/`.

    Args:
      model: a built model from `build_model` (uint8 [N, S, S, 3] -> float32 [N, 1]).
      model_dir: local or remote (tf.io.gfile) directory; created if missing. An
        existing export/ is replaced.

    Returns:
      {"keras": path of model.keras, "saved_model": path of export/, "image_size": S}.
    """
    image_size = int(model.input_shape[1])
    tf.io.gfile.makedirs(model_dir)
    keras_path = tf.io.gfile.join(model_dir, KERAS_FILE)
    _save_keras(model, keras_path)

    export_dir = tf.io.gfile.join(model_dir, EXPORT_DIR)
    if tf.io.gfile.exists(export_dir):
        # Stale variable shards from an earlier export would otherwise stay behind.
        tf.io.gfile.rmtree(export_dir)

    @tf.function(input_signature=[_image_spec(image_size)])
    def serve(image):
        probability = model(image, training=False)
        return {"probability": tf.reshape(tf.cast(probability, tf.float32), [-1])}

    # ExportArchive saves only the variables and the traced signature; model.save in the
    # TF format would also trace every layer's call for Keras metadata nobody reads here.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve)
    with contextlib.redirect_stdout(io.StringIO()):  # its banner lists every variable
        archive.write_out(export_dir)
    return {"keras": keras_path, "saved_model": export_dir, "image_size": image_size}


class Predictor:
    """Probabilities of ALL for uint8 image batches, from either saved form.

    Attributes:
      image_size: the side S the model expects; callers resize to it.
      path: what was loaded (a .keras file or a SavedModel dir).
    """

    def __init__(self, fn: Callable[[tf.Tensor], tf.Tensor], image_size: int, path: str,
                 keep_alive=None, batch_size: int = 64):
        self._fn = fn
        # A SavedModel's signature does not own its variables; holding the loaded object
        # stops them being garbage-collected while the predictor lives.
        self._keep_alive = keep_alive
        self.image_size = image_size
        self.path = path
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] (or one [S, S, 3] image) -> float32 [N] probabilities."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            # No silent casting: float inputs in [0, 1] would be scored as near-black.
            raise ValueError(f"expected uint8 images of shape [N, {', '.join(map(str, expected))}],"
                             f" got {images.dtype} {images.shape}")
        out = [np.asarray(self._fn(tf.constant(images[i:i + self.batch_size])), np.float32)
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out).reshape(-1) if out else np.zeros([0], np.float32)


def _keras_predictor(path: str, batch_size: int) -> Predictor:
    # compile=False: the training loss/optimizer may be project code that inference
    # does not need (and a custom loss would otherwise have to be registered).
    model = keras.models.load_model(path, safe_mode=True, compile=False)
    image_size = int(model.input_shape[1])

    @tf.function(input_signature=[_image_spec(image_size)])
    def predict(image):
        return tf.reshape(tf.cast(model(image, training=False), tf.float32), [-1])

    return Predictor(predict, image_size, path, keep_alive=model, batch_size=batch_size)


def _saved_model_predictor(path: str, batch_size: int) -> Predictor:
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SIGNATURE]
    image_size = int(signature.structured_input_signature[1]["image"].shape[1])

    def predict(image):
        return signature(image=image)["probability"]

    return Predictor(predict, image_size, path, keep_alive=loaded, batch_size=batch_size)


def load_model(path: Union[str, os.PathLike], batch_size: int = 64) -> Predictor:
    """Load a model for inference.

    Args:
      path: a model dir (uses model.keras, else export/), a .keras file, or a SavedModel
        dir written by `export_model`.
      batch_size: images per forward pass; larger inputs are split.

    Returns:
      A `Predictor`: call it on uint8 [N, S, S, 3] numpy arrays for float32 [N]
      probabilities of ALL; `.image_size` is S.

    Raises:
      FileNotFoundError: nothing loadable at `path`.
    """
    path = os.fspath(path)
    join, exists = tf.io.gfile.join, tf.io.gfile.exists
    if path.endswith(".keras"):
        return _keras_predictor(path, batch_size)
    if exists(join(path, KERAS_FILE)):
        return _keras_predictor(join(path, KERAS_FILE), batch_size)
    for candidate in (join(path, EXPORT_DIR), path):
        if exists(join(candidate, "saved_model.pb")):
            return _saved_model_predictor(candidate, batch_size)
    raise FileNotFoundError(f"no {KERAS_FILE} or SavedModel under {path}")
