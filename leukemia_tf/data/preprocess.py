"""THE way any decoded image becomes model input: one implementation, TensorFlow ops.

    canvas rule  centre-crop or black-pad each side to `canvas_size` (never rescale: the
                 600x600 final-test images hold the cell at the scale of the 450x450
                 training images, so stretching them would shrink every cell)
    resize       the square canvas to `image_size` with ONE method, RESIZE_METHOD ("area"),
                 rounded back to uint8 so caches and records stay uint8

The converter (when it pre-resizes, in its parent process), the tf.data pipeline,
predict-from-files and the exported model's `serving_raw` signature all call
`to_model_input`, so training and serving cannot drift apart. The numpy canvas in
`images.to_canvas` is not used for model input.

Why "area": it averages exactly the source pixels each output pixel covers (the box
filter), so a 450 -> 224 shrink neither aliases nor blurs beyond the pixel footprint; it
is the resize the pipeline used before this module existed (models trained on 450-px
records stay valid), and it measured fastest of the anti-aliased choices (450 -> 224 on
one core: area 1.7 ms, bilinear+antialias 2.4 ms, bicubic+antialias 3.7 ms). Enlarging
(image_size > canvas_size) with area repeats pixels like nearest-neighbour; nothing in
this project enlarges.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

RESIZE_METHOD = "area"
DEFAULT_CANVAS = 450
SPEC_FILE = "preprocessing.json"


@dataclasses.dataclass(frozen=True)
class Spec:
    """How images were turned into this model's input; saved beside every exported model."""
    canvas_size: int = DEFAULT_CANVAS
    image_size: int = 224
    resize_method: str = RESIZE_METHOD

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Spec":
        return cls(canvas_size=int(values["canvas_size"]), image_size=int(values["image_size"]),
                   resize_method=str(values.get("resize_method", RESIZE_METHOD)))

    def check(self) -> "Spec":
        if self.canvas_size <= 0 or self.image_size <= 0:
            raise ValueError(f"canvas_size and image_size must be > 0: {self}")
        if self.resize_method != RESIZE_METHOD:
            raise ValueError(f"resize method {self.resize_method!r} is not this package's "
                             f"{RESIZE_METHOD!r}: the model was preprocessed differently")
        return self


def to_canvas(image: tf.Tensor, canvas_size: int) -> tf.Tensor:
    """uint8 [H, W, 3] or [N, H, W, 3], any H, W -> [..., canvas, canvas, 3].

    Centre crop of a larger side (first row/column kept at (H - canvas) // 2), centred
    black padding of a smaller side (at (canvas - H) // 2); pixels are never resampled.
    """
    image = tf.convert_to_tensor(image)
    if image.shape[-3] == canvas_size and image.shape[-2] == canvas_size:
        return image
    return tf.image.resize_with_crop_or_pad(image, canvas_size, canvas_size)


def resize(canvas: tf.Tensor, image_size: int) -> tf.Tensor:
    """Square uint8 canvas ([S, S, 3] or batched) -> uint8 at image_size, RESIZE_METHOD."""
    canvas = tf.convert_to_tensor(canvas)
    if canvas.shape[-3] == image_size and canvas.shape[-2] == image_size:
        return canvas
    out = tf.image.resize(canvas, [image_size, image_size], method=RESIZE_METHOD)
    # tf.round is round-half-to-even; the one rounding rule everywhere keeps paths equal.
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def to_model_input(image: tf.Tensor, spec: Spec) -> tf.Tensor:
    """Any decoded uint8 image [H, W, 3] (or a batch [N, H, W, 3] of one size) -> model
    input uint8 [image_size, image_size, 3] (or [N, ...]): canvas rule, then resize.

    Works eagerly, in tf.function, in tf.data and in an exported SavedModel.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"expected uint8 pixels, got {image.dtype.name}")
    out = resize(to_canvas(image, spec.canvas_size), spec.image_size)
    shape = [spec.image_size, spec.image_size, 3]
    return tf.ensure_shape(out, ([None] if out.shape.rank == 4 else []) + shape)


_TRACED = {}


def function_for(spec: Spec):
    """A traced `to_model_input` for single images of any size (one trace per spec), for
    callers that preprocess image by image eagerly (predict, the converter's parent)."""
    if spec not in _TRACED:
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def fn(image):
            return to_model_input(image, spec)
        _TRACED[spec] = fn
    return _TRACED[spec]


def check_records(spec: Spec, settings: dict, source: Optional[str] = None) -> None:
    """Refuse records whose stored pixels were not made by this spec's canvas/resize.

    Args:
      spec: the model's preprocessing.
      settings: a records manifest's "settings".
    """
    canvas = int(settings.get("canvas_size", DEFAULT_CANVAS))
    stored = int(settings.get("stored_size", 0) or 0)
    where = f" ({source})" if source else ""
    if canvas != spec.canvas_size:
        raise ValueError(f"records use a {canvas}-px canvas{where}, the model a "
                         f"{spec.canvas_size}-px one: the cells would be at another scale")
    if stored and stored not in (canvas, spec.image_size):
        raise ValueError(f"records were pre-resized to {stored} px{where}, the model takes "
                         f"{spec.image_size} px: resizing twice differs from serving; "
                         "convert without --image_size or with the model's size")
    method = settings.get("resize_method", RESIZE_METHOD)
    if stored == spec.image_size and stored != canvas and method != spec.resize_method:
        raise ValueError(f"records were resized with {method!r}{where}, the model expects "
                         f"{spec.resize_method!r}")
