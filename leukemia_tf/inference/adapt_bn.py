"""Test-time batch-norm adaptation: re-estimate BatchNormalization statistics on the images
being scored, so a shift in stain or exposure (another lab, day or patient) does not push
every activation off the scale the network was trained on.

Only moving_mean and moving_variance change; kernels, biases, gamma and beta stay bit for
bit. The new statistics are exact population statistics of the given images:

* BN layers are visited in topological order (a functional model lists its layers by
  depth, inputs first; nested models such as a keras.applications backbone are entered
  where they sit in the outer graph).
* For each BN a sub-model maps the model's input to that BN's input; it runs in
  inference mode over all images (augmentation and dropout off; every earlier BN already
  uses its adapted statistics), and the per-channel mean and the population (biased)
  variance are accumulated batch by batch in float64 (Chan et al.'s pairwise update, so
  the result does not depend on the batch size). Biased, because that is the variance a
  BN layer normalises with in training mode: after adapting on a set, inference on that set
  equals a training-mode pass over it as one batch.

The cost is one pass over the images per BN layer (through the part of the network in
front of it), so the images are read many times: pass an array or a re-iterable
tf.data.Dataset, not a one-shot iterator. Under mixed precision the activations are
cast to float64 for the sums and the statistics are stored in the BN variables' dtype
(float32).
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.errors import UserError

MODES = ("split", "patient")
_BN_TYPES = (keras.layers.BatchNormalization, keras.layers.experimental.SyncBatchNormalization)


class AdaptBatchNormError(ValueError, UserError):
    """Test-time BN adaptation cannot run on this model or input."""


class NoBatchNormError(AdaptBatchNormError):
    """The model has no BatchNormalization layer, so there is nothing to adapt."""


def _walk(model) -> Iterator:
    """Every layer in topological order, descending into nested models."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def batch_norm_layers(model) -> List:
    """The BatchNormalization layers of `model` (nested models included), in order."""
    return [layer for layer in _walk(model) if isinstance(layer, _BN_TYPES)]


def has_batch_norm(model) -> bool:
    """True when `model` (or a model nested in it) has a BatchNormalization layer."""
    return bool(batch_norm_layers(model))


def _single_input(layer, what: str):
    """The tensor feeding `layer` in its parent's graph (the layer must be called once)."""
    if len(layer.inbound_nodes) != 1:
        raise AdaptBatchNormError(f"{what} {layer.name!r} is used {len(layer.inbound_nodes)} "
                                  f"times in the graph; adaptation needs each used once")
    return layer.get_input_at(0)


def _probes(model, prefix: Callable = None) -> Iterator[Tuple[object, Callable]]:
    """(BN layer, function: model input batch -> that BN's input) in topological order."""
    if not getattr(model, "_is_graph_network", False):
        raise AdaptBatchNormError(f"model {model.name!r} is not a functional/Sequential "
                                  f"Keras model; its BN inputs cannot be reached")

    def chain(sub):
        if prefix is None:
            return lambda x: sub(x, training=False)
        return lambda x: sub(prefix(x), training=False)

    for layer in model.layers:
        if isinstance(layer, _BN_TYPES):
            sub = keras.Model(model.inputs, _single_input(layer, "BatchNormalization"))
            yield layer, chain(sub)
        elif isinstance(layer, keras.Model) and has_batch_norm(layer):
            feed = keras.Model(model.inputs, _single_input(layer, "nested model"))
            yield from _probes(layer, chain(feed))


def _batches(data, batch_size: int) -> Iterator:
    """Image batches from an array [N, H, W, C] or a dataset of images / (images, labels)
    / {"image": ...} batches."""
    if isinstance(data, np.ndarray):
        if data.ndim != 4 or len(data) == 0:
            raise AdaptBatchNormError(f"expected images [N, H, W, C] with N > 0, got "
                                      f"{data.shape}")
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
        return
    if not isinstance(data, tf.data.Dataset):
        raise AdaptBatchNormError("adaptation reads the images once per BN layer: pass a "
                                  "numpy array or a tf.data.Dataset, not an iterator")
    for batch in data:
        if isinstance(batch, dict):
            yield batch["image"]
        elif isinstance(batch, (tuple, list)):
            yield batch[0]
        else:
            yield batch


def _moments_fn(probe: Callable, bn) -> Callable:
    """A compiled images -> (mean, biased variance, count) of the BN's input, per batch."""
    @tf.function(reduce_retracing=True)
    def moments(images):
        x = tf.cast(probe(images), tf.float64)
        kept = [a % x.shape.rank for a in bn.axis]   # the channel axis (or axes)
        reduce = [i for i in range(x.shape.rank) if i not in kept]
        mean, var = tf.nn.moments(x, reduce)
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), reduce)), tf.float64)
        return mean, var, count
    return moments


# Sub-models and their traces depend only on the graph, never on the statistics (those are
# read when the function runs), so they are built once per model: per-patient adaptation
# would otherwise rebuild and retrace them for every patient.
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled_probes(model) -> List[Tuple[object, Callable]]:
    if model not in _COMPILED:
        _COMPILED[model] = [(bn, _moments_fn(probe, bn)) for bn, probe in _probes(model)]
    return _COMPILED[model]


def _population_moments(moments: Callable, data, batch_size: int):
    """Exact mean and biased variance of the BN's input over all images (float64), merged
    batch by batch with the pairwise update (Chan et al.)."""
    n, mean, m2 = 0.0, 0.0, 0.0
    for images in _batches(data, batch_size):
        b_mean, b_var, b_n = (t.numpy() for t in moments(images))
        total = n + b_n
        delta = b_mean - mean
        mean = mean + delta * (b_n / total)
        m2 = m2 + b_var * b_n + delta ** 2 * (n * b_n / total)
        n = total
    if n == 0:
        raise AdaptBatchNormError("no images to adapt batch norm on")
    return mean, m2 / n


def batch_norm_state(model) -> List[Tuple[object, np.ndarray, np.ndarray]]:
    """A copy of every BN layer's (layer, moving_mean, moving_variance)."""
    return [(bn, bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy())
            for bn in batch_norm_layers(model)]


def restore_batch_norm(state: Sequence[Tuple[object, np.ndarray, np.ndarray]]) -> None:
    """Puts back statistics saved by `batch_norm_state`."""
    for bn, mean, var in state:
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(var)


def adapt_batch_norm(model, data, batch_size: int = 64):
    """Re-estimates every BN layer's moving statistics on `data`, in place.

    Args:
      model: a functional/Sequential Keras classifier (nested models allowed).
      data: uint8 images [N, H, W, 3] as an array, or a re-iterable tf.data.Dataset of
        image batches, (images, labels) or {"image": ...} batches.
      batch_size: for arrays; datasets keep their own batching.

    Returns:
      The statistics before adaptation (`batch_norm_state`), for `restore_batch_norm`.

    Raises:
      NoBatchNormError: the model has no BatchNormalization layer.
      AdaptBatchNormError: a subclassed model, a BN used twice, or no images.
    """
    if not has_batch_norm(model):
        raise NoBatchNormError(f"model {model.name!r} has no BatchNormalization layer: "
                               f"test-time BN adaptation does not apply to it")
    before = batch_norm_state(model)
    try:
        for bn, moments in _compiled_probes(model):
            mean, var = _population_moments(moments, data, batch_size)
            shape = bn.moving_mean.shape
            dtype = bn.moving_mean.dtype.as_numpy_dtype
            bn.moving_mean.assign(np.reshape(mean, shape).astype(dtype))
            bn.moving_variance.assign(np.reshape(var, shape).astype(dtype))
    except BaseException:
        restore_batch_norm(before)   # never leave a half-adapted model behind
        raise
    return before


@contextlib.contextmanager
def adapted_batch_norm(model, data, batch_size: int = 64):
    """`with adapted_batch_norm(model, images): ...` scores with adapted statistics and
    restores the original ones on exit, also after an exception."""
    before = adapt_batch_norm(model, data, batch_size)
    try:
        yield model
    finally:
        restore_batch_norm(before)


def predict_adapted(model, images: np.ndarray, mode: str = "split", patient_ids=None,
                    batch_size: int = 64) -> np.ndarray:
    """Probabilities of ALL with test-time BN adaptation; the model is restored after.

    Args:
      mode: "split" - adapt once on all `images`, then score them; "patient" - adapt on
        each patient's cells and score those (patient_ids required), so each patient's
        stain is normalised separately.

    Returns:
      float32 [N] probabilities in the order of `images`.
    """
    if mode not in MODES:
        raise AdaptBatchNormError(f"mode must be one of {MODES}, not {mode!r}")
    images = np.asarray(images)
    if mode == "split":
        groups = [np.arange(len(images))]
    else:
        if patient_ids is None or len(patient_ids) != len(images):
            raise AdaptBatchNormError("mode 'patient' needs one patient id per image")
        ids = np.asarray(patient_ids).astype(str)
        groups = [np.flatnonzero(ids == p) for p in np.unique(ids)]
    out = np.empty(len(images), np.float32)
    for idx in groups:
        with adapted_batch_norm(model, images[idx], batch_size):
            for i in range(0, idx.size, batch_size):
                part = idx[i:i + batch_size]
                out[part] = np.asarray(model(images[part], training=False),
                                       np.float32).reshape(-1)
    return out
