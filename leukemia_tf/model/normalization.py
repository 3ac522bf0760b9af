"""Per-image normalisation of cells, built from standard tf_keras layers only.

Patients differ in stain intensity and camera exposure; standardising each image removes
the part of that variation a single global rescale cannot (on real cells it was the one
lever that helped: BUILD_NOTES.md, recipe study). Statistics come from the cell's pixels
only (max channel > 2/255; the black canvas would otherwise dominate them) and the
background is set to 0.

Why standard layers: the model ships as `model.keras`, and a custom layer would make
`tf_keras.models.load_model` fail in any Python that has not imported this package: a
model nobody could open without our code. The masked mean and standard deviation need
divisions by per-image statistics, which no standard layer offers directly;
`UnitNormalization` provides them:
with m the 0/1 mask and n = sum(m), unit(m) = m / sqrt(n), so unit(m)^2 = m / n (the
weights of the masked mean) and sum(unit(m)) = sqrt(n); with c the centred cell,
unit(c) * sqrt(n) = c / std. `augment.CellNormalization` is the same computation in plain
TF ops (with a 1e-4 variance floor), kept as the reference the tests compare against.
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras
from tf_keras import layers

NORMALIZATIONS = ("none", "per_image", "channel_mean")
_BACKGROUND = 2.0 / 255.0   # the augment module's foreground threshold


def _pick_channel(c: int, name: str) -> layers.Layer:
    kernel = np.zeros((1, 1, 3, 1), np.float32)
    kernel[0, 0, c, 0] = 1.0
    return layers.Conv2D(1, 1, use_bias=False, trainable=False, dtype="float32", name=name,
                         kernel_initializer=keras.initializers.Constant(kernel))


def _spatial_sum(x, size: int, name: str):
    mean = layers.GlobalAveragePooling2D(keepdims=True, dtype="float32", name=f"{name}_avg")(x)
    return layers.Rescaling(float(size), dtype="float32", name=name)(mean)


def foreground(x, name: str = "normalize"):
    """float32 [N, H, W, 1]: 1 on the cell (max channel > 2/255), 0 on the background.

    Pixels are multiples of 1/255 at inference, so the ramp from 2.5/255 to 3/255 is a
    step there; augmented training pixels may fall inside the ramp (a soft edge).
    """
    top = layers.Maximum(dtype="float32", name=f"{name}_max")(
        [_pick_channel(c, f"{name}_channel{c}")(x) for c in range(3)])
    ramp = 510.0
    step = layers.Rescaling(ramp, offset=-ramp * (_BACKGROUND + 0.5 / 255.0),
                            dtype="float32", name=f"{name}_step")(top)
    return layers.ReLU(max_value=1.0, dtype="float32", name=f"{name}_mask")(step)


def cell_normalization(x, mode: str = "per_image", name: str = "normalize"):
    """Apply the normalisation to a functional-model tensor x (float [N, H, W, 3], [0, 1]).

    Args:
      mode: "per_image" (each channel to zero mean and unit variance over the cell) or
        "channel_mean" (each channel minus its mean over the cell).
    Returns:
      float32 [N, H, W, 3], 0 on the background.
    """
    if mode not in NORMALIZATIONS[1:]:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {mode!r}")
    size = int(x.shape[1]) * int(x.shape[2])
    f32 = {"dtype": "float32"}
    mask = foreground(x, name)
    unit_mask = layers.UnitNormalization(axis=[1, 2], name=f"{name}_unit_mask", **f32)(mask)
    weight = layers.Multiply(name=f"{name}_weight", **f32)([unit_mask, unit_mask])  # m / n
    mean = _spatial_sum(layers.Multiply(name=f"{name}_weighted", **f32)([x, weight]), size,
                        f"{name}_mean")
    neg_mean = layers.Rescaling(-1.0, name=f"{name}_neg_mean", **f32)(mean)
    centred = layers.Add(name=f"{name}_centre", **f32)([x, neg_mean])
    centred = layers.Multiply(name=f"{name}_cell", **f32)([centred, mask])
    if mode == "channel_mean":
        return centred
    unit = layers.UnitNormalization(axis=[1, 2], name=f"{name}_unit", **f32)(centred)
    root_n = _spatial_sum(unit_mask, size, f"{name}_root_n")                          # sqrt(n)
    return layers.Multiply(name=f"{name}_standardised", **f32)([unit, root_n])
