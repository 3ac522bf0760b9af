"""Patient-grouped, duplicate-aware cross-validation folds (pure pandas/numpy).

The official C-NMC folds leak: a patient can appear under two ids in two folds (patient
20 of fold_0 is patient 21 of fold_2) and byte-identical images sit in several folds. A
model validated on such a fold has seen some of its cells. Here every image is joined to
its patient and to every image with the same sha256; each connected component (a
"group") goes to exactly one fold, so no patient and no duplicate crosses a split.

Folds are stratified by class: hem groups and ALL groups are each dealt out so every fold
holds within one group of the even share of each class. C-NMC has far fewer hem patients
than ALL patients; when a class has fewer groups than folds the fold count drops to that
number (leave-one-group-out for the scarce class) and a note says so, rather than
producing folds with no hem cell to score.

The assignment is a CSV (source_path, patient_id, label, group, cv_fold) that
`DataConfig.cv_assignment` points at; the pipeline keeps or drops records by it
(`keeps`: one rule for the tf.data filter and for the counts taken from examples.csv).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.config import DataConfig
from leukemia_tf.data import manifest as manifest_lib

ASSIGNMENT_COLUMNS = ["source_path", "patient_id", "label", "group", "cv_fold"]
CLASS_NAMES = {0: "hem", 1: "ALL"}


def load_examples(records_dir: str, folds: Sequence[int]) -> pd.DataFrame:
    """The labeled training examples of `folds` from a records dir's examples.csv.

    Returns columns source_path (the record's image/source_path), patient_id, label,
    fold, sha256.
    """
    table = io.read_csv(io.join(records_dir, manifest_lib.EXAMPLES), dtype={"patient_id": str})
    table = table[(table["split"] == "train") & table["fold"].isin(list(folds))]
    table = table.dropna(subset=["label"])
    out = table.rename(columns={"rel_path": "source_path"})
    out = out[["source_path", "patient_id", "label", "fold", "sha256"]].copy()
    out["label"] = out["label"].astype(int)
    return out.reset_index(drop=True)


def group_ids(table: pd.DataFrame) -> np.ndarray:
    """Component id per row: rows sharing a patient_id or a sha256 share a group.

    Union-find over the bipartite graph rows - keys; ids are 0..G-1 in order of first row.
    """
    parent = list(range(len(table)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in ("patient_id", "sha256"):
        first: Dict[str, int] = {}
        for i, key in enumerate(table[column].astype(str)):
            if key in ("", "nan"):
                continue
            if key in first:
                a, b = find(i), find(first[key])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    roots = [find(i) for i in range(len(table))]
    renumber: Dict[int, int] = {}
    return np.array([renumber.setdefault(r, len(renumber)) for r in roots], dtype=int)


def _group_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its majority label, image count and patients."""
    g = table.groupby("group")
    out = pd.DataFrame({
        "label": g["label"].agg(lambda s: int(s.mode().iloc[0])),
        "images": g.size(),
        "patients": g["patient_id"].agg(lambda s: ",".join(sorted(set(map(str, s))))),
    })
    return out.reset_index()


def _fold_count(per_class: Dict[int, int], num_folds: int, pooled: bool,
                notes: List[str]) -> int:
    """How many folds `assign_folds` deals into (a note for each change it makes)."""
    scarce = min(per_class.values())
    name = CLASS_NAMES.get(min(per_class, key=per_class.get), "?")
    if not pooled:
        if scarce >= num_folds:
            return num_folds
        notes.append(f"only {scarce} {name} patient groups for {num_folds} folds: using "
                     f"{scarce} folds, each holding out one {name} group "
                     "(leave-one-group-out for that class)")
        return scarce
    folds = min(num_folds, sum(per_class.values()))
    if folds < num_folds:
        notes.append(f"only {sum(per_class.values())} patient groups for {num_folds} "
                     f"folds: using {folds} folds")
    if scarce < folds:
        notes.append(f"only {scarce} {name} patient groups for {folds} folds: "
                     f"{folds - scarce} folds hold out no {name} patient (metrics are "
                     "pooled over the held-out predictions of all folds)")
    return folds


def assign_folds(table: pd.DataFrame, num_folds: int, seed: int = 0,
                 pooled: bool = False) -> Tuple[pd.DataFrame, List[str]]:
    """Deal patient/duplicate groups into folds, stratified by class.

    Args:
      table: rows with source_path, patient_id, label (0 hem, 1 ALL), sha256.
      num_folds: wanted folds (>= 2). Lowered to the group count of the scarcest class
        when that is smaller (each fold then holds one group of it): see the notes.
      seed: breaks ties between equally sized groups reproducibly.
      pooled: keep `num_folds` even when a class has fewer groups (some folds then hold
        none of it), for metrics pooled over every fold's held-out predictions, where a
        fold needs no cell of each class. Never more folds than groups.

    Returns:
      (assignment with ASSIGNMENT_COLUMNS, notes: human-readable remarks to report).

    Raises:
      ValueError: fewer than 2 folds possible (a class has fewer than 2 groups).
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    table = table.reset_index(drop=True).copy()
    table["group"] = group_ids(table)
    groups = _group_table(table)
    notes = []
    merged = groups[groups["patients"].str.contains(",")]
    for _, row in merged.iterrows():
        notes.append(f"patients {row['patients']} share byte-identical images: kept "
                     "together in one fold")
    per_class = groups.groupby("label").size().to_dict()
    scarce = min(per_class.values())
    if scarce < 2:
        raise ValueError(f"cannot cross-validate: groups per class {per_class} "
                         "(each class needs at least 2 patients)")
    folds = _fold_count(per_class, num_folds, pooled, notes)
    rng = np.random.default_rng(seed)
    fold_of: Dict[int, int] = {}
    count = np.zeros((2, folds), int)     # groups per class per fold
    images = np.zeros(folds, int)         # images per fold (secondary balance)
    # Scarce class first, so its spread is never compromised by the other's.
    for label in sorted(per_class, key=lambda c: (per_class[c], c)):
        chosen = groups[groups["label"] == label].copy()
        chosen["tie"] = rng.random(len(chosen))
        for _, row in chosen.sort_values(["images", "tie"], ascending=False).iterrows():
            k = int(np.lexsort((images, count[label]))[0])
            fold_of[int(row["group"])] = k
            count[label, k] += 1
            images[k] += int(row["images"])
    table["cv_fold"] = table["group"].map(fold_of).astype(int)
    return table[ASSIGNMENT_COLUMNS], notes


def summarize(assignment: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, ALL/hem images, ALL/hem patients (for logs and reports)."""
    rows = []
    for k, part in assignment.groupby("cv_fold"):
        row = {"cv_fold": int(k), "images": len(part)}
        for label, name in CLASS_NAMES.items():
            sub = part[part["label"] == label]
            row[f"{name}_images"] = len(sub)
            row[f"{name}_patients"] = ",".join(sorted(set(sub["patient_id"].astype(str))))
        rows.append(row)
    return pd.DataFrame(rows)


def write_assignment(assignment: pd.DataFrame, path: str) -> None:
    io.write_csv(path, assignment[ASSIGNMENT_COLUMNS])


def read_assignment(path: str) -> pd.DataFrame:
    """An assignment CSV; raises ValueError when a column is missing or a path repeats."""
    table = io.read_csv(path, dtype={"patient_id": str, "source_path": str})
    missing = {"source_path", "cv_fold"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    if table["source_path"].duplicated().any():
        raise ValueError(f"{path}: a source_path is assigned twice")
    return table


def make_assignment(records_dir: str, folds: Sequence[int], num_folds: int, out_path: str,
                    seed: int = 0, pooled: bool = False) -> Tuple[pd.DataFrame, List[str]]:
    """Group the training folds `folds` of `records_dir` into CV folds, written to out_path."""
    assignment, notes = assign_folds(load_examples(records_dir, folds), num_folds, seed,
                                     pooled)
    write_assignment(assignment, out_path)
    return assignment, notes


def keeps(fold, cv_fold: int, training: bool):
    """The CV filter: training keeps records not assigned to `cv_fold`, evaluation the ones
    assigned to it; unlisted records (fold -1) pass both. Elementwise on a pandas Series or
    a tf.Tensor of assigned folds, so tf.data and the counts apply the same rule."""
    return (fold == -1) | ((fold == cv_fold) != training)


def checked_assignment(data: DataConfig) -> pd.DataFrame:
    """The assignment of data.cv_assignment; ValueError if data.cv_fold is not in it."""
    if data.cv_fold < 0:
        raise ValueError("cv_assignment is set but cv_fold is not (>= 0)")
    table = read_assignment(data.cv_assignment)
    if data.cv_fold not in set(table["cv_fold"]):
        raise ValueError(f"cv_fold {data.cv_fold} is not in {data.cv_assignment}")
    return table


def kept_examples(manifest: dict, data: DataConfig, sel: manifest_lib.Selection,
                  training: bool) -> pd.DataFrame:
    """examples.csv rows of `sel` that the CV filter keeps (see `keeps`)."""
    table = manifest_lib.selection_examples(manifest, data.records_dir, sel)
    if table is None:
        raise ValueError(f"{data.records_dir} has no {manifest_lib.EXAMPLES}: grouped CV "
                         "needs it")
    folds = read_assignment(data.cv_assignment).set_index("source_path")["cv_fold"]
    fold = table["rel_path"].map(folds).fillna(-1).astype(int)
    return table[keeps(fold, data.cv_fold, training)]


def count_examples(manifest: dict, sel: manifest_lib.Selection, data: DataConfig,
                   training: bool) -> int:
    """Records of `sel` a run reads: with data.cv_assignment only those the CV filter
    keeps, otherwise all of them."""
    if data.cv_assignment:
        return len(kept_examples(manifest, data, sel, training))
    return manifest_lib.count_examples(manifest, sel)


def label_counts(manifest: dict, sel: manifest_lib.Selection, data: DataConfig
                 ) -> Dict[int, int]:
    """{1: ALL, 0: hem} of the training records of `sel` (CV filter applied, if any)."""
    if data.cv_assignment:
        return manifest_lib.count_labels(kept_examples(manifest, data, sel, True)["label"])
    return manifest_lib.label_counts(manifest, data.records_dir, sel)
