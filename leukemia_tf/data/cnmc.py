"""Find and label every image of a C-NMC 2019 tree (no TensorFlow needed).

The Kaggle/TCIA tree, relative to its `C-NMC_Leukemia` root:

    training_data/fold_{0,1,2}/{all,hem}/UID_<patient>_<image>_<cell>_<all|hem>.bmp
    validation_data/C-NMC_test_prelim_phase_data/<n>.bmp
    validation_data/C-NMC_test_prelim_phase_data_labels.csv   Patient_ID,new_names,labels
    testing_data/C-NMC_test_final_phase_data/<n>.bmp          (unlabeled)

`discover(root)` walks a tree; `table_from_paths(paths)` applies the same rules to a list of
relative paths (the Kaggle listing), so both are checked against the real layout.
Problems are either raised (`on_error="raise"`, naming the file and the problem) or
returned as skip records; nothing is dropped silently.
"""
from __future__ import annotations

import csv
import io as _textio
import posixpath
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pandas as pd

from leukemia_tf import io
from leukemia_tf.errors import UserError

ROOT_NAME = "C-NMC_Leukemia"
TRAIN_DIR = "training_data"
VAL_DIR = "validation_data/C-NMC_test_prelim_phase_data"
VAL_CSV = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"
TEST_DIR = "testing_data/C-NMC_test_final_phase_data"
IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg")
CLASS_TO_LABEL = {"all": 1, "hem": 0}
LABEL_TO_CLASS = {1: "all", 0: "hem"}
COLUMNS = ["path", "rel_path", "split", "fold", "label", "patient_id", "name",
           "original_name", "size"]

# `UID_h3_...` is the one healthy subject written in lower case: patient H3.
_TRAIN_NAME = re.compile(
    r"^UID_(?P<patient>[Hh]?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<cls>all|hem)\.bmp$")
_NUMBERED = re.compile(r"^(?P<n>\d+)\.(bmp|png|jpe?g)$", re.IGNORECASE)
_IGNORED = {".DS_Store", "Thumbs.db", "desktop.ini"}


class CnmcError(ValueError, UserError):
    """A problem with the input tree; the message names the file and the problem."""


def parse_training_name(name: str) -> Dict[str, object]:
    """`UID_H6_11_1_hem.bmp` -> {patient_id: "H6", image: 11, cell: 1, label: 0}.

    Raises:
      CnmcError: the name does not follow the C-NMC pattern.
    """
    m = _TRAIN_NAME.match(name)
    if not m:
        raise CnmcError(f"{name}: file name does not match "
                        "UID_<patient>_<image>_<cell>_<all|hem>.bmp")
    return {"patient_id": normalise_patient(m["patient"]), "image": int(m["image"]),
            "cell": int(m["cell"]), "label": CLASS_TO_LABEL[m["cls"]]}


def normalise_patient(patient: str) -> str:
    """Patient ids as strings; healthy subjects upper-cased (`h3` is H3)."""
    return patient.upper()


def find_root(path: str) -> str:
    """Accept the `C-NMC_Leukemia` folder itself or the folder above it."""
    path = path.rstrip("/") or "/"
    if not io.isdir(path):
        what = "is a file, not a folder" if io.exists(path) else "does not exist"
        raise CnmcError(f"{path} {what} (the {ROOT_NAME} folder or the folder above it "
                        "was expected)")
    if io.isdir(io.join(path, TRAIN_DIR)) or io.isdir(io.join(path, "validation_data")) or \
            io.isdir(io.join(path, "testing_data")):
        return path
    inner = io.join(path, ROOT_NAME)
    if io.isdir(inner):
        return inner
    raise CnmcError(f"not a C-NMC tree (expected {ROOT_NAME}/ or {TRAIN_DIR}/, "
                    f"validation_data/, testing_data/ inside it), {path}")


class _Collector:
    """Collects skip records, or raises on the first one."""

    def __init__(self, on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.on_error = on_error
        self.skipped: List[Dict[str, str]] = []

    def problem(self, rel_path: str, reason: str) -> None:
        if self.on_error == "raise":
            raise CnmcError(f"{reason}, {rel_path} (use --on_error=skip to record and skip it)")
        self.skipped.append({"path": rel_path, "reason": reason})


def read_labels_csv(text: str) -> List[Dict[str, str]]:
    """Rows of the validation labels CSV; checks the header."""
    reader = csv.DictReader(_textio.StringIO(text))
    needed = {"Patient_ID", "new_names", "labels"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise CnmcError(f"{VAL_CSV}: header must have columns {sorted(needed)}, "
                        f"got {reader.fieldnames}")
    return [dict(row) for row in reader]


def table_from_paths(rel_paths: Iterable[str], sizes: Optional[Dict[str, int]] = None,
                     labels_rows: Optional[Sequence[Dict[str, str]]] = None,
                     root: str = "", on_error: str = "raise",
                     require_validation_labels: bool = True
                     ) -> Tuple[pd.DataFrame, List[Dict[str, str]]]:
    """Label a list of paths relative to the `C-NMC_Leukemia` root.

    Args:
      rel_paths: e.g. `training_data/fold_0/all/UID_1_8_1_all.bmp` (a leading
        `C-NMC_Leukemia/` is removed).
      sizes: optional file sizes by relative path.
      labels_rows: rows of the validation labels CSV (see `read_labels_csv`).
      root: prefix for the `path` column.
      on_error: "raise" or "skip".
      require_validation_labels: when False, validation images without a CSV row keep a
        missing label instead of being an error (used for listings without the CSV).

    Returns:
      (table with COLUMNS sorted by split/fold/path, skip records).
    """
    sizes = sizes or {}
    issues = _Collector(on_error)
    rows: List[dict] = []
    val_files: Dict[str, str] = {}
    for rel in rel_paths:
        rel = rel.replace("\\", "/")
        if rel.startswith(ROOT_NAME + "/"):
            rel = rel[len(ROOT_NAME) + 1:]
        name = rel.split("/")[-1]
        if name in _IGNORED or rel == VAL_CSV:
            continue
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            issues.problem(rel, "not an image file (unexpected extension)")
            continue
        placed = _place(rel)
        if isinstance(placed, str):
            issues.problem(rel, placed)
            continue
        rows.append({"path": io.join(root, rel) if root else rel, "rel_path": rel,
                     "name": name, "original_name": name, "size": sizes.get(rel), **placed})
        if placed["split"] == "validation":
            val_files[name] = rel
    _apply_validation_labels(rows, val_files, labels_rows, issues, require_validation_labels)
    return _sorted_table(rows), issues.skipped


def _place(rel: str) -> Union[dict, str]:
    """split, fold, label and patient_id of an image path relative to the root, or why
    it cannot be placed (one line, for the skip record or the error)."""
    parts = rel.split("/")
    name = parts[-1]
    if parts[0] == TRAIN_DIR:
        return _place_training(parts)
    for folder, split in ((VAL_DIR, "validation"), (TEST_DIR, "test")):
        if rel.startswith(folder + "/") and len(parts) == 3:
            if not _NUMBERED.match(name):
                return f"{split} image name is not <number>.bmp"
            return {"split": split, "fold": None, "label": None, "patient_id": None}
    return "image outside the known C-NMC folders"


def _place_training(parts: List[str]) -> Union[dict, str]:
    if len(parts) != 4 or not re.fullmatch(r"fold_[0-9]+", parts[1]):
        return "training image outside training_data/fold_<k>/<class>/"
    cls = parts[2]
    if cls not in CLASS_TO_LABEL:
        return f"unknown class folder {cls!r} (expected all or hem)"
    try:
        parsed = parse_training_name(parts[3])
    except CnmcError:
        return "file name does not match UID_<patient>_<image>_<cell>_<all|hem>.bmp"
    if parsed["label"] != CLASS_TO_LABEL[cls]:
        return (f"label in file name ({LABEL_TO_CLASS[parsed['label']]}) "
                f"disagrees with class folder ({cls})")
    return {"split": "train", "fold": int(parts[1][5:]), "label": parsed["label"],
            "patient_id": parsed["patient_id"]}


def _sorted_table(rows: List[dict]) -> pd.DataFrame:
    """COLUMNS with nullable integer fold/label/size, sorted by split, fold, the number
    of a numbered name, path."""
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("fold", "label", "size"):
        table[column] = table[column].astype("Int64")
    table["_n"] = table["name"].str.extract(r"^(\d+)\.", expand=False).astype("float")
    table = table.sort_values(["split", "fold", "_n", "rel_path"], na_position="first")
    return table.drop(columns="_n").reset_index(drop=True)


def _apply_validation_labels(rows, val_files, labels_rows, issues, required):
    if labels_rows is None:
        if val_files and required:
            issues.problem(VAL_CSV, "labels CSV missing: validation images cannot be labeled")
            if issues.on_error == "skip":
                for name, rel in val_files.items():
                    issues.skipped.append({"path": rel, "reason": "no labels CSV"})
                rows[:] = [r for r in rows if r["split"] != "validation"]
        return
    by_name: Dict[str, Tuple[int, str, str]] = {}
    for i, rec in enumerate(labels_rows, start=2):
        where = f"{VAL_CSV} line {i}"
        new_name = (rec.get("new_names") or "").strip()
        original = (rec.get("Patient_ID") or "").strip()
        try:
            label = int(str(rec.get("labels", "")).strip())
            if label not in (0, 1):
                raise ValueError
        except ValueError:
            issues.problem(where, f"label {rec.get('labels')!r} is not 0 or 1")
            continue
        try:
            parsed = parse_training_name(original)
        except CnmcError:
            issues.problem(where, f"Patient_ID {original!r} is not a C-NMC file name")
            continue
        if parsed["label"] != label:
            issues.problem(where, f"labels={label} disagrees with Patient_ID {original} "
                                  f"({LABEL_TO_CLASS[parsed['label']]})")
            continue
        if new_name in by_name:
            issues.problem(where, f"{new_name} listed twice")
            continue
        if new_name not in val_files:
            issues.problem(where, f"CSV row names {new_name}, which is not in {VAL_DIR}/")
            continue
        by_name[new_name] = (label, parsed["patient_id"], original)
    kept = []
    for row in rows:
        if row["split"] == "validation":
            info = by_name.get(row["name"])
            if info is None:
                if required:
                    issues.problem(row["rel_path"], "validation image has no row in the labels CSV")
                    continue
            else:
                row["label"], row["patient_id"], row["original_name"] = info
        kept.append(row)
    rows[:] = kept


def discover(path: str, on_error: str = "raise") -> Tuple[pd.DataFrame, List[Dict[str, str]]]:
    """Walk a C-NMC tree (local or any `tf.io.gfile` URL) and label every image.

    Args:
      path: the `C-NMC_Leukemia` folder or the folder above it.
      on_error: "raise" stops at the first problem naming the file; "skip" returns it in
        the skip records.

    Returns:
      (table with columns COLUMNS, one row per image, skip records `{path, reason}`).
    """
    root = find_root(path)
    unreadable = _Collector(on_error)
    rel_paths, sizes = [], {}
    for dirpath, _, files in io.walk(root):
        for name in sorted(files):
            full = io.join(dirpath, name)
            rel = posixpath.relpath(full, root) if not io.is_url(root) else full[len(root) + 1:]
            try:
                sizes[rel] = io.size(full)
            except Exception as e:  # listed but not statable: a dangling symlink, no access
                if io.is_url(full) and not io.exists(full):
                    continue  # ram:// lists `<dir>_labels.csv` also as `<dir>/_labels.csv`
                if not isinstance(e, OSError) and not io.is_url(full):
                    raise
                what = "dangling symbolic link" if not io.exists(full) else "cannot read file"
                unreadable.problem(rel, f"{what} ({getattr(e, 'strerror', None) or e})")
                continue
            rel_paths.append(rel)
    labels_rows = None
    csv_path = io.join(root, VAL_CSV)
    if io.exists(csv_path):
        labels_rows = read_labels_csv(io.read_text(csv_path))
    table, skipped = table_from_paths(sorted(rel_paths), sizes, labels_rows, root=root,
                                      on_error=on_error)
    if table.empty:
        raise CnmcError(f"no C-NMC images found, {root}")
    return table, unreadable.skipped + skipped


def duplicate_groups(table: pd.DataFrame) -> List[Dict[str, object]]:
    """Groups of byte-identical files (same `sha256` column) and what they span.

    Returns one dict per group of two or more files: paths, splits, folds, patients,
    and flags `cross_fold` / `cross_split` / `cross_patient` (leakage when true).
    """
    groups = []
    for sha, group in table[table["sha256"].notna()].groupby("sha256", sort=True):
        if len(group) < 2:
            continue
        folds = sorted({int(f) for f in group["fold"].dropna()})
        splits = sorted(set(group["split"]))
        patients = sorted({str(p) for p in group["patient_id"].dropna()})
        groups.append({"sha256": sha, "paths": sorted(group["rel_path"]),
                       "splits": splits, "folds": folds, "patients": patients,
                       "cross_fold": len(folds) > 1, "cross_split": len(splits) > 1,
                       "cross_patient": len(patients) > 1})
    return groups
