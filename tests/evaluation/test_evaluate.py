"""Evaluation, prediction and cross-validation on a tiny trained model."""
import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from leukemia_tf.evaluation import evaluate, predict
from leukemia_tf.inference import scoring
from leukemia_tf.inference import loading
from leukemia_tf.data import images
from leukemia_tf.data import manifest as manifest_lib
from tests.helpers import build_tree, run_main
from tests.helpers import check_links


def _report(path):
    return open(path, encoding="utf-8").read()


@pytest.fixture(scope="module")
def validation_eval(model_dir, records_dir):
    """The default evaluation (validation, dihedral8 TTA, threshold 0.5), run once."""
    return evaluate.run(evaluate.EvalConfig(model_dir, records_dir))


def test_evaluate_scores_every_image_once_and_writes_outputs(model_dir, records_dir,
                                                             validation_eval):
    m = validation_eval
    out = os.path.join(model_dir, "eval", "validation-dihedral8")  # the default TTA
    assert m["eval_dir"] == out and m["tta"] == "dihedral8"
    on_disk = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("weighted_f1", "accuracy", "roc_auc", "confusion_matrix", "num_examples"):
        assert key in on_disk
    assert on_disk["num_examples"] == 10 == m["num_examples"]
    preds = pd.read_csv(os.path.join(out, "predictions.csv"))
    assert {"source_path", "patient_id", "label", "probability", "prediction"} <= set(preds)
    examples = pd.read_csv(os.path.join(records_dir, "examples.csv"))
    val_paths = set(examples[examples.split == "validation"].rel_path)
    assert sorted(preds.source_path) == sorted(val_paths)
    # metrics.json agrees with predictions.csv, and its one AUC is sklearn's exact one
    from sklearn.metrics import f1_score, roc_auc_score
    assert on_disk["weighted_f1"] == pytest.approx(
        f1_score(preds.label, preds.prediction, average="weighted"))
    assert on_disk["roc_auc"] == pytest.approx(roc_auc_score(preds.label, preds.probability),
                                               abs=1e-6)
    assert {k for k in on_disk if "auc" in k} == {"roc_auc", "pr_auc"}
    per_patient = pd.read_csv(os.path.join(out, "per_patient.csv"))
    assert per_patient.images.sum() == 10
    assert list(per_patient.accuracy) == sorted(per_patient.accuracy)
    text = _report(m["report"])
    # 2 validation patients: too few for a patient bootstrap, and the report says so
    assert f"| ROC AUC (exact, sklearn) | {m['roc_auc']:.4f} (no interval: 2 patients" in text
    for png in ("training_curves.png", "confusion_matrix.png", "roc_pr.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    linked = check_links(m["report"])
    assert {"training_curves.png", "confusion_matrix.png", "roc_pr.png", "metrics.json",
            "predictions.csv", "../index.md"} <= set(linked)
    check_links(os.path.join(model_dir, "eval", "index.md"))


def test_report_starts_with_the_run_context(model_dir, records_dir, validation_eval):
    m = validation_eval
    text = _report(m["report"])
    head = text[:text.index("## Headline")]
    # trained on folds 0,1 with val_split=validation: validation chose the best epoch
    assert m["split"] == "validation" and m["split_role"] == "selection"
    assert head.startswith("# m on validation (selection)\n\n> **Warning:** validation is "
                           "this model's selection split")
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    fingerprint = manifest_lib.fingerprint(records_dir)
    import leukemia_tf
    for row in ("| model | resnet_small (", f"| parameters | {summary['params']:,} |",
                "| image size | 48 x 48 px |", "| epochs (best epoch) | 1 (best ",
                "| precision | float32 |", "| strategy | ", "| train folds | 0, 1 |",
                "| selection split (chose the best epoch) | validation |",
                "| evaluated split | validation (selection) |",
                "| test-time augmentation | dihedral8 |",
                "| threshold (ALL if p >= t) | 0.5000 (fixed) |",
                f"| records fingerprint (manifest.json content) | {fingerprint} |",
                f"| leukemia_tf version | {leukemia_tf.__version__} |", "| date | 20"):
        assert row in head, row


def test_each_evaluation_keeps_its_own_folder(model_dir, records_dir, validation_eval, capsys):
    first = validation_eval
    fold2 = evaluate.run(evaluate.EvalConfig(model_dir, records_dir, split="fold2",
                                             progress=True))
    assert "score fold2: scored 16 images" in capsys.readouterr().err
    plain = evaluate.run(evaluate.EvalConfig(model_dir, records_dir, tta="none"))
    assert [os.path.basename(m["eval_dir"]) for m in (first, fold2, plain)] == [
        "validation-dihedral8", "fold2-dihedral8", "validation"]
    assert os.path.exists(first["report"])            # fold2 did not erase validation
    assert fold2["split_role"] == "held-out"
    assert fold2["warnings"] == fold2["small_n_warnings"]  # 16 images: no role warning
    banners = [line for line in _report(fold2["report"]).splitlines()
               if line.startswith("> **Warning:**")]
    assert len(banners) == 1 and "small N" in banners[0]  # no split-role banner
    assert fold2["fold"] == 2 and plain["tta"] == "none" and plain["num_examples"] == 10
    index = os.path.join(model_dir, "eval", "index.md")
    linked = check_links(index)
    assert {"validation/report.md", "fold2-dihedral8/report.md",
            "validation-dihedral8/report.md"} <= set(linked)
    assert "| [fold2-dihedral8](fold2-dihedral8/report.md) | fold2 | held-out |" in \
        _report(index)


def test_tta_averages_the_views(model_dir):
    predictor = loading.load_model(model_dir)
    batch = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    views = [batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1]]
    expected = np.mean([predictor(np.ascontiguousarray(v)) for v in views], axis=0)
    np.testing.assert_allclose(scoring.predict_batch(predictor, batch, "flips"), expected,
                               rtol=1e-5)
    assert len(scoring.tta_views(batch, "dihedral8")) == 8


def test_trained_on_split_is_labelled(model_dir, records_dir, tmp_path):
    m = evaluate.run(evaluate.EvalConfig(model_dir, records_dir, split="fold0", tta="none",
                                         out_dir=str(tmp_path / "ev")))
    assert m["eval_dir"] == str(tmp_path / "ev" / "fold0")     # --out_dir: the root
    assert check_links(str(tmp_path / "ev" / "index.md")) == ["fold0/report.md"]
    on_disk = json.load(open(os.path.join(m["eval_dir"], "metrics.json")))
    assert on_disk["split"] == "fold0" and on_disk["split_role"] == "trained-on"
    assert "fold0 is a training fold of this model (train_folds 0, 1)" in m["warnings"][0]
    assert "> **Warning:** fold0 is a training fold" in _report(m["report"])


def test_threshold_chosen_on_a_held_out_fold(model_dir, records_dir):
    m = evaluate.run(evaluate.EvalConfig(model_dir, records_dir, threshold="youden",
                                         tta="none"))
    assert m["threshold_chosen_on"] == "fold2" and m["threshold_split_role"] == "held-out"
    assert 0 <= m["threshold"] <= 1 and not m["threshold_biased"]
    assert m["eval_dir"].endswith(os.path.join("eval", "validation-thr_youden_fold2"))
    assert f"| threshold (ALL if p >= t) | {m['threshold']:.4f} (youden, chosen on fold2: " \
           "held-out) |" in _report(m["report"])
    with pytest.raises(ValueError, match="must differ"):
        evaluate.run(evaluate.EvalConfig(model_dir, records_dir, threshold="f1",
                                         threshold_split="validation"))


def test_threshold_on_a_trained_on_fold_is_refused(model_dir, records_dir):
    cfg = evaluate.EvalConfig(model_dir, records_dir, split="fold2", threshold="f1",
                              threshold_split="fold1")
    with pytest.raises(ValueError, match="refusing to choose the threshold on fold1: the "
                                         "model was trained on it"):
        evaluate.run(cfg)
    m = evaluate.run(dataclasses.replace(cfg, allow_biased_threshold=True))
    assert m["threshold_biased"] and m["threshold_split_role"] == "trained-on"
    assert any("chosen on fold1 (trained-on" in w for w in m["warnings"])
    assert "chosen on fold1 (trained-on" in _report(m["report"])


def test_evaluate_refuses_unlabeled_test(model_dir, records_dir):
    with pytest.raises(ValueError, match="--split must be 'validation' or 'fold<k>'"):
        evaluate.run(evaluate.EvalConfig(model_dir, records_dir, split="test"))


def test_evaluate_a_model_under_ram(model_dir, records_dir, tmp_path, monkeypatch):
    from leukemia_tf import io
    monkeypatch.chdir(tmp_path)
    import shutil
    remote = "ram://h10_eval/m"
    local = tmp_path / "copy"       # the model dir without the other tests' evaluations
    shutil.copytree(model_dir, local, ignore=shutil.ignore_patterns("eval"))
    io.copytree(str(local), remote)
    m = evaluate.run(evaluate.EvalConfig(remote, records_dir, split="fold2", tta="none"))
    assert m["eval_dir"] == remote + "/eval/fold2" and m["split_role"] == "held-out"
    for name in ("metrics.json", "predictions.csv", "per_patient.csv", "report.md",
                 "training_curves.png", "confusion_matrix.png", "roc_pr.png"):
        assert io.exists(f"{remote}/eval/fold2/{name}"), name
    assert io.read_json(f"{remote}/eval/fold2/metrics.json")["num_examples"] == 16
    assert "[fold2](fold2/report.md)" in io.read_text(f"{remote}/eval/index.md")
    assert "![Training curves](training_curves.png)" in io.read_text(m["report"])
    assert not os.path.exists("ram:") and not os.path.exists(tmp_path / "ram:")
    assert not any("ram:" in d for d, _, _ in os.walk(os.path.dirname(model_dir)))


def test_predict_folder_with_a_corrupt_file(model_dir, tmp_path):
    tree = build_tree(str(tmp_path / "d"), per_class_per_fold=1, n_val=1, n_test=11)
    folder = os.path.join(tree, "testing_data", "C-NMC_test_final_phase_data")
    open(os.path.join(folder, "7.bmp"), "wb").write(b"BM" + b"\x00" * 100)
    small = np.zeros((300, 300, 3), np.uint8)  # smaller than the canvas: padded
    open(os.path.join(folder, "12.png"), "wb").write(images.encode(small, "png"))
    table, errors = predict.predict(model_dir, [folder])
    assert [e["file"] for e in errors] == ["7.bmp"] and "BMP" in errors[0]["reason"]
    assert list(table.file) == [f"{i}.bmp" for i in range(1, 12) if i != 7] + ["12.png"]
    assert table.probability.between(0, 1).all()
    assert set(table.prediction) <= {0, 1}
    assert (table.prediction == (table.probability >= 0.5)).all()


def test_predict_records_matches_files(model_dir, records_dir, tmp_path):
    """The test split from records (pre-resized by the converter) and the same BMP files
    from the tree (600x600, preprocessed by predict) get the same probabilities."""
    from_records, errors = predict.predict(model_dir, [records_dir])
    assert errors == [] and list(from_records.file) == ["1.bmp", "2.bmp", "3.bmp"]
    tree = manifest_lib.load(records_dir)["source_root"]
    folder = os.path.join(tree, "testing_data", "C-NMC_test_final_phase_data")
    from_files, errors = predict.predict(model_dir, [folder])
    assert errors == [] and list(from_files.file) == ["1.bmp", "2.bmp", "3.bmp"]
    assert list(from_files.columns) == list(from_records.columns) == list(predict.COLUMNS)
    np.testing.assert_allclose(from_files.probability, from_records.probability, atol=1e-5)
    assert from_files.probability.std() > 0  # three different cells, not a constant
    assert list(from_files.prediction) == list(from_records.prediction)


def test_predict_cli(model_dir, records_dir, tmp_path):
    out = tmp_path / "p.csv"
    stale = tmp_path / "p.errors.csv"
    stale.write_text("file,path,reason\nold.bmp,old.bmp,from an earlier run\n")
    args = [f"--model_dir={model_dir}", f"--input={records_dir}", f"--output={out}"]
    code, line = run_main("predict", *args)
    assert code == 1 and f"its side file {stale} exists: pass --overwrite" in line, line
    assert (run_main("predict", *args, "--overwrite")) == (0, "")
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "probability", "prediction", "path"]
    assert len(table) == 3
    assert not stale.exists(), "a stale errors file from an earlier run was left"


def test_write_outputs_errors_file_belongs_to_its_run(tmp_path):
    table = pd.DataFrame({"file": ["1.bmp"], "probability": [0.7], "prediction": [1],
                          "path": ["a/1.bmp"]})
    out = str(tmp_path / "p.csv")
    errors = [{"file": "7.bmp", "path": "a/7.bmp", "reason": "corrupt BMP"}]
    assert predict.write_outputs(table, errors, out) == str(tmp_path / "p.errors.csv")
    assert list(pd.read_csv(tmp_path / "p.errors.csv").file) == ["7.bmp"]
    assert predict.write_outputs(table, [], out) is None
    assert not (tmp_path / "p.errors.csv").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out), table)
