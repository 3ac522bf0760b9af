"""manifest.json and examples.csv of a records dir: the converter writes them, everyone reads.

Why a module of its own: the pipeline, evaluation and prediction need to read a manifest,
and importing the converter for that pulled its worker pool and planning code into every
training process. Writer and readers share the names and the checks here. No TensorFlow:
file access goes through `leukemia_tf.io` (TensorFlow only for URLs).

A records dir is complete exactly when its manifest.json exists: the converter writes it
last, under a temporary name renamed into place, so a reader never sees half of one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.data import cnmc
from leukemia_tf.errors import JsonFileError, UserError
from leukemia_tf.wording import count

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


# Fields that say when, where from and how fast a conversion ran, not what it made: a
# re-conversion of the same tree with the same settings rewrites them and nothing else.
UNFINGERPRINTED = ("created", "stats", "source_root")


def content_sha256(manifest) -> str:
    """sha256 of a parsed manifest without UNFINGERPRINTED: the shards (their sha256),
    settings, splits, duplicates, skips and warnings, as canonical JSON."""
    kept = ({k: v for k, v in manifest.items() if k not in UNFINGERPRINTED}
            if isinstance(manifest, dict) else manifest)
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _fingerprint_of(data: bytes, path: str) -> str:
    try:
        return content_sha256(io.parse_json(data, path))
    except JsonFileError:  # no content to speak of: the bytes, so any change shows
        return hashlib.sha256(data).hexdigest()


def fingerprint(records_dir: str) -> str:
    """What a reader pins to notice other records: `content_sha256` of manifest.json (the
    sha256 of its bytes when it does not parse). Converting the same tree again with the
    same settings keeps it; any other shard, setting or split changes it."""
    path = manifest_path(records_dir)
    return _fingerprint_of(io.read_bytes(path), path)


def is_ours(manifest) -> bool:
    """True when a parsed manifest was written by this converter (any version)."""
    return (isinstance(manifest, dict) and
            (manifest.get("writer") == WRITER or
             {"schema_version", "settings", "splits", "shards"} <= set(manifest)))


def inside(folder: str, rel, what: str, where: str) -> str:
    """`folder/rel` for a relative path read from a file (a manifest's shard, a progress
    record), or ManifestError naming `what` and `where` when it could leave `folder`.

    Refused: anything but a non-empty relative path (absolute, a URL, a drive letter), a
    `..` component, and (local folders) a path whose symlinks resolve outside `folder`.
    A crafted manifest must not make the converter delete, or a reader read, a file
    elsewhere.
    """
    parts = str(rel).replace("\\", "/").split("/") if isinstance(rel, str) else []
    if (not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "://" in rel
            or (len(rel) > 1 and rel[1] == ":") or ".." in parts):
        raise ManifestError(f"{what} {rel!r} is not a path inside the records dir, {where}")
    if not folder:  # the names alone (no folder to resolve links in)
        return rel
    path = io.join(folder, rel)
    if not io.is_url(folder) and io.exists(path) and not io.resolves_inside(path, folder):
        raise ManifestError(f"{what} {rel!r} is a link that resolves outside the records "
                            f"dir, {where}")
    return path


def load(records_dir: str) -> dict:
    """The validated manifest of a complete conversion; every shard path is checked to
    stay inside `records_dir` (`inside`).

    Raises:
      ManifestError: no manifest (no complete conversion), unreadable or inconsistent.
    """
    return load_pinned(records_dir)[0]


def load_pinned(records_dir: str) -> Tuple[dict, str]:
    """(`load`'s manifest, its `fingerprint`): one read, so a reader pins the
    fingerprint of the very manifest it uses."""
    path = manifest_path(records_dir)
    if not io.exists(path):
        raise ManifestError(f"no complete conversion (manifest.json not found; convert "
                            f"the images with leukemia-convert), {path}")
    data = io.read_bytes(path)
    try:
        manifest = io.parse_json(data, path)
    except JsonFileError as e:
        raise ManifestError(f"manifest.json is not valid JSON ({e.detail}), {path}") from None
    validate(manifest, path)
    for i, shard in enumerate(manifest["shards"]):
        inside(records_dir, shard["path"], f"shard entry {i}", path)
    return manifest, content_sha256(manifest)


def validate(manifest, where: str = MANIFEST) -> None:
    """Structure, internal counts and relative shard paths; raises ManifestError naming
    `where`."""
    if not is_ours(manifest):
        raise ManifestError(f"not a leukemia_tf records manifest, {where}")
    for i, shard in enumerate(manifest["shards"]):
        missing = [k for k in _SHARD_KEYS if k not in shard] if isinstance(shard, dict) \
            else list(_SHARD_KEYS)
        if missing:
            raise ManifestError(f"shard entry {i} lacks {missing}, {where}")
        inside("", shard["path"], f"shard entry {i}", where)
    for split, info in manifest["splits"].items():
        listed = sum(s["num_examples"] for s in manifest["shards"] if s["split"] == split)
        if listed != info.get("num_examples"):
            raise ManifestError(f"split {split}: shards hold {listed} examples, the split "
                                f"says {info.get('num_examples')}, {where}")


def splits_with_shards(manifest: dict) -> List[str]:
    """The splits that hold at least one shard (a split may be listed with 0 examples:
    a tree without testing_data/ has an empty `test`)."""
    return sorted({s["split"] for s in manifest["shards"]})


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
        warnings.append(f"{count(len(skipped), 'file')} skipped (see 'skipped')")
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
        "skipped": sorted(skipped, key=lambda s: str(s.get("path", ""))),
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
                   "validation": "train with --split=fold<k>"}.get(split, "")
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


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which records a dataset reads: a split and, for training data, some folds."""
    split: str                          # train | validation | test
    folds: Optional[Tuple[int, ...]] = None

    @property
    def name(self) -> str:
        return self.split if self.folds is None else \
            f"{self.split}-fold{''.join(str(f) for f in self.folds)}"


def parse_val_split(val_split: str, train_folds: Optional[Sequence[int]] = None) -> Selection:
    """`validation` -> the labeled validation set; `fold<k>` -> training fold k;
    `cv` -> the training folds, whose held-out CV part the pipeline keeps (see
    DataConfig.cv_assignment and grouping.keeps)."""
    if val_split == "cv":
        if not train_folds:
            raise ValueError("--split=cv needs the training folds")
        return Selection("train", tuple(train_folds))
    if val_split == "validation":
        return Selection("validation")
    if val_split.startswith("fold") and val_split[4:].isdigit():
        return Selection("train", (int(val_split[4:]),))
    raise ValueError(f"--split must be 'validation' or 'fold<k>', not {val_split!r}")


def train_folds(manifest: dict) -> List[int]:
    """The folds of the training split, ascending."""
    return sorted({int(s["fold"]) for s in manifest["shards"]
                   if s["split"] == "train" and s.get("fold") is not None})


def _selected(manifest: dict, sel: Selection) -> List[dict]:
    return [s for s in manifest["shards"] if s["split"] == sel.split
            and (sel.folds is None or s.get("fold") in sel.folds)]


def shards_for(manifest: dict, records_dir: str, sel: Selection) -> List[dict]:
    """Manifest shard entries (with `full_path`) for a selection; never a glob."""
    out = [{**s, "full_path": io.join(records_dir, s["path"])} for s in _selected(manifest, sel)]
    if not out:
        have = sorted(k for k, v in manifest["splits"].items() if v.get("num_examples"))
        raise ValueError(f"no shards for {sel.name} in {records_dir} (splits with images: "
                         f"{have})")
    return out


def count_examples(manifest: dict, sel: Selection) -> int:
    """Records in `sel` (every record; grouping.count_examples applies a CV filter)."""
    return sum(s["num_examples"] for s in shards_for(manifest, "", sel))


def selection_examples(manifest: dict, records_dir: str, sel: Selection
                       ) -> Optional[pd.DataFrame]:
    """examples.csv rows of the shards of `sel`, or None when the dir has no examples.csv."""
    table = read_examples(records_dir)
    if table is None:
        return None
    names = {s["path"] for s in shards_for(manifest, "", sel)}
    return table[table["shard"].isin(names)]


def label_counts(manifest: dict, records_dir: str, sel: Selection) -> Dict[int, int]:
    """{1: ALL count, 0: hem count} of `sel` from examples.csv (without one: the
    split's totals)."""
    table = selection_examples(manifest, records_dir, sel)
    if table is None:
        by = manifest["splits"][sel.split]["by_label"]
        return {1: by["all"], 0: by["hem"]}
    return count_labels(table["label"])


def count_labels(labels: pd.Series) -> Dict[int, int]:
    """{1: ALL count, 0: hem count} of a label column (unlabeled rows ignored)."""
    labels = labels.dropna().astype(int)
    return {1: int((labels == 1).sum()), 0: int((labels == 0).sum())}
