"""What a `.keras` file may make tf_keras import, checked before tf_keras reads it.

tf_keras rebuilds a model from the `config.json` inside the archive. For every object
the config names by `module` that is not a tf_keras module, it imports that module
(`importlib.import_module`) before `safe_mode` is consulted: a crafted model.keras can
thus run any module Python finds (the working directory comes first under `python -m`).
So every `.keras` file this package loads goes through `load` (or `check`): the archive
is read once into memory, every dict of its config.json is walked, and

- a `module` other than tf_keras' own (`keras`, `keras.*`, `tf_keras`, `tf_keras.*`),
  `builtins` naming a tf_keras built-in (not a Python built-in such as `exec`), or the
  module where this package registers the class the entry names (PROJECT_CLASSES), and
- a layer that holds Python code (Lambda and its relatives)

are refused with one line naming the file, the layer and the module. Only then are the
same bytes written to a private temporary file and loaded with safe_mode=True and
compile=False. Nothing here imports TensorFlow until a checked file is loaded.
"""
from __future__ import annotations

import builtins
import json
import os
import tempfile
import zipfile
from io import BytesIO
from typing import Iterator, Tuple

from leukemia_tf import io
from leukemia_tf.errors import UserError

CONFIG = "config.json"
# registered name -> the module tf_keras records for it (register_keras_serializable with
# package="leukemia_tf"); a test keeps this table equal to tf_keras' registry.
PROJECT_CLASSES = {
    "leukemia_tf>Augmentation": "leukemia_tf.model.augment",
    "leukemia_tf>CellNormalization": "leukemia_tf.model.augment",
    "leukemia_tf>CaffePreprocess": "leukemia_tf.model.registry",
    "leukemia_tf>WeightedF1": "leukemia_tf.training.objectives",
}
# Layers whose config carries Python code (bytecode or a TensorFlow symbol to call).
CODE_LAYERS = ("Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda")


class ModelFileError(ValueError, UserError):
    """A model file that cannot be loaded, or may not be (code it would run)."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, at most 160 characters."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[0].split())[:160] if lines else type(exc).__name__


def _broken(path: str, exc: BaseException) -> ModelFileError:
    return ModelFileError(
        f"{path} cannot be loaded ({first_line(exc)}): it is truncated or not a Keras "
        "model; the run's best/ weights are untouched (re-run train with the same flags "
        "after deleting it to export it again)")


def _entries(config) -> Iterator[Tuple[dict, str]]:
    """Every dict of `config` with the name of the innermost layer holding it."""
    stack = [(config, "(the model)")]
    while stack:
        value, layer = stack.pop()
        if isinstance(value, list):
            stack.extend((v, layer) for v in value)
        elif isinstance(value, dict):
            inner = value.get("config")
            name = value.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
            if "class_name" in value and isinstance(name, str):
                layer = name
            yield value, layer
            stack.extend((v, layer) for v in value.values())


def module_allowed(module, entry: dict) -> bool:
    """True when tf_keras may resolve `entry` through `module` without importing code
    from outside tf_keras and this package's registered classes."""
    if module is None:
        return True
    if not isinstance(module, str):
        return False
    if module in ("keras", "tf_keras") or module.startswith(("keras.", "tf_keras.")):
        return True
    if module == "builtins":  # tf_keras looks the name up in its own modules first
        names = [entry.get("config"), entry.get("registered_name"), entry.get("class_name")]
        return not any(isinstance(n, str) and hasattr(builtins, n) for n in names)
    return PROJECT_CLASSES.get(entry.get("registered_name")) == module


def check_config(path: str, config) -> None:
    """ModelFileError naming `path`, the layer and the module for the first entry of a
    parsed config.json that would import code or hold it."""
    for entry, layer in _entries(config):
        if entry.get("class_name") in CODE_LAYERS:
            raise ModelFileError(
                f"{path}: layer {layer!r} is a {entry['class_name']} layer, which holds "
                "Python code; models this project writes have none, so the file is not "
                "loaded (use a model.keras written by leukemia-train)")
        if "module" in entry and not module_allowed(entry["module"], entry):
            raise ModelFileError(
                f"{path}: layer {layer!r} names module {entry['module']!r}, which loading "
                "would import and run; a model of this project needs only tf_keras and "
                "leukemia_tf layers, so the file is not loaded")


def check(path: str, data: bytes = None) -> bytes:
    """The bytes of the `.keras` file at `path` (or `data`), after `check_config` on its
    config.json; ModelFileError naming the file when it is no such archive."""
    if data is None:
        data = io.read_bytes(path)
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            config = json.loads(archive.read(CONFIG).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, OSError) as e:
        raise _broken(path, e) from None
    check_config(path, config)
    return data


def load(path: str):
    """The tf_keras model in the `.keras` file at `path` (any file system), loaded with
    safe_mode=True and compile=False from the very bytes `check` passed."""
    data = check(path)
    import tf_keras as keras
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")  # tf_keras reads local archives only
        io.write_bytes(local, data, atomic=False)
        try:
            return keras.models.load_model(local, safe_mode=True, compile=False)
        except Exception as e:  # noqa: BLE001 - zipfile, h5py, json: many types
            raise _broken(path, e) from None


WEIGHTS_ACCEPTED = ("--weights takes none, imagenet, a model dir holding model.keras, a "
                    ".keras or .h5 file, or a TensorFlow checkpoint prefix (its .index "
                    "file beside it)")


def weights_path(path: str) -> str:
    """The file `--weights=path` loads from: a model dir's model.keras, or `path` itself
    (a `.keras` file after `check`). ModelFileError naming the flag and what it accepts
    for anything else (a folder without model.keras, a SavedModel export/, a missing
    file). URLs are taken as given (TensorFlow reads them)."""
    if path in ("none", "", "imagenet") or io.is_url(path):
        return path
    problem = None
    if io.isdir(path):
        if io.exists(io.join(path, "model.keras")):
            path = io.join(path, "model.keras")
        elif io.exists(io.join(path, "saved_model.pb")):
            problem = "is a SavedModel (an export/ dir), whose weights are not read back"
        else:
            problem = "is a folder without model.keras"
    elif io.exists(path + ".index"):
        return path
    elif not io.exists(path):
        problem = "does not exist"
    elif not path.endswith((".keras", ".h5", ".hdf5")):
        problem = "is neither a .keras nor a .h5 file"
    if problem:
        raise ModelFileError(f"--weights={path} {problem}: {WEIGHTS_ACCEPTED}")
    if path.endswith(".keras"):
        check(path)
    return path
