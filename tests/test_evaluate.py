"""Evaluation, prediction and cross-validation on a tiny trained model."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from leukemia_tf import config as C
from leukemia_tf import crossval, evaluation, export, prediction, scoring, training
from leukemia_tf.data import images, pipeline
from conftest import build_tree, tiny_config


@pytest.fixture(scope="module")
def model_dir(records_dir, tmp_path_factory):
    md = tmp_path_factory.mktemp("trained") / "m"
    cfg = C.replace(tiny_config(records_dir, md, epochs=1), data={"train_folds": (0, 1)})
    training.run(cfg)
    return str(md)


def test_evaluate_scores_every_image_once_and_writes_outputs(model_dir, records_dir):
    m = evaluation.evaluate(evaluation.EvalConfig(model_dir, records_dir))
    out = os.path.join(model_dir, "eval")
    on_disk = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("weighted_f1", "accuracy", "roc_auc", "confusion_matrix", "num_examples"):
        assert key in on_disk
    assert on_disk["num_examples"] == 10 == m["num_examples"]
    preds = pd.read_csv(os.path.join(out, "predictions.csv"))
    assert {"source_path", "patient_id", "label", "probability", "prediction"} <= set(preds)
    examples = pd.read_csv(os.path.join(records_dir, "examples.csv"))
    val_paths = set(examples[examples.split == "validation"].rel_path)
    assert sorted(preds.source_path) == sorted(val_paths)
    # metrics.json agrees with predictions.csv
    from sklearn.metrics import f1_score
    assert on_disk["weighted_f1"] == pytest.approx(
        f1_score(preds.label, preds.prediction, average="weighted"))
    per_patient = pd.read_csv(os.path.join(out, "per_patient.csv"))
    assert per_patient.images.sum() == 10
    assert list(per_patient.accuracy) == sorted(per_patient.accuracy)
    text = open(os.path.join(out, "report.md")).read()
    for png in ("training_curves.png", "confusion_matrix.png", "roc_pr.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000 and png in text


def test_tta_averages_the_views(model_dir, records_dir):
    predictor = export.load_model(model_dir)
    batch = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    views = [batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1]]
    expected = np.mean([predictor(np.ascontiguousarray(v)) for v in views], axis=0)
    np.testing.assert_allclose(scoring.predict_batch(predictor, batch, "flips"), expected,
                               rtol=1e-5)
    assert len(scoring.tta_views(batch, "dihedral8")) == 8
    m = evaluation.evaluate(evaluation.EvalConfig(model_dir, records_dir, tta="dihedral8",
                                                  out_dir=os.path.join(model_dir, "e8")))
    assert m["tta"] == "dihedral8" and m["num_examples"] == 10


def test_threshold_chosen_on_a_held_out_fold(model_dir, records_dir):
    m = evaluation.evaluate(evaluation.EvalConfig(model_dir, records_dir, threshold="youden",
                                                  out_dir=os.path.join(model_dir, "ey")))
    assert m["threshold_chosen_on"] == "train-fold2" and 0 <= m["threshold"] <= 1
    with pytest.raises(ValueError, match="must differ"):
        evaluation.evaluate(evaluation.EvalConfig(model_dir, records_dir, threshold="f1",
                                                  threshold_split="validation"))


def test_evaluate_refuses_unlabeled_test(model_dir, records_dir):
    with pytest.raises(ValueError):
        evaluation.evaluate(evaluation.EvalConfig(model_dir, records_dir, split="test"))


def test_predict_folder_with_a_corrupt_file(model_dir, tmp_path):
    tree = build_tree(str(tmp_path / "d"), per_class_per_fold=1, n_val=1, n_test=11)
    folder = os.path.join(tree, "testing_data", "C-NMC_test_final_phase_data")
    open(os.path.join(folder, "7.bmp"), "wb").write(b"BM" + b"\x00" * 100)
    small = np.zeros((300, 300, 3), np.uint8)  # smaller than the canvas: padded
    open(os.path.join(folder, "12.png"), "wb").write(images.encode(small, "png"))
    table, errors = prediction.predict(model_dir, [folder])
    assert [e["file"] for e in errors] == ["7.bmp"] and "BMP" in errors[0]["reason"]
    assert list(table.file) == [f"{i}.bmp" for i in range(1, 12) if i != 7] + ["12.png"]
    assert table.probability.between(0, 1).all()
    assert set(table.label) <= {0, 1}
    assert (table.label == (table.probability >= 0.5)).all()


def test_predict_records_matches_files(model_dir, records_dir, tmp_path):
    """The test split from records (pre-resized by the converter) and the same BMP files
    from the tree (600x600, preprocessed by predict) get the same probabilities."""
    from_records, errors = prediction.predict(model_dir, [records_dir])
    assert errors == [] and list(from_records.file) == ["1.bmp", "2.bmp", "3.bmp"]
    tree = pipeline.load(records_dir)["source_root"]
    folder = os.path.join(tree, "testing_data", "C-NMC_test_final_phase_data")
    from_files, errors = prediction.predict(model_dir, [folder])
    assert errors == [] and list(from_files.file) == ["1.bmp", "2.bmp", "3.bmp"]
    assert list(from_files.columns) == list(from_records.columns) == list(prediction.COLUMNS)
    np.testing.assert_allclose(from_files.probability, from_records.probability, atol=1e-5)
    assert from_files.probability.std() > 0  # three different cells, not a constant
    assert list(from_files.label) == list(from_records.label)


def test_predict_cli(model_dir, records_dir, tmp_path):
    import subprocess
    import sys
    out = tmp_path / "p.csv"
    stale = tmp_path / "p.errors.csv"
    stale.write_text("file,path,reason\nold.bmp,old.bmp,from an earlier run\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "leukemia_tf.predict", f"--model_dir={model_dir}",
                        f"--input={records_dir}", f"--output={out}"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=repo), timeout=200)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "probability", "label", "path"] and len(table) == 3
    assert not stale.exists(), "a stale errors file from an earlier run was left"


def test_write_outputs_errors_file_belongs_to_its_run(tmp_path):
    table = pd.DataFrame({"file": ["1.bmp"], "probability": [0.7], "label": [1],
                          "path": ["a/1.bmp"]})
    out = str(tmp_path / "p.csv")
    errors = [{"file": "7.bmp", "path": "a/7.bmp", "reason": "corrupt BMP"}]
    assert prediction.write_outputs(table, errors, out) == str(tmp_path / "p.errors.csv")
    assert list(pd.read_csv(tmp_path / "p.errors.csv").file) == ["7.bmp"]
    assert prediction.write_outputs(table, [], out) is None
    assert not (tmp_path / "p.errors.csv").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out), table)


def test_crossval_two_folds(records_dir, tmp_path):
    base = tiny_config(records_dir, "", epochs=1, steps_per_epoch=2)
    result = crossval.run(base, ["resnet_small"], str(tmp_path / "cv"), folds=(0, 1),
                          include_validation=False)
    table = pd.read_csv(result["csv"])
    assert list(table.fold) == ["fold0", "fold1"] and list(table.train_folds.astype(str)) == ["1", "0"]
    assert table.weighted_f1.between(0, 1).all() and (table.params > 0).all()
    assert os.path.getsize(result["png"]) > 1000
    assert os.path.exists(tmp_path / "cv" / "resnet_small" / "fold1" / "summary.json")


def test_leaked_groups():
    manifest = {"duplicate_groups": [
        {"splits": ["train"], "folds": [0, 2]}, {"splits": ["train"], "folds": [1, 1]},
        {"splits": ["train", "validation"], "folds": [1]}]}
    assert crossval.leaked_groups(manifest, (0, 1), "fold2") == 1
    assert crossval.leaked_groups(manifest, (0, 2), "fold1") == 0
    assert crossval.leaked_groups(manifest, (1,), "validation") == 1
    assert crossval.plan((0, 1, 2))[-1] == {"train_folds": (0, 1, 2), "val_split": "validation"}
