"""Named starting configurations: `--preset=NAME` picks one, other flags change it.

`@register_preset(name)` over a function returning a root config (`config.Config`,
`config.EvalConfig`, ...) registers it; `preset(name)` builds it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from leukemia_tf.config import (AugmentConfig, Config, ConfigError, DataConfig,
                                ModelConfig, TrainConfig)

_PRESETS: Dict[str, Callable[[], Any]] = {}


def register_preset(name: str):
    """Decorator: `@register_preset("seed_cnn")` over a function returning a root config."""
    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is registered twice")
        _PRESETS[name] = fn
        return fn
    return register


def preset(name: str) -> Any:
    """The registered preset `name` (ConfigError listing the names otherwise)."""
    if name not in _PRESETS:
        raise ConfigError(f"no preset {name!r}; presets: {', '.join(sorted(_PRESETS))}",
                          "preset")
    return _PRESETS[name]()


def preset_names(root: type = None) -> Tuple[str, ...]:
    """Registered preset names (those building a `root`, when given)."""
    return tuple(sorted(n for n, fn in _PRESETS.items()
                        if root is None or isinstance(fn(), root)))


@register_preset("default")
def default_preset() -> Config:
    """The project default: compact residual CNN on per-image normalised cells, AdamW +
    warm-up/cosine, GPU augmentation (chosen on real cells: see BUILD_NOTES).

    Run: leukemia-train --records_dir=R --model_dir=M
    """
    return Config()


@register_preset("seed_cnn")
def seed_cnn_preset() -> Config:
    """The seed notebook's setup: 4-block CNN at 224x224, Adam 1e-3, no augmentation.

    Run: leukemia-train --preset=seed_cnn --records_dir=R --model_dir=M
    """
    return Config(
        data=DataConfig(image_size=224),
        model=ModelConfig(name="seed_cnn", normalize="none",
                          augment=AugmentConfig(enabled=False)),
        train=TrainConfig(optimizer="adam", schedule="constant", warmup_epochs=0.0,
                          epochs=20, batch_size=32),
    )


@register_preset("pretrained")
def pretrained_preset() -> Config:
    """Fine-tune ImageNet EfficientNet-Lite0 (weights from the installed package, offline):
    its own input scaling (no per-image normalisation), the backbone's BatchNorm frozen
    in inference mode, 2 epochs of head-only warm-up (backbone learning rate x 0), then
    the whole network with the backbone at 0.1 x the head's learning rate; AdamW 1e-3
    with a 1-epoch warm-up and cosine decay, class weights, in-model augmentation.

    Run: leukemia-train --preset=pretrained --records_dir=R --model_dir=M
    (other flags override it, e.g. --image_size=128 or --model=efficientnet_lite2).
    """
    return Config(
        data=DataConfig(image_size=224),
        model=ModelConfig(name="efficientnet_lite0", weights="imagenet",
                          normalize="none", dropout=0.2, freeze_backbone_bn=True),
        train=TrainConfig(epochs=20, learning_rate=1e-3, warmup_epochs=1.0,
                          freeze_backbone_epochs=2, backbone_lr_multiplier=0.1),
    )
