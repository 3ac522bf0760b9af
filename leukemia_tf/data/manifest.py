"""manifest.json and examples.csv of a records dir: the converter writes them, everyone reads.

Why a module of its own: the pipeline, evaluation and prediction need to read a manifest,
and importing the converter for that pulled its worker pool and planning code into every
training process. Writer and readers share the names and the checks here. No TensorFlow:
file access goes through `leukemia_tf.io` (TensorFlow only for URLs).

A records dir is complete exactly when its manifest.json exists: the converter writes it
last, under a temporary name renamed into place, so a reader never sees half of one.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.data import cnmc
from leukemia_tf.errors import UserError

MANIFEST = "manifest.json"
EXAMPLES = "examples.csv"
PROGRESS_DIR = ".progress"   # the converter's own folder: progress records, temporaries
WRITER = "leukemia_tf.data.convert"
SCHEMA_VERSION = 1           # records.SCHEMA_VERSION (kept equal; records needs TensorFlow)
EXAMPLE_COLUMNS = ["shard", "rel_path", "split", "fold", "label", "patient_id", "sha256"]
_SHARD_KEYS = ("path", "split", "num_examples", "bytes", "sha256")


class ManifestError(RuntimeError, UserError):
    """A records dir or its manifest is missing or unusable; says what and which file."""


def manifest_path(records_dir: str) -> str:
    return io.join(records_dir, MANIFEST)


def is_ours(manifest) -> bool:
    """True when a parsed manifest was written by this converter (any version)."""
    return (isinstance(manifest, dict) and
            (manifest.get("writer") == WRITER or
             {"schema_version", "settings", "splits", "shards"} <= set(manifest)))


def load(records_dir: str) -> dict:
    """The validated manifest of a complete conversion.

    Raises:
      ManifestError: no manifest (no complete conversion), unreadable or inconsistent.
    """
    path = manifest_path(records_dir)
    if not io.exists(path):
        raise ManifestError(f"no complete conversion (manifest.json not found; run "
                            f"tools/convert_to_tfrecords.py), {path}")
    try:
        manifest = io.read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest.json is not valid JSON ({e}), {path}") from None
    validate(manifest, path)
    return manifest


def validate(manifest, where: str = MANIFEST) -> None:
    """Structure and internal counts; raises ManifestError naming `where`."""
    if not is_ours(manifest):
        raise ManifestError(f"not a leukemia_tf records manifest, {where}")
    for i, shard in enumerate(manifest["shards"]):
        missing = [k for k in _SHARD_KEYS if k not in shard]
        if missing:
            raise ManifestError(f"shard entry {i} lacks {missing}, {where}")
    for split, info in manifest["splits"].items():
        listed = sum(s["num_examples"] for s in manifest["shards"] if s["split"] == split)
        if listed != info.get("num_examples"):
            raise ManifestError(f"split {split}: shards hold {listed} examples, the split "
                                f"says {info.get('num_examples')}, {where}")


def write(records_dir: str, manifest: dict) -> None:
    """Atomically (temporary name + rename): the last file a conversion writes."""
    io.write_json(manifest_path(records_dir), manifest)


def examples_table(shards: List[dict], metas: Dict[str, List[dict]]) -> pd.DataFrame:
    """One row per stored example; folds and labels as integers (empty when none)."""
    rows = [{"shard": s["path"], **{k: m[k] for k in EXAMPLE_COLUMNS[1:]}}
            for s in shards for m in metas[s["path"]]]
    table = pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)
    for col in ("fold", "label"):
        table[col] = pd.array(table[col].tolist(), dtype="Int64")
    return table


def write_examples(records_dir: str, table: pd.DataFrame) -> None:
    io.write_csv(io.join(records_dir, EXAMPLES), table)


def read_examples(records_dir: str) -> Optional[pd.DataFrame]:
    """examples.csv with integer fold/label columns, or None when the dir has none."""
    path = io.join(records_dir, EXAMPLES)
    if not io.exists(path):
        return None
    return io.read_csv(path, dtype={"fold": "Int64", "label": "Int64", "patient_id": str},
                       keep_default_na=False, na_values={"fold": [""], "label": [""]})


def build(settings: dict, root: str, shards: List[dict], metas: Dict[str, List[dict]],
          skipped: List[dict], stats: dict) -> dict:
    """The manifest dict of a finished conversion (see README for the fields)."""
    all_meta = pd.DataFrame([m for s in shards for m in metas[s["path"]]],
                            columns=EXAMPLE_COLUMNS[1:])
    splits = {split: _split_summary(all_meta[all_meta["split"] == split],
                                    [s for s in shards if s["split"] == split])
              for split in ("train", "validation", "test")}
    groups = cnmc.duplicate_groups(all_meta.assign(fold=all_meta["fold"].astype("Int64")))
    warnings = []
    cross_fold = [g for g in groups if g["cross_fold"]]
    cross_split = [g for g in groups if g["cross_split"]]
    if cross_fold:
        warnings.append(f"{len(cross_fold)} groups of byte-identical images cross training "
                        "folds: holding out one fold leaks these images into training")
    if cross_split:
        warnings.append(f"{len(cross_split)} groups of byte-identical images cross splits")
    if skipped:
        warnings.append(f"{len(skipped)} files skipped (see 'skipped')")
    return {
        "schema_version": SCHEMA_VERSION,
        "writer": WRITER,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_root": root,
        "settings": settings,
        "splits": splits,
        "shards": [{k: s[k] for k in ("path", "split", "fold", "num_examples", "bytes",
                                      "sha256")} for s in shards],
        "duplicates": [g["paths"] for g in groups],
        "duplicate_groups": groups,
        "skipped": skipped,
        "warnings": warnings,
        "stats": stats,
    }


def _split_summary(part: pd.DataFrame, shards: List[dict]) -> dict:
    labels = part["label"].dropna().astype(int)
    patients = part["patient_id"].fillna("")
    out = {
        "num_examples": int(len(part)),
        "by_label": {"all": int((labels == 1).sum()), "hem": int((labels == 0).sum()),
                     "unlabeled": int(part["label"].isna().sum())},
        "by_fold": {str(int(k)): int(v) for k, v in
                    part["fold"].dropna().astype(int).value_counts().sort_index().items()},
        "by_fold_label": {str(int(k)): {"all": int((g["label"] == 1).sum()),
                                        "hem": int((g["label"] == 0).sum())}
                          for k, g in part.dropna(subset=["fold"]).groupby(
                              part["fold"].dropna().astype(int))},
        "num_patients": int(patients.replace("", np.nan).nunique()),
        "by_patient": {str(k): int(v) for k, v in
                       patients[patients != ""].value_counts().sort_index().items()},
        "num_shards": len(shards), "bytes": int(sum(s["bytes"] for s in shards)),
    }
    out["bytes_per_example"] = round(out["bytes"] / len(part)) if len(part) else 0
    return out


def split_notes(manifest: dict) -> List[str]:
    """Readable lines per split: the folds with their classes, and what an empty or
    one-image split means for training, evaluation and prediction."""
    lines = []
    for split, s in manifest["splits"].items():
        n = s["num_examples"]
        if split == "train" and s["by_fold"]:
            by_label = s.get("by_fold_label", {})
            folds = [f"fold {k}: {by_label[k]['all']} ALL + {by_label[k]['hem']} hem"
                     if k in by_label else f"fold {k}: {v} images"
                     for k, v in s["by_fold"].items()]
            lines.append(f"train: {'; '.join(folds)}")
        folder = {"train": "training_data/", "validation": "validation_data/",
                  "test": "testing_data/"}.get(split, split)
        if n == 0:
            use = {"test": "predict with --split=validation or --split=fold<k>, or on "
                           "image files",
                   "validation": "train with --val_split=fold<k>"}.get(split, "")
            lines.append(f"{split}: EMPTY (no images under {folder})"
                         f"{'; ' + use if use else ''}")
        elif n == 1:
            lines.append(f"{split}: only 1 image: metrics on it are not estimates "
                         "(one image is right or wrong)")
    return lines


def summarize(manifest: dict) -> str:
    """A human-readable summary table of a manifest."""
    lines = [f"{'split':<11}{'examples':>9}{'ALL':>7}{'hem':>7}{'unlab':>7}{'patients':>9}"
             f"{'shards':>7}{'MB':>9}{'B/img':>9}"]
    for split, s in manifest["splits"].items():
        b = s["by_label"]
        lines.append(f"{split:<11}{s['num_examples']:>9}{b['all']:>7}{b['hem']:>7}"
                     f"{b['unlabeled']:>7}{s['num_patients']:>9}{s['num_shards']:>7}"
                     f"{s['bytes'] / 2**20:>9.1f}{s['bytes_per_example']:>9}")
    lines += split_notes(manifest)
    st = manifest.get("stats", {})
    lines.append(f"encoding={manifest['settings']['encoding']} "
                 f"stored_size={manifest['settings']['stored_size']} "
                 f"encoded {st.get('encoded_images')} images in {st.get('seconds')} s "
                 f"({st.get('images_per_sec')} img/s), reused shards: {st.get('reused_shards')}")
    lines.append(f"duplicate groups: {len(manifest['duplicates'])}; "
                 f"skipped files: {len(manifest['skipped'])}")
    for s in manifest["skipped"][:20]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    for w in manifest["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)
