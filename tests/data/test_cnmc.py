"""Dataset discovery against the real Kaggle listing and small real-layout trees."""
import os

import pandas as pd
import pytest

from leukemia_tf.data import cnmc
from tests.helpers import LISTING, REAL_SAMPLES, require


@pytest.fixture(scope="module")
def listing():
    return pd.read_csv(require(LISTING), sep="\t")


def test_listing_counts_match_the_real_dataset(listing):
    sizes = dict(zip(listing.path.str.replace("C-NMC_Leukemia/", "", n=1), listing.bytes))
    table, skipped = cnmc.table_from_paths(listing.path, sizes,
                                           require_validation_labels=False)
    assert skipped == []
    train = table[table.split == "train"]
    assert len(train) == 10661
    counts = train.groupby(["fold", "label"]).size().to_dict()
    assert counts == {(0, 1): 2397, (0, 0): 1130, (1, 1): 2418, (1, 0): 1163,
                      (2, 1): 2457, (2, 0): 1096}
    assert train.patient_id.nunique() == 73
    per_patient = train.groupby("patient_id").label.agg(["min", "max"])
    assert (per_patient["min"] == per_patient["max"]).all(), "a patient with both classes"
    assert (per_patient["max"] == 1).sum() == 47 and (per_patient["max"] == 0).sum() == 26
    assert "H3" in set(train.patient_id) and "h3" not in set(train.patient_id)
    assert (table.split == "validation").sum() == 1867
    assert (table.split == "test").sum() == 2586
    assert set(train["size"]) == {608454}
    assert set(table[table.split == "validation"]["size"]) == {608538}
    assert set(table[table.split == "test"]["size"]) == {1080054}


def test_listing_duplicate_groups(listing):
    table, _ = cnmc.table_from_paths(listing.path, require_validation_labels=False)
    sha = dict(zip(listing.path.str.replace("C-NMC_Leukemia/", "", n=1), listing.sha256))
    table["sha256"] = table.rel_path.map(sha)
    groups = cnmc.duplicate_groups(table)
    assert len(groups) == 106
    assert sum(g["cross_fold"] for g in groups) == 94
    assert sum(len(g["paths"]) for g in groups) == 212
    p20_21 = [g for g in groups if set(g["patients"]) == {"20", "21"}]
    assert len(p20_21) == 71 and all(g["folds"] == [0, 2] for g in p20_21)
    assert sum(1 for g in groups if g["splits"] == ["test"]) == 2


def test_parse_training_name():
    assert cnmc.parse_training_name("UID_h3_10_1_hem.bmp") == {
        "patient_id": "H3", "image": 10, "cell": 1, "label": 0}
    assert cnmc.parse_training_name("UID_53_4_8_all.bmp")["label"] == 1
    with pytest.raises(cnmc.CnmcError, match="does not match"):
        cnmc.parse_training_name("UID_53_4_all.bmp")


def test_discover_real_samples_and_parent_folder():
    table, skipped = cnmc.discover(REAL_SAMPLES)  # the folder above C-NMC_Leukemia
    assert skipped == [] and len(table) == 8
    val = table[table.split == "validation"].iloc[0]
    assert (val["name"], val["label"], val["patient_id"], val["original_name"]) == (
        "1105.bmp", 1, "53", "UID_53_4_8_all.bmp")
    table2, _ = cnmc.discover(os.path.join(REAL_SAMPLES, "C-NMC_Leukemia"))
    assert list(table2.rel_path) == list(table.rel_path)
    assert set(table.columns) >= {"path", "split", "fold", "label", "patient_id", "size"}


def test_tiny_tree_labels_and_test_split(tiny_tree):
    table, _ = cnmc.discover(tiny_tree)
    assert list(table[table.split == "test"].name) == ["1.bmp", "2.bmp", "3.bmp"]
    assert table[table.split == "test"].label.isna().all()
    val = table[table.split == "validation"]
    assert list(val.label) == [1, 0, 1, 0]
    for _, r in val.iterrows():
        assert r.original_name.endswith("_all.bmp") == (r.label == 1)


def test_not_a_tree(tmp_path):
    with pytest.raises(cnmc.CnmcError, match="not a C-NMC tree"):
        cnmc.discover(str(tmp_path))


def _csv(tree):
    return os.path.join(tree, cnmc.VAL_CSV)


@pytest.mark.parametrize("case, expected", [
    ("unknown_class", "unknown class folder"),
    ("name_label_mismatch", "disagrees with class folder"),
    ("bad_name", "does not match"),
    ("text_file", "not an image file"),
    ("csv_row_no_image", "not in validation_data"),
    ("image_no_csv_row", "no row in the labels CSV"),
    ("csv_label_mismatch", "disagrees with Patient_ID"),
    ("csv_missing", "labels CSV missing"),
])
def test_bad_tree_raises_or_skips(tiny_tree, case, expected):
    fold0 = os.path.join(tiny_tree, "training_data", "fold_0")
    src = os.path.join(fold0, "all", sorted(os.listdir(os.path.join(fold0, "all")))[0])
    if case == "unknown_class":
        os.makedirs(os.path.join(fold0, "blast"))
        os.rename(src, os.path.join(fold0, "blast", os.path.basename(src)))
    elif case == "name_label_mismatch":
        os.rename(src, os.path.join(fold0, "all", "UID_9_1_1_hem.bmp"))
    elif case == "bad_name":
        os.rename(src, os.path.join(fold0, "all", "cell_1.bmp"))
    elif case == "text_file":
        open(os.path.join(fold0, "hem", "notes.txt"), "w").write("x")
    elif case == "csv_row_no_image":
        open(_csv(tiny_tree), "a").write("UID_5_99_1_all.bmp,99.bmp,1\n")
    elif case == "image_no_csv_row":
        lines = open(_csv(tiny_tree)).read().splitlines()
        open(_csv(tiny_tree), "w").write("\n".join(lines[:-1]) + "\n")
    elif case == "csv_label_mismatch":
        text = open(_csv(tiny_tree)).read().replace("1.bmp,1", "1.bmp,0", 1)
        open(_csv(tiny_tree), "w").write(text)
    elif case == "csv_missing":
        os.remove(_csv(tiny_tree))
    with pytest.raises(cnmc.CnmcError, match=expected):
        cnmc.discover(tiny_tree)
    table, skipped = cnmc.discover(tiny_tree, on_error="skip")
    assert skipped and any(expected in s["reason"] for s in skipped)
    assert len(table) > 0
