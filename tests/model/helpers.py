"""Helpers shared by the model tests: tiny configs, uint8 batches, synthetic cells."""
import numpy as np

from leukemia_tf.config import ModelConfig
from leukemia_tf.model.registry import build_model

# The smallest sizes each model accepts: seed_cnn's unpadded convs need >= 46 px.
SIZES = {"seed_cnn": 48, "resnet_small": 32, "efficientnetv2_b0": 32, "resnet50": 32,
         "efficientnet_lite0": 32}


def tiny(name="resnet_small", **kwargs):
    return ModelConfig(name=name, width=8, **kwargs)


def build(cfg, size=None):
    """build_model at the smallest size the model accepts (or `size`)."""
    return build_model(cfg, size or SIZES[cfg.name])


def uint8_batch(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def cells(n=4, size=16, seed=0):
    """Float [0, 1] cells: a coloured square on the black C-NMC background."""
    x = np.zeros((n, size, size, 3), np.float32)
    x[:, 4:12, 4:12] = 0.1 + 0.8 * np.random.default_rng(seed).random((n, 8, 8, 3))
    return x
