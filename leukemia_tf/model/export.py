"""Write the model a run ships, and read any saved form back as one kind of predictor.

A model dir holds:
  model.keras          the inference model: the trained network without its augmentation
                       layer, built from standard tf_keras layers only, so
                       `tf_keras.models.load_model("model.keras", safe_mode=True)` works
                       in any Python with tf_keras, without importing this package.
  preprocessing.json   how raw images become its input: {"canvas_size", "image_size",
                       "resize_method"} (leukemia_tf.data.preprocess.Spec).
  export/              a SavedModel for serving without this package, two signatures:
    serving_default(image: uint8 [N, S, S, 3]) -> {"probability": float32 [N]}
        images already preprocessed to S = image_size; any other H, W is refused by an
        in-graph check (declared [-1, -1, -1, 3] so TF Serving cannot skip the check by
        trusting a declared shape).
    serving_raw(image: uint8 [N, H, W, 3], any H, W) -> {"probability": float32 [N]}
        raw decoded cells (e.g. a C-NMC BMP's pixels); applies the same canvas rule and
        resize as training (`preprocess.to_model_input`) inside the graph.
    The SavedModel also carries `preprocessing_json` (a string variable) with the spec.
Probabilities are of ALL (label 1), computed in inference mode (no augmentation).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from typing import Callable, Optional, Union

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import io
from leukemia_tf.model import keras_file
from leukemia_tf.model.augment import Augmentation
from leukemia_tf.model.keras_file import ModelFileError, first_line
from leukemia_tf.data import preprocess

KERAS_FILE = "model.keras"
EXPORT_DIR = "export"
SIGNATURE = "serving_default"
RAW_SIGNATURE = "serving_raw"
log = logging.getLogger(__name__)


def inference_model(model: keras.Model) -> keras.Model:
    """The trained `model` without augmentation: each `Augmentation` layer (an identity
    at inference) becomes a standard `Identity` layer of the same name; weights copied."""
    def clone(layer):
        if isinstance(layer, Augmentation):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out


def _save_keras(model: keras.Model, path: str) -> None:
    # tf_keras writes .keras archives with zipfile on a local path only: write a local
    # temporary file, then write its bytes through the io door (any file system, atomic:
    # a reader never sees half an archive).
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, KERAS_FILE)
        model.save(local)
        io.write_bytes(path, io.read_bytes(local))


def _probability(model, image):
    return {"probability": tf.reshape(tf.cast(model(image, training=False), tf.float32), [-1])}


def _signatures(model: keras.Model, spec: preprocess.Spec):
    size = spec.image_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")])
    def serve(image):
        # Checked in the graph: a client that feeds another size gets an error, not a
        # silently wrong probability (a pooling network would run on any size).
        check = tf.debugging.assert_equal(
            tf.shape(image)[1:3], tf.constant([size, size]),
            message=f"serving_default takes uint8 [N, {size}, {size}, 3] preprocessed "
                    f"images; send raw cells of any size to {RAW_SIGNATURE}")
        with tf.control_dependencies([check]):
            image = tf.ensure_shape(tf.identity(image), [None, size, size, 3])
        return _probability(model, image)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")])
    def serve_raw(image):
        return _probability(model, preprocess.to_model_input(image, spec))

    return serve, serve_raw


def export_model(model: keras.Model, model_dir: str,
                 spec: Optional[preprocess.Spec] = None, at_root: bool = False) -> dict:
    """Write `<model_dir>/model.keras`, `preprocessing.json` and the SavedModel `export/`.

    Args:
      model: a built model from `build_model` (uint8 [N, S, S, 3] -> float32 [N, 1]); its
        augmentation is dropped (`inference_model`).
      model_dir: local or remote directory; created if missing. An existing export/ is
        replaced.
      spec: the preprocessing the model was trained with (canvas from the records'
        manifest, see `pipeline.parser.records_spec`); default: the 450 canvas at the model's S.
      at_root: the SavedModel at `model_dir`'s root instead of export/ (where Vertex AI
        serving loads it from, AIP_MODEL_DIR); only its `variables/` is replaced there.

    Returns:
      {"keras": path, "saved_model": path, "image_size": S, "preprocessing": spec dict}.

    Raises:
      OSError: a full or read-only disk; it names `model_dir` when the failing call
        named no file (h5py, zipfile).
    """
    try:
        return _export(model, model_dir, spec, at_root)
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), model_dir) from e
        raise


def _export(model: keras.Model, model_dir: str, spec: Optional[preprocess.Spec],
            at_root: bool) -> dict:
    image_size = int(model.input_shape[1])
    spec = (spec or preprocess.Spec(image_size=image_size)).check()
    if spec.image_size != image_size:
        raise ValueError(f"preprocessing makes {spec.image_size} px, the model takes "
                         f"{image_size}")
    model = inference_model(model)
    io.makedirs(model_dir)
    keras_path = io.join(model_dir, KERAS_FILE)
    _save_keras(model, keras_path)
    io.write_json(io.join(model_dir, preprocess.SPEC_FILE), spec.to_dict())

    export_dir = model_dir if at_root else io.join(model_dir, EXPORT_DIR)
    # stale variable shards from an earlier export would stay
    io.rmtree(io.join(export_dir, "variables") if at_root else export_dir)
    serve, serve_raw = _signatures(model, spec)
    # ExportArchive saves only the variables and the traced signatures; model.save in the
    # TF format would also trace every layer's call for Keras metadata nobody reads here.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve)
    archive.add_endpoint(RAW_SIGNATURE, serve_raw)
    archive.preprocessing_json = tf.Variable(json.dumps(spec.to_dict(), sort_keys=True),
                                             trainable=False, name="preprocessing_json")
    with contextlib.redirect_stdout(_Quiet()):  # its banner lists every variable
        archive.write_out(export_dir)
    return {"keras": keras_path, "saved_model": export_dir, "image_size": image_size,
            "preprocessing": spec.to_dict()}


class _Quiet:
    """A stdout sink for ExportArchive's banner."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


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
    with the spec export/ stores (one source of truth: a changed file is refused)."""
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
    stored = _exported_spec(io.join(folder, EXPORT_DIR))
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
        return _probability(model, image)["probability"]

    return Predictor(predict, spec, path, keep_alive=model, batch_size=batch_size)


def _saved_model_predictor(path: str, batch_size: int) -> Predictor:
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SIGNATURE]
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
    if io.exists(io.join(path, KERAS_FILE)):
        return _keras_predictor(io.join(path, KERAS_FILE), batch_size)
    for candidate in (io.join(path, EXPORT_DIR), path):
        if io.exists(io.join(candidate, "saved_model.pb")):
            if not trust_saved_model:
                instead = "" if candidate == path else f" ({path} has no {KERAS_FILE})"
                raise ModelFileError(
                    f"{candidate} is a SavedModel{instead}: loading it runs the graph "
                    "stored in it, so it is loaded only with --trust_saved_model (for "
                    "model dirs you or your team wrote)")
            return _saved_model_predictor(candidate, batch_size)
    raise FileNotFoundError(f"no {KERAS_FILE} or SavedModel under {path}")
