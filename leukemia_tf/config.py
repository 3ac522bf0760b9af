"""Frozen configurations: the one object library code takes instead of flags.

Each command has one root, a tree of frozen dataclasses: `Config` (train), `EvalConfig`,
`PredictConfig`, `CrossvalConfig`. Every setting has one home: the input size, the seed
and determinism live in `DataConfig` (the pipeline, which takes only the data section,
needs all three; the model builder and the trainer read them from there).

Flags reach a root generically (leukemia_tf/cli/flag_table.py): `override(cfg, "train.epochs",
"3")` parses the text by the field's annotation, and an unknown path is one error that
lists the close matches. Named presets live in leukemia_tf/presets.py.
This module imports no TensorFlow, so a bad flag is reported in a fraction of a second.
The trainer's resolved config is written as JSON into the model dir.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from typing import Any, Dict, Iterable, Mapping, Tuple

from leukemia_tf.errors import UserError


class ConfigError(ValueError, UserError):
    """A setting that does not exist, does not parse, or is out of range.

    `path` is the dotted setting (`train.epochs`) so an entry point can name its flag.
    """

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


def declared(default: Any, *, choices: Tuple[str, ...] = (), minimum: float = None,
             below: float = None):
    """A field whose allowed values are declared once: flags, help and checks read them."""
    meta = {"choices": tuple(choices), "minimum": minimum, "below": below}
    return dataclasses.field(default=default, metadata=meta)


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
    # hed (haematoxylin/eosin/DAB, Ruifrok) | rgb (OD per channel)
    stain_space: str = declared("hed", choices=("hed", "rgb"))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the records are and how the tf.data pipeline reads them; also the run-wide
    input size, seed and determinism (their one home)."""
    records_dir: str = ""
    image_size: int = declared(224, minimum=1)  # model input size; the canvas is resized once
    train_folds: Tuple[int, ...] = (0, 1, 2)
    val_split: str = "validation"      # "validation", "fold<k>" (a held-out fold) or "cv"
    cache: str = "auto"                # auto | memory | disk:<path> | none
    cache_budget_gb: float = declared(0.0, minimum=0)  # 0 = half of the available RAM
    shuffle_buffer: int = declared(2048, minimum=1)
    deterministic: bool = False        # deterministic ops and tf.data order (slower)
    private_threadpool_size: int = declared(0, minimum=0)  # 0 = tf.data's shared pool
    class_balance: str = declared("weights", choices=("weights", "resample", "none"))
    seed: int = 0                      # weights, augmentation, shuffling
    # Patient-grouped CV (leukemia_tf.data.grouping): a CSV mapping source_path -> cv_fold.
    # Training drops the records of fold `cv_fold`; evaluation keeps only them
    # (val_split="cv" validates on the held-out part of the training folds). Records the
    # CSV does not list are never filtered.
    cv_assignment: str = ""
    cv_fold: int = -1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network; all models take raw uint8 pixels of `DataConfig.image_size`."""
    # The names of leukemia_tf.model.registry (kept in leukemia_tf/model/__init__.py so
    # they are known without TensorFlow).
    name: str = "resnet_small"
    weights: str = "none"              # none | imagenet | <path to weights/checkpoint>
    dropout: float = declared(0.2, minimum=0, below=1)
    l1: float = declared(0.0, minimum=0)  # kernel L1 regularisation (the seed's recommendation)
    l2: float = declared(0.0, minimum=0)  # kernel L2 regularisation
    width: int = declared(32, minimum=1)  # base width of the project's own CNNs
    # Per-image normalisation after augmentation, training and inference alike; only the
    # project's CNNs (seed_cnn, resnet_small): pretrained backbones (efficientnet_lite*,
    # keras.applications) ignore it and keep the input scaling their weights expect.
    # none | per_image (each channel standardised over the cell's non-black pixels,
    # background 0) | channel_mean (each channel minus its mean over the cell's pixels).
    # per_image is the default: on real cells (patient-grouped CV, BUILD_NOTES) it raised
    # weighted F1 on both held-out groups; patients differ most in stain and exposure.
    normalize: str = declared("per_image", choices=("none", "per_image", "channel_mean"))
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    freeze_backbone_bn: bool = False   # pretrained backbone's BatchNorm in inference mode


# The measures that can choose the best epoch (training/callbacks.MONITOR_KEYS says which
# Keras log each reads and whether higher is better).
MONITORS = ("val_auc", "val_loss", "val_weighted_f1", "last")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, precision and distribution."""
    model_dir: str = ""
    epochs: int = declared(20, minimum=1)
    batch_size: int = declared(64, minimum=1)  # global batch, split across replicas
    steps_per_epoch: int = declared(0, minimum=0)  # 0 = one pass over the training data
    learning_rate: float = declared(1e-3, minimum=0)  # global batch; README on scaling
    schedule: str = declared("cosine", choices=("cosine", "constant"))  # cosine has warm-up
    warmup_epochs: float = declared(1.0, minimum=0)
    optimizer: str = declared("adamw", choices=("adam", "adamw"))
    weight_decay: float = declared(1e-4, minimum=0)  # AdamW only
    loss: str = declared("bce", choices=("bce", "focal"))
    focal_gamma: float = declared(2.0, minimum=0)
    label_smoothing: float = declared(0.0, minimum=0, below=1)
    strategy: str = declared("auto", choices=("auto", "default", "one_device", "mirrored",
                                              "multi_worker"))
    mixed_precision: str = declared("auto", choices=("auto", "float32", "mixed_float16",
                                                     "mixed_bfloat16"))
    # auto | on | off: XLA-compile the train step; auto is decided per device and
    # precision by training/step_settings.py (the rule follows the benchmark's table).
    jit_compile: str = declared("auto", choices=("auto", "on", "off"))
    steps_per_execution: int = declared(1, minimum=1)  # train steps per tf.function call
    inter_op_threads: int = declared(0, minimum=0)  # TF thread pools at start-up; 0 = TF's
    intra_op_threads: int = declared(0, minimum=0)
    backup_every_steps: int = declared(100, minimum=0)  # BackupAndRestore (and every epoch)
    early_stopping_patience: int = declared(0, minimum=0)  # 0 disables
    # What chooses the epoch whose weights are exported (best/): a validation measure of
    # the `--split` each epoch, or `last` (a fixed schedule: the final epoch, no choice).
    monitor: str = declared("val_auc", choices=MONITORS)
    freeze_backbone_epochs: int = declared(0, minimum=0)  # first N epochs: backbone lr x 0
    backbone_lr_multiplier: float = declared(1.0, minimum=0)  # backbone lr / head's, after
    tensorboard: bool = True
    verbose: int = declared(3, minimum=0)  # display: 0 none, 1 bar, 2 lines, 3 auto (bar on a tty)
    keras_progress: bool = False       # Keras' own fit output (at `verbose`) instead of ours
    cpu_devices: int = declared(0, minimum=0)  # >1: split the CPU into logical devices
    overwrite: bool = False            # replace a finished or different run in model_dir
    serving_dir: str = ""             # also export the servable model here (README "Cloud jobs")
    tensorboard_dir: str = ""         # TensorBoard events ("" = <model_dir>/logs)
    from_environment: Tuple[str, ...] = ()  # settings the AIP_* variables gave (a record)


@dataclasses.dataclass(frozen=True)
class Config:
    """The trainer's root (`leukemia-train`)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


TTA = ("none", "flips", "dihedral8")
PREDICT_CALIBRATE = ("none", "run")  # predict has no labels to fit a temperature on


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """The options that change the scores of evaluate and predict (leukemia_tf.inference.
    options), all off by default."""
    adapt_bn: str = declared("none", choices=("none", "set", "patient"))  # transductive
    calibrate: str = "none"        # none | run | <split> (evaluate only): temperature scaling
    neighbour_vote: int = declared(0, minimum=0)   # k nearest scored cells; transductive


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`leukemia-evaluate`: one evaluation folder per (split, tta, threshold)."""
    model_dir: str                 # a training model dir, an export/ dir or a .keras file
    records_dir: str
    split: str = "validation"      # validation | fold<k>
    # dihedral8 by default: it won pooled out-of-fold weighted F1 and ROC AUC on real
    # patients (BUILD_NOTES "Real cells, round 3"); none scores 8x faster
    tta: str = declared("dihedral8", choices=TTA)
    threshold: str = "0.5"         # a value, or youden | f1 (chosen on threshold_split)
    threshold_split: str = "auto"  # auto | validation | fold<k>
    allow_biased_threshold: bool = False  # allow youden|f1 on a trained-on split
    batch_size: int = declared(64, minimum=1)
    out_dir: str = ""              # root of the evaluation folders; default <run dir>/eval
    progress: bool = False
    trust_saved_model: bool = False  # allow a SavedModel (it runs its own graph)
    allow_other_records: bool = False  # score records the model was not trained on
    allow_other_model: bool = False  # score a model.keras its summary.json does not name
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    shortcut_probe: bool = True    # hand-feature baseline fitted on the training cells


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """`leukemia-predict`: probabilities for records, a folder or image files."""
    model_dir: str = ""
    input: Tuple[str, ...] = ()
    output: str = ""
    split: str = "test"            # when `input` is a records dir
    tta: str = declared("dihedral8", choices=TTA)  # evaluate's default: what it measured
    threshold: float = 0.5
    batch_size: int = declared(64, minimum=1)
    trust_saved_model: bool = False  # allow a SavedModel (it runs its own graph)
    allow_other_model: bool = False  # predict with a model.keras its summary.json does not name
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    overwrite: bool = False        # replace an existing `output` (evaluation.output_rules)


@dataclasses.dataclass(frozen=True)
class CrossvalConfig:
    """`leukemia-crossval`: one training run per (model, held-out fold) from `run`."""
    out_dir: str = ""
    models: Tuple[str, ...] = ("seed_cnn", "resnet_small")
    folds: Tuple[int, ...] = (0, 1, 2)
    with_validation: bool = True
    cv: str = declared("official", choices=("official", "patients", "pooled"))
    num_folds: int = declared(5, minimum=2)
    # cv=pooled: each fold trained once per seed (empty: run.data.seed only), its epoch
    # chosen on `selection_split` (a split of other patients, e.g. fold0), the held-out
    # predictions of all folds pooled (crossval.pooled).
    seeds: Tuple[int, ...] = ()
    selection_split: str = ""
    run: Config = dataclasses.field(default_factory=lambda: Config(
        train=TrainConfig(verbose=0)))


# ---------------------------------------------------------------- dotted paths
def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def fields(cls, prefix: str = "") -> Dict[str, dataclasses.Field]:
    """Every leaf setting of a root class by dotted path (`train.epochs` -> its Field)."""
    out = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(fields(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out


def choices(cls, name: str) -> Tuple[str, ...]:
    """The values setting `name` of section class `cls` allows, as its field declares."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"]


def setting_type(cls, path: str) -> Any:
    """The annotation of the setting at a dotted path of root class `cls`."""
    *parents, leaf = path.split(".")
    for name in parents:
        cls = _hints(cls)[name]
    return _hints(cls)[leaf]


def close_matches(cls, path: str) -> list:
    """Settings of root class `cls` whose dotted paths are close to `path`."""
    return difflib.get_close_matches(path, list(fields(cls)), n=3, cutoff=0.6)


def _unknown(path: str, known) -> ConfigError:
    close = difflib.get_close_matches(path, list(known), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"unknown setting {path!r}{hint}", path)


def parse(text: Any, typ: Any, path: str = "") -> Any:
    """`text` as a value of annotation `typ`: bool, int, float, str or Tuple[x, ...].

    Values that already have the type pass through (lists become tuples)."""
    args = typing.get_args(typ)
    try:
        if typing.get_origin(typ) in (tuple, Tuple):
            items = text.split(",") if isinstance(text, str) else list(text)
            return tuple(parse(v.strip() if isinstance(v, str) else v, args[0], path)
                         for v in items if not (isinstance(v, str) and not v.strip()))
        if typ is bool:
            if isinstance(text, bool):
                return text
            word = str(text).strip().lower()
            if word not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return word in ("true", "1", "yes")
        if typ is int and isinstance(text, float) and not text.is_integer():
            raise ValueError(text)
        return typ(text)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{path}={text!r} is not {'an' if name == 'int' else 'a'} "
                          f"{name}", path) from None


def get(cfg: Any, path: str) -> Any:
    """The value at a dotted path."""
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg


def override(cfg: Any, path: str, value: Any) -> Any:
    """A copy of `cfg` with the setting at `path` set to `value` (text is parsed by the
    field's annotation). Raises ConfigError for an unknown path or a bad value."""
    known = fields(type(cfg))
    if path not in known:
        raise _unknown(path, known)
    return _set(cfg, path.split("."), value, path)


def _set(node: Any, names: list, value: Any, path: str) -> Any:
    head = names[0]
    if len(names) > 1:
        return dataclasses.replace(node, **{head: _set(getattr(node, head), names[1:],
                                                       value, path)})
    return dataclasses.replace(node, **{head: parse(value, _hints(type(node))[head], path)})


def apply(cfg: Any, overrides: Mapping[str, Any] | Iterable[Tuple[str, Any]]) -> Any:
    """`override` for each (path, value), in order."""
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for path, value in items:
        cfg = override(cfg, path, value)
    return cfg


def check(cfg: Any) -> None:
    """Every number is finite and every declared choice and minimum holds (ConfigError
    naming the path)."""
    for path, f in fields(type(cfg)).items():
        value, meta = get(cfg, path), f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, not {value}", path)
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{path}={value} is not one of {', '.join(meta['choices'])}",
                              path)
        least, below = meta.get("minimum"), meta.get("below")
        if least is not None and not value >= least:  # NaN fails too
            raise ConfigError(f"{path} must be at least {least:g}, not {value}", path)
        if below is not None and not value < below:
            raise ConfigError(f"{path} must be below {below:g}, not {value}", path)


# ---------------------------------------------------------------- JSON
def _build(cls, values: dict, where: str = ""):
    hints = _hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}", where)
    kwargs = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            value = _build(hints[name], value, f"{where}{name}.")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def upgrade(values: dict) -> dict:
    """A config.json dict in today's layout.

    Older files held the input size, seed and determinism twice (model.image_size,
    train.seed, train.deterministic, always equal to the data section's: a check refused
    any difference), no model.normalize (the default was none) and no train.monitor (the
    best epoch was always chosen by val_weighted_f1)."""
    values = json.loads(json.dumps(values))
    model, train, data = (values.get(k) for k in ("model", "train", "data"))
    moves = ((model, "image_size"), (train, "seed"), (train, "deterministic"))
    for section, key in moves:
        if isinstance(section, dict) and key in section:
            old = section.pop(key)
            if isinstance(data, dict):
                data.setdefault(key, old)
    if isinstance(model, dict) and "normalize" not in model:
        model["normalize"] = "none"
    if isinstance(train, dict) and "monitor" not in train:
        train["monitor"] = "val_weighted_f1"
    return values


def from_dict(values: dict) -> Config:
    """Inverse of `Config.to_dict` (reads a model dir's config.json, any layout)."""
    return _build(Config, upgrade(values))


def replace(cfg: Config, **sections: Any) -> Config:
    """`replace(cfg, train={"epochs": 3})`: a copy with some fields of some sections changed."""
    updates = {}
    for name, changes in sections.items():
        updates[name] = dataclasses.replace(getattr(cfg, name), **changes)
    return dataclasses.replace(cfg, **updates)
