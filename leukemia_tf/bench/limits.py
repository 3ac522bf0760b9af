"""The limits each project figure is held against, measured in the same run.

  bare_rate      a bare cached-tensor tf.data pipeline (the decoded uint8 set as one
                 in-memory tensor, shuffle, repeat, batch, prefetch) of the same N, size and
                 batch: what the project's steady state can at best reach per element
  model_flops    the model's FLOPs per image, counted by the TF profiler on the graph of
                 its forward pass; a training step is counted as 3x the forward pass (the
                 usual rule: the backward pass costs two forward passes, one for the
                 gradients of the activations, one for those of the weights)
  machine_flops  the machine's dense FLOP/s: a large matmul and the model's heaviest
                 convolution (same shape and batch), timed in this process

FLOP utilisation = training FLOPs per image x images/s / the faster of the two dense
rates. Absolute rates measure the machine; these ratios measure the project.
"""
from __future__ import annotations

import time
from typing import Optional, Tuple

import numpy as np

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from leukemia_tf.bench.rates import time_batches

AUTOTUNE = tf.data.AUTOTUNE
TRAIN_FLOPS_FACTOR = 3  # forward + backward = 3 x forward (see the module docstring)


def synthetic_set(n: int, image_size: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """n random uint8 images [n, S, S, 3] and int64 labels: a decoded set's shape."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
            rng.integers(0, 2, n).astype(np.int64))


def bare_rate(n: int, image_size: int, batch: int, shuffle_buffer: int, min_batches: int,
              min_seconds: float) -> dict:
    """Images/s of the bare per-element pipeline over an in-memory uint8 tensor of n
    images: the steady-state limit of the project's cached pipeline (same batch and
    shuffle buffer, the same (image, label, weight) output)."""
    x, y = synthetic_set(n, image_size)
    w = tf.constant([1.0, 1.0])
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).cache()
    ds = ds.shuffle(shuffle_buffer, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda b: (b["image"], tf.cast(b["label"], tf.float32)[:, None],
                           tf.gather(w, b["label"])), num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    warmup = (n + shuffle_buffer) // batch + 2  # the cache is full, as in the steady state
    out = time_batches(iter(ds), warmup, min_batches, min_seconds)
    out.update(num_examples=n, layout="element")
    return out


def _conv_layers(model):
    """Every Conv2D of the model, nested backbones included (depthwise ones excluded)."""
    import tf_keras as keras
    seen, out = set(), []
    for layer in [model] + list(model.submodules):
        if isinstance(layer, keras.layers.Conv2D) and id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def heaviest_conv(model) -> Optional[dict]:
    """The Conv2D with the most FLOPs per image: its input shape, kernel and strides."""
    best, best_flops = None, 0
    for layer in _conv_layers(model):
        try:
            h, w, cin = (int(d) for d in layer.input.shape[1:])
            ho, wo, cout = (int(d) for d in layer.output.shape[1:])
        except (AttributeError, TypeError, ValueError):
            continue  # a layer used more than once or not built: no single shape
        kh, kw = layer.kernel_size
        flops = 2 * ho * wo * kh * kw * cin * cout // max(1, layer.groups)
        if flops > best_flops:
            best_flops = flops
            best = {"layer": layer.name, "input": [h, w, cin], "filters": cout,
                    "kernel": [kh, kw], "strides": list(layer.strides),
                    "padding": layer.padding.upper(), "flops_per_image": flops}
    return best


def model_flops(model, image_size: int) -> dict:
    """FLOPs per image of `model`'s forward pass (inference mode, no augmentation),
    counted by the TF profiler on the frozen graph of one image; training = 3x."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, image_size, image_size, 3], tf.uint8))
    graph = convert_variables_to_constants_v2(fn).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    forward = int(tf.compat.v1.profiler.profile(graph=graph, options=opts).total_float_ops)
    return {"forward_flops_per_image": forward,
            "train_flops_per_image": TRAIN_FLOPS_FACTOR * forward,
            "train_flops_rule": f"{TRAIN_FLOPS_FACTOR} x forward (profiler count of the "
                                "forward graph)"}


def _time_op(fn, flops: float, min_seconds: float) -> float:
    fn()  # trace and warm up
    fn()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return flops * n / (time.perf_counter() - start)


def machine_flops(dtype: str = "float32", conv: Optional[dict] = None, batch: int = 32,
                  matmul_size: int = 2048, min_seconds: float = 2.0) -> dict:
    """Dense FLOP/s of this machine in `dtype`: a square matmul of `matmul_size` and, when
    given, a convolution of `conv`'s shape (see `heaviest_conv`) over `batch` images."""
    dt = tf.as_dtype(dtype)
    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal([matmul_size, matmul_size]), dt)
    b = tf.cast(rng.normal([matmul_size, matmul_size]), dt)
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    out = {"dtype": dtype, "matmul_size": matmul_size,
           "matmul_flops_per_sec": _time_op(lambda: matmul().numpy(),
                                            2.0 * matmul_size ** 3, min_seconds)}
    if conv:
        h, w, cin = conv["input"]
        x = tf.cast(rng.normal([batch, h, w, cin]), dt)
        k = tf.cast(rng.normal([*conv["kernel"], cin, conv["filters"]]), dt)
        op = tf.function(lambda: tf.reduce_sum(tf.nn.conv2d(
            x, k, [1, *conv["strides"], 1], conv["padding"])))
        out["conv"] = conv
        out["conv_flops_per_sec"] = _time_op(lambda: op().numpy(),
                                             conv["flops_per_image"] * batch, min_seconds)
    out["peak_flops_per_sec"] = max(out.get("conv_flops_per_sec", 0.0),
                                    out["matmul_flops_per_sec"])
    return out


def utilisation(train_flops_per_image: float, images_per_sec: float,
                peak_flops_per_sec: float) -> float:
    """Fraction of the machine's measured dense FLOP/s a training run uses."""
    return train_flops_per_image * images_per_sec / peak_flops_per_sec
