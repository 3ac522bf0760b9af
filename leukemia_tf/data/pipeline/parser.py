"""Layer 2 of the pipeline: decoded tensors -> model input, for training or evaluation.

Per example: the stored pixels become the model's uint8 input through
`preprocess.to_model_input` (the one canvas + resize serving uses too), unless the
converter already stored that output. Per batch: training yields (images, labels [B,1],
per-example class weights [B]); evaluation yields (images, labels [B,1]) or the batch dict
with metadata. Augmentation is not here: it runs inside the model on the accelerator.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import tensorflow as tf

from leukemia_tf.data import preprocess

Example = Dict[str, tf.Tensor]


def records_spec(manifest: dict, image_size: int) -> preprocess.Spec:
    """The preprocessing a model trained on these records at `image_size` gets."""
    settings = manifest["settings"]
    spec = preprocess.Spec(canvas_size=int(settings.get("canvas_size",
                                                        preprocess.DEFAULT_CANVAS)),
                           image_size=int(image_size))
    preprocess.check_records(spec, settings)
    return spec


def example_parser(spec: preprocess.Spec, stored_size: int) -> Callable[[Example], Example]:
    """A decoded example -> the same example with the model's input image."""
    # Pre-resized records already hold `to_model_input`'s output (made by the converter
    # with the same function); it is not idempotent, so it must not run twice.
    prepared = stored_size == spec.image_size and stored_size != spec.canvas_size

    def fn(example):
        if prepared:
            return example
        return {**example, "image": preprocess.to_model_input(example["image"], spec)}
    return fn


def training_batch(weights: Optional[Dict[int, float]]) -> Callable[[Example], tuple]:
    """A batch dict -> (uint8 images, float32 labels [B,1], float32 weights [B]).

    Args:
      weights: class weights {label: weight}; None or empty weighs every example 1.
    """
    table = weights or {0: 1.0, 1: 1.0}
    w = tf.constant([table.get(0, 1.0), table.get(1, 1.0)], tf.float32)

    def fn(batch):
        label = tf.cast(batch["label"], tf.float32)
        return batch["image"], label[:, None], tf.gather(w, tf.cast(batch["label"], tf.int32))
    return fn


def eval_batch(batch: Example) -> tuple:
    """A batch dict -> (uint8 images, float32 labels [B,1])."""
    return batch["image"], tf.cast(batch["label"], tf.float32)[:, None]
