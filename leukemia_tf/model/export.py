"""Write the model a run ships (read back by leukemia_tf.inference.loading).

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
import os
import tempfile
from typing import Optional

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import io
from leukemia_tf.model.augment import Augmentation
from leukemia_tf.data import preprocess

KERAS_FILE = "model.keras"
EXPORT_DIR = "export"
SIGNATURE = "serving_default"
RAW_SIGNATURE = "serving_raw"


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


def probability(model, image) -> dict:
    """{"probability": float32 [N]} of a tf_keras network in inference mode."""
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
        return probability(model, image)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")])
    def serve_raw(image):
        return probability(model, preprocess.to_model_input(image, spec))

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
