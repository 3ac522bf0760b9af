"""Where `leukemia-predict --output` may write, checked before TensorFlow loads.

The CSV (and its `<output>.errors.csv` / `<output>.patients.csv` beside it) is refused,
in one line naming the path, when it
- is a folder (the CSV file to write is wanted),
- is one of the inputs: an image file given, or an image name inside a folder given,
- lies inside a model dir or a records dir (a folder, or any folder above it, holding
  one of MODEL_FILES or RECORDS_FILES: the trainer's and converter's own files, which a
  CSV must never replace; summary.json only beside a config.json, manifest.json only
  when it lists shards),
- already exists, or one of its side files does, unless `--overwrite` (the side files
  belong to the CSV and are replaced with it),
- is in a folder that cannot be written (`destinations.check`).
Symlinks are resolved, so a link cannot smuggle the output into a protected folder; a
URL output (gs://) is checked the same way, folder by folder up to its bucket.
"""
from __future__ import annotations

import os
import re
from typing import List, Sequence

from leukemia_tf import io
from leukemia_tf.data import cnmc
from leukemia_tf.evaluation import destinations
from leukemia_tf.errors import UserError

MODEL_FILES = ("model.keras", "summary.json", "saved_model.pb", "preprocessing.json",
               "train.lock")
RECORDS_FILES = ("manifest.json",)


def errors_path(output: str) -> str:
    """`p.csv` -> `p.errors.csv`: where the files that could not be predicted go."""
    return re.sub(r"\.csv$", "", output) + ".errors.csv"


def patients_path(output: str) -> str:
    """`p.csv` -> `p.patients.csv`: predict's per-patient CSV beside the per-cell one."""
    return re.sub(r"\.csv$", "", output) + ".patients.csv"


def _real(path: str) -> str:
    return path.rstrip("/") if io.is_url(path) else os.path.realpath(path)


def _inside(path: str, folder: str) -> bool:
    return (path + "/").startswith(folder.rstrip("/") + "/") if io.is_url(path) else \
        (path + os.sep).startswith(folder.rstrip(os.sep) + os.sep)


def _ours(folder: str, name: str) -> bool:
    """True when `folder`'s `name` is this project's file, not a namesake (a web app's
    manifest.json, another tool's summary.json)."""
    path = io.join(folder, name)
    if not io.exists(path):
        return False
    if name == "summary.json":
        return io.exists(io.join(folder, "config.json"))
    if name == "manifest.json":
        try:
            manifest = io.read_json(path)
        except (ValueError, OSError):
            return True  # torn or unreadable: keep it safe
        return isinstance(manifest, dict) and "shards" in manifest
    return True


def _protected_folder(path: str):
    """(folder, kind, file) of the nearest model or records dir holding `path` (a local
    path or a URL: gs://, ram://), or None."""
    folder = io.dirname(path)
    while True:
        for kind, names in (("a model dir", MODEL_FILES), ("a records dir", RECORDS_FILES)):
            for name in names:
                if _ours(folder, name):
                    return folder, kind, name
        parent = io.dirname(folder)
        if parent == folder or io.is_url(folder) != io.is_url(parent):  # a root, a bucket
            return None
        folder = parent


def _input_hit(path: str, inputs: Sequence[str]) -> str:
    """The input `path` is (a file given) or would be read as (an image in a folder)."""
    for item in inputs:
        real = _real(item)
        if real == path:
            return item
        if (io.isdir(item) and _inside(path, real)
                and path.lower().endswith(cnmc.IMAGE_EXTENSIONS)):
            return item
    return ""


def check(output: str, inputs: Sequence[str], overwrite: bool = False) -> None:
    """UserError (one line naming the path and the flag) when predict may not write
    `output`; see the module doc for the rules."""
    if io.isdir(output):
        raise UserError(f"--output {output} is a directory: give the CSV file to write, "
                        f"e.g. {io.join(output, 'predictions.csv')}")
    targets: List[str] = [output, errors_path(output), patients_path(output)]
    for target in targets:
        real = _real(target)
        hit = _input_hit(real, io.rejoin_commas(inputs))
        if hit:
            raise UserError(f"--output {target} is one of the inputs (--input {hit}): "
                            "predictions never replace what they read; give another --output")
        found = _protected_folder(real)
        if found:
            folder, kind, name = found
            raise UserError(f"--output {target} lies inside {folder}, {kind} (it holds "
                            f"{name}), whose files a CSV must not replace; give an --output "
                            "outside it")
    for target in targets if not overwrite else ():
        if io.exists(target):
            what = "" if target == output else f": its side file {target}"
            raise UserError(f"--output {output}{what} exists: pass --overwrite to replace "
                            "it, or give another --output")
    destinations.check(io.dirname(output), destinations.PREDICT_HINT)
