"""Frozen run configuration: the one object library code takes instead of flags.

Entry points (train.py, evaluate.py, tools) turn flags into a `Config` once; the resolved
config is written as JSON into the model dir so every result says how it was made.

Presets (see `PRESETS`) name complete configurations; each says how to run it.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Tuple


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation that runs inside the model (on the accelerator), training only.

    Cells have no orientation, so flips and rotations are label-preserving.
    """
    enabled: bool = True
    flip: bool = True               # random horizontal and vertical flips
    rot90: bool = True              # random multiples of 90 degrees
    rotate_degrees: float = 15.0    # extra arbitrary rotation in [-d, d]; 0 disables
    brightness: float = 0.05        # max delta on [0, 1] pixels; 0 disables
    contrast: float = 0.1           # contrast factor in [1 - c, 1 + c]; 0 disables
    hue: float = 0.02               # max hue shift (fraction of the colour wheel); 0 disables
    saturation: float = 0.1         # saturation factor in [1 - s, 1 + s]; 0 disables
    zoom: float = 0.0               # random zoom in/out by up to this fraction; 0 disables
    # Stain jitter in optical density (Tellez et al. 2018): per example and stain channel,
    # od' = od * U[1 - s, 1 + s] + U[-s, s]; the black background stays black. 0 disables.
    stain: float = 0.0
    stain_space: str = "hed"        # hed (haematoxylin/eosin/DAB, Ruifrok) | rgb (OD per channel)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the records are and how the tf.data pipeline reads them."""
    records_dir: str = ""
    image_size: int = 224              # model input size; the 450 canvas is resized once
    train_folds: Tuple[int, ...] = (0, 1, 2)
    val_split: str = "validation"      # "validation" or "fold<k>" (a held-out training fold)
    cache: str = "auto"                # auto | memory | disk:<path> | none
    cache_budget_gb: float = 0.0       # 0 = half of the machine's available RAM
    shuffle_buffer: int = 2048
    deterministic: bool = False
    private_threadpool_size: int = 0   # 0 = tf.data's shared pool
    class_balance: str = "weights"     # weights | resample | none
    seed: int = 0
    # Patient-grouped CV (leukemia_tf.data.grouping): a CSV mapping source_path -> cv_fold.
    # Training drops the records of fold `cv_fold`; evaluation keeps only them
    # (val_split="cv" validates on the held-out part of the training folds). Records the
    # CSV does not list are never filtered.
    cv_assignment: str = ""
    cv_fold: int = -1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network, at which input size; all models take raw uint8 pixels."""
    name: str = "resnet_small"
    image_size: int = 224
    weights: str = "none"              # none | imagenet | <path to weights/checkpoint>
    dropout: float = 0.2
    l1: float = 0.0                    # kernel L1 regularisation (the seed's recommendation)
    l2: float = 0.0                    # kernel L2 regularisation
    width: int = 32                    # base width of the project's own CNNs
    # Per-image normalisation after augmentation, training and inference alike; only the
    # project's CNNs (seed_cnn, resnet_small): keras.applications backbones ignore it and
    # keep the input scaling their pretrained weights expect.
    # none | per_image (each channel standardised over the cell's non-black pixels,
    # background 0) | channel_mean (each channel minus its mean over the cell's pixels).
    # per_image is the default: on real cells (patient-grouped CV, BUILD_NOTES) it raised
    # weighted F1 on both held-out groups; patients differ most in stain and exposure.
    normalize: str = "per_image"
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, precision and distribution."""
    model_dir: str = ""
    epochs: int = 20
    batch_size: int = 64               # global batch, split across replicas
    steps_per_epoch: int = 0           # 0 = one pass over the training data
    learning_rate: float = 1e-3        # for the global batch; see README on scaling
    schedule: str = "cosine"           # cosine (with warm-up) | constant
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"           # adam | adamw
    weight_decay: float = 1e-4         # AdamW only
    loss: str = "bce"                  # bce | focal
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    strategy: str = "auto"             # auto | default | one_device | mirrored | multi_worker
    mixed_precision: str = "auto"      # auto | float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool = False
    seed: int = 0
    deterministic: bool = False
    backup_every_steps: int = 100      # BackupAndRestore frequency (and at every epoch end)
    early_stopping_patience: int = 0   # 0 disables
    tensorboard: bool = True
    verbose: int = 2
    cpu_devices: int = 0               # >1: split the CPU into logical devices (tests, demos)
    overwrite: bool = False            # replace a finished or different run in model_dir


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_NESTED = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
           "augment": AugmentConfig}


def _build(cls, values: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        if name in _NESTED and isinstance(value, dict):
            value = _build(_NESTED[name], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(values: dict) -> Config:
    """Inverse of `Config.to_dict` (reads a model dir's config.json)."""
    model = values.get("model")
    if isinstance(model, dict) and "normalize" not in model:
        # Written before per-image normalisation existed (or was the default): none.
        values = {**values, "model": {**model, "normalize": "none"}}
    return _build(Config, values)


def replace(cfg: Config, **sections: Any) -> Config:
    """`replace(cfg, train={"epochs": 3})`: a copy with some fields of some sections changed."""
    updates = {}
    for name, changes in sections.items():
        updates[name] = dataclasses.replace(getattr(cfg, name), **changes)
    return dataclasses.replace(cfg, **updates)


def seed_cnn_preset(records_dir: str = "", model_dir: str = "") -> Config:
    """The seed notebook's setup: 4-block CNN at 224x224, Adam 1e-3, no augmentation.

    Run: python -m leukemia_tf.train --preset=seed_cnn --records_dir=R --model_dir=M
    """
    return Config(
        data=DataConfig(records_dir=records_dir, image_size=224),
        model=ModelConfig(name="seed_cnn", image_size=224, normalize="none",
                          augment=AugmentConfig(enabled=False)),
        train=TrainConfig(model_dir=model_dir, optimizer="adam", schedule="constant",
                          warmup_epochs=0.0, epochs=20, batch_size=32),
    )


def default_preset(records_dir: str = "", model_dir: str = "") -> Config:
    """The project default: compact residual CNN on per-image normalised cells, AdamW +
    warm-up/cosine, GPU augmentation (chosen on real cells: see BUILD_NOTES).

    Run: python -m leukemia_tf.train --records_dir=R --model_dir=M
    """
    return Config(data=DataConfig(records_dir=records_dir),
                  model=ModelConfig(),
                  train=TrainConfig(model_dir=model_dir))


PRESETS = {"default": default_preset, "seed_cnn": seed_cnn_preset}
