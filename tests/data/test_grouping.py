"""Patient-grouped CV folds (leukemia_tf.data.grouping) and the pipeline's fold filter."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf.crossval import run as crossval
from leukemia_tf.data import grouping
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data import pipeline, records
from leukemia_tf.data.pipeline import reader


def table(all_patients=10, hem_patients=4, per_patient=5, seed=0):
    """Synthetic examples; ALL patients A0/A1 share two byte-identical images."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, prefix, count in ((1, "A", all_patients), (0, "H", hem_patients)):
        for p in range(count):
            for i in range(per_patient + int(rng.integers(0, 4))):
                rows.append({"source_path": f"{prefix}{p}/{i}.bmp", "patient_id": f"{prefix}{p}",
                             "label": label, "sha256": f"{prefix}{p}-{i}"})
    out = pd.DataFrame(rows)
    out.loc[out["source_path"] == "A1/0.bmp", "sha256"] = "A0-0"
    out.loc[out["source_path"] == "A1/1.bmp", "sha256"] = "A0-1"
    return out


def spread_ok(assignment):
    """Per class, patient groups per fold differ by at most one."""
    for _, part in assignment.groupby("label"):
        per_fold = part.groupby("cv_fold")["group"].nunique()
        per_fold = per_fold.reindex(range(assignment["cv_fold"].max() + 1), fill_value=0)
        if per_fold.max() - per_fold.min() > 1:
            return False
    return True


@pytest.mark.parametrize("num_folds", [2, 3, 4])
def test_folds_are_patient_and_duplicate_disjoint(num_folds):
    t = table()
    assignment, notes = grouping.assign_folds(t, num_folds)
    assert len(assignment) == len(t)
    assert sorted(assignment["source_path"]) == sorted(t["source_path"])  # each image once
    assert set(assignment["cv_fold"]) == set(range(num_folds))
    assert (assignment.groupby("patient_id")["cv_fold"].nunique() == 1).all()
    sha = t.set_index("source_path")["sha256"]
    assert (assignment.assign(sha=assignment["source_path"].map(sha))
            .groupby("sha")["cv_fold"].nunique() == 1).all()
    # The duplicate joins A0 and A1 into one group, and a note says so.
    folds = assignment.set_index("patient_id")["cv_fold"]
    assert folds["A0"].iloc[0] == folds["A1"].iloc[0]
    assert any("A0,A1" in n for n in notes)
    assert spread_ok(assignment)


def test_fewer_hem_patients_than_folds_is_leave_one_out_and_said():
    assignment, notes = grouping.assign_folds(table(hem_patients=2), 5)
    assert set(assignment["cv_fold"]) == {0, 1}
    hem = assignment[assignment["label"] == 0]
    assert hem.groupby("cv_fold")["patient_id"].nunique().tolist() == [1, 1]
    assert any("only 2 hem" in n for n in notes)
    assert spread_ok(assignment)


def test_one_hem_patient_cannot_be_cross_validated():
    with pytest.raises(ValueError, match="at least 2"):
        grouping.assign_folds(table(hem_patients=1), 2)
    with pytest.raises(ValueError, match=">= 2"):
        grouping.assign_folds(table(), 1)


def test_assignment_is_reproducible_and_round_trips(tmp_path):
    a, _ = grouping.assign_folds(table(), 3, seed=4)
    b, _ = grouping.assign_folds(table(), 3, seed=4)
    pd.testing.assert_frame_equal(a, b)
    path = str(tmp_path / "cv.csv")
    grouping.write_assignment(a, path)
    back = grouping.read_assignment(path)
    assert back["cv_fold"].tolist() == a["cv_fold"].tolist()
    assert grouping.summarize(a)["images"].sum() == len(a)


def paths_of(ds):
    return [p.decode() for b in ds for p in b["source_path"].numpy()]


def test_pipeline_keeps_exactly_the_assigned_side(records_dir, tmp_path):
    manifest = manifest_lib.load(records_dir)
    runs, notes = crossval.patient_plan(records_dir, (0, 1, 2), 2, str(tmp_path))
    assert [r["data"]["cv_fold"] for r in runs] == [0, 1]
    path = runs[0]["data"]["cv_assignment"]
    assignment = grouping.read_assignment(path)
    sel = manifest_lib.Selection("train", (0, 1, 2))
    for k in (0, 1):
        data = C.DataConfig(records_dir=records_dir, image_size=48, cv_assignment=path,
                            cv_fold=k, val_split="cv")
        held = set(paths_of(pipeline.make_dataset(data, sel, training=False, batch_size=8,
                                                  manifest=manifest, with_metadata=True)))
        # The training builder repeats forever, so check its predicate on every record.
        keep = reader.cv_filter(data, training=True)
        files = [s["full_path"] for s in manifest_lib.shards_for(manifest, records_dir, sel)]
        trained = set()
        for serialized in tf.data.TFRecordDataset(files):
            if bool(keep(serialized)):
                trained.add(records.parse_example(serialized)["image/source_path"]
                            .numpy().decode())
        assert held == set(assignment[assignment["cv_fold"] == k]["source_path"])
        assert not held & trained
        assert held | trained == set(assignment["source_path"])
        assert grouping.count_examples(manifest, sel, data, training=False) == len(held)
        assert grouping.count_examples(manifest, sel, data, training=True) == len(trained)
        counts = grouping.label_counts(manifest, sel, data)
        assert sum(counts.values()) == len(trained)


def test_cv_filter_refuses_a_missing_fold(records_dir, tmp_path):
    runs, _ = crossval.patient_plan(records_dir, (0,), 2, str(tmp_path))
    data = C.DataConfig(records_dir=records_dir, cv_assignment=runs[0]["data"]["cv_assignment"],
                        cv_fold=7)
    with pytest.raises(ValueError, match="cv_fold 7"):
        reader.cv_filter(data, training=True)
    assert manifest_lib.parse_val_split("cv", (0, 1)) == manifest_lib.Selection("train", (0, 1))


@pytest.mark.slow
def test_crossval_by_patients_end_to_end(records_dir, tmp_path):
    from tests.helpers import tiny_config
    base = C.replace(tiny_config(records_dir, tmp_path / "unused", epochs=1),
                     model={"augment": C.AugmentConfig(enabled=False)})
    out = str(tmp_path / "cv")
    result = crossval.run(base, ["resnet_small"], out, folds=(0, 1, 2), cv="patients",
                          num_folds=2)
    rows = result["rows"]
    assert [r["fold"] for r in rows] == [0, 1]
    assert [r["eval_split"] for r in rows] == ["cv0", "cv1"]
    assignment = grouping.read_assignment(f"{out}/cv_assignment.csv")
    for r in rows:
        k = r["fold"]
        expected = set(assignment[assignment["cv_fold"] == k]["patient_id"].astype(str))
        assert set(r["held_out_patients"].split(",")) == expected
        assert 0 <= r["worst_patient_accuracy"] <= 1
    patients = pd.read_csv(result["per_patient"], dtype={"patient_id": str})
    assert set(patients["patient_id"]) == set(assignment["patient_id"].astype(str))


def test_cv_rule_is_the_same_on_pandas_and_tensors():
    folds = [-1, 0, 1, 2, 1]
    for training in (True, False):
        on_pandas = grouping.keeps(pd.Series(folds), 1, training).tolist()
        on_tensor = grouping.keeps(tf.constant(folds, tf.int64), 1, training).numpy().tolist()
        in_tf_data = [bool(k) for k in tf.data.Dataset.from_tensor_slices(
            tf.constant(folds, tf.int64)).map(lambda f: grouping.keeps(f, 1, training))]
        assert on_pandas == on_tensor == in_tf_data
    assert on_pandas == [True, False, True, False, True]            # evaluation: fold 1 + unlisted
    assert grouping.keeps(pd.Series(folds), 1, True).tolist() == [True, True, False, True, False]


def test_pooled_keeps_the_fold_count_with_one_hem_patient_per_fold_at_most():
    # 10 patients, 2 of them hem (the real_dev shape): 5 folds of 2 patients, never both
    # hem patients in one fold (training would then see no hem cell).
    assignment, notes = grouping.assign_folds(table(all_patients=8, hem_patients=2), 5,
                                              pooled=True)
    assert set(assignment["cv_fold"]) == set(range(5))
    hem = assignment[assignment["label"] == 0].groupby("cv_fold")["patient_id"].nunique()
    assert hem.max() == 1 and hem.sum() == 2
    assert (assignment.groupby("patient_id")["cv_fold"].nunique() == 1).all()
    assert any("3 folds hold out no hem patient" in n for n in notes)
    # Without pooled, the same table falls back to leave-one-hem-patient-out.
    assert set(grouping.assign_folds(table(all_patients=8, hem_patients=2), 5)[0]
               ["cv_fold"]) == {0, 1}


def test_pooled_never_deals_more_folds_than_groups():
    assignment, notes = grouping.assign_folds(table(all_patients=3, hem_patients=2), 6,
                                              pooled=True)
    # A0 and A1 share images (one group): 4 groups, so 4 folds, and a note says so.
    assert set(assignment["cv_fold"]) == {0, 1, 2, 3}
    assert any("only 4 patient groups for 6 folds" in n for n in notes)
