"""Numbers at small N say how sure they are: n/a where undefined, a banner, and bootstrap
intervals over patients."""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from leukemia_tf.evaluation import evaluate as evaluation
from leukemia_tf.metrics import classification as metrics, patients
from leukemia_tf.reports import report
from tests.helpers import run_main


def test_one_image_one_class_has_no_certain_looking_numbers():
    m = metrics.classification_metrics([1], [0.9])
    # sklearn averages over the classes present (macro F1 1.0) beside hem F1 0.0.
    assert m["macro_f1"] is None and m["balanced_accuracy"] is None
    assert m["f1_hem"] is None and m["precision_hem"] is None and m["recall_hem"] is None
    assert m["f1_all"] == 1.0 and m["precision_all"] == 1.0
    assert m["weighted_f1"] == 1.0  # the challenge's call, weight 0 for the absent class
    json.dumps(m, allow_nan=False)


def test_precision_of_a_class_never_predicted_is_undefined():
    m = metrics.classification_metrics([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6])
    assert m["precision_hem"] is None       # 0/0: nothing called hem
    assert m["f1_hem"] == 0.0               # 2TP / (2TP + FP + FN) = 0 / 2: defined
    assert m["macro_f1"] == pytest.approx(f1_score([1, 0, 1, 0], [1, 1, 1, 1],
                                                   average="macro", zero_division=0))


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_fast_weighted_f1_is_sklearns(threshold):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    pred = (p >= threshold).astype(int)
    assert metrics.weighted_f1_fast(y, p, threshold) == pytest.approx(
        f1_score(y, pred, average="weighted", zero_division=0))


@pytest.mark.parametrize("ties", [False, True])
def test_fast_roc_auc_is_sklearns(ties):
    rng = np.random.default_rng(2)
    for size in (2, 7, 300):
        y = rng.integers(0, 2, size)
        y[:2] = (0, 1)
        p = np.clip(0.3 * y + 0.7 * rng.random(size), 0, 1)
        if ties:
            p = np.round(p, 1)  # many equal scores across both classes
        assert patients.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert patients.roc_auc([1, 1], [0.2, 0.9]) is None


def _cells(patients=10, per=30, seed=0):
    """Patients whose cells share a patient-level shift: dependent cells."""
    rng = np.random.default_rng(seed)
    ids, y, p = [], [], []
    for k in range(patients):
        label = k % 2
        shift = rng.normal(0, 0.25)
        ids += [f"P{k}"] * per
        y += [label] * per
        p += list(np.clip(0.5 + (0.2 if label else -0.2) + shift
                          + rng.normal(0, 0.05, per), 0, 1))
    return np.array(ids), np.array(y), np.array(p)


def test_intervals_resample_patients_and_are_wider_than_over_cells():
    ids, y, p = _cells()
    by_patient = metrics.confidence_intervals(y, p, ids, n=300)
    by_cell = metrics.confidence_intervals(y, p, None, n=300)
    assert by_patient["unit"] == "patients" and by_patient["units"] == 10
    assert by_patient["note"] is None
    assert by_cell["unit"] == "cells" and by_cell["units"] == 300 and "independent" in \
        by_cell["note"]
    for name in ("weighted_f1", "roc_auc"):
        c = by_patient[name]
        assert c["low"] <= c["estimate"] <= c["high"]
        width = c["high"] - c["low"]
        assert width > by_cell[name]["high"] - by_cell[name]["low"]
    text = metrics.format_ci(by_patient, "weighted_f1")
    assert text.startswith(f"{by_patient['weighted_f1']['estimate']:.2f} [")
    assert text.endswith("] 95% CI, bootstrap over 10 patients")
    # same seed, same interval
    assert metrics.confidence_intervals(y, p, ids, n=300) == by_patient


def test_one_patient_gives_no_interval():
    ci = metrics.confidence_intervals([1, 1, 1], [0.9, 0.8, 0.3], ["A", "A", "A"], n=50)
    assert ci["weighted_f1"]["low"] is None and ci["roc_auc"]["estimate"] is None
    assert metrics.format_ci(ci, "roc_auc") == "n/a"
    assert "no interval: 1 patient, a bootstrap needs 5+" in metrics.format_ci(
        ci, "weighted_f1")


def test_few_patients_give_no_interval_that_looks_precise():
    ids, y, p = _cells(patients=4)
    ci = metrics.confidence_intervals(y, p, ids, n=100)
    assert ci["units"] == 4 and ci["weighted_f1"]["low"] is None
    ids, y, p = _cells(patients=5)
    ci = metrics.confidence_intervals(y, p, ids, n=100)
    assert ci["weighted_f1"]["low"] is not None
    assert ci["roc_auc"]["undefined"] > 0  # some resamples draw one class only
    assert "of resamples)" in metrics.format_ci(ci, "roc_auc")


def test_a_rare_undefined_resample_is_counted_not_rounded_to_0_percent():
    ci = {"unit": "patients", "units": 6, "level": 0.95, "resamples": 1000,
          "roc_auc": {"estimate": 0.8, "low": 0.7, "high": 0.9, "undefined": 1},
          "weighted_f1": {"estimate": 0.8, "low": 0.7, "high": 0.9, "undefined": 0}}
    assert metrics.format_ci(ci, "roc_auc").endswith(
        "bootstrap over 6 patients (undefined in 1 of 1000 resamples)")
    assert metrics.format_ci(ci, "weighted_f1").endswith("bootstrap over 6 patients")
    ci = dict(ci, units=1, roc_auc={"estimate": 0.8, "low": None, "high": None})
    assert metrics.format_ci(ci, "roc_auc") == "0.80 (no interval: 1 patient, a bootstrap " \
        "needs 5+)"


def test_report_shows_na_banner_and_interval(tmp_path):
    m = metrics.classification_metrics([1], [0.9])
    m["confidence_intervals"] = metrics.confidence_intervals([1], [0.9], ["5"], n=20)
    m["small_n_warnings"] = metrics.small_n_warnings(m, m["confidence_intervals"])
    text = open(report.write_report(str(tmp_path), m, None, {}, title="t"),
                encoding="utf-8").read()
    assert "> **Warning:** single class: the 1 image is all" in text
    assert "> **Warning:** small N: 1 image (< " in text
    assert "> **Warning:** few patients: 1" in text
    assert "| balanced accuracy | n/a |" in text and "macro F1 n/a" in text
    assert "| hem (0) | n/a | n/a | n/a | 0 |" in text


def test_evaluate_one_image_split_end_to_end(real_records, untrained_export, capsys,
                                             tmp_path):
    m = evaluation.run(evaluation.EvalConfig(untrained_export, real_records,
                                             split="validation"))
    on_disk = json.load(open(os.path.join(m["eval_dir"], "metrics.json")))
    assert on_disk["num_examples"] == 1
    assert on_disk["macro_f1"] is None and on_disk["recall_hem"] is None
    # The one image is ALL: hem's F1 is 0 if it was called hem, else undefined (0/0).
    called_hem = on_disk["confusion_matrix"][1][0] == 1
    assert on_disk["f1_hem"] == (0.0 if called_hem else None)
    assert on_disk["precision_all"] == (None if called_hem else 1.0)
    assert on_disk["roc_auc"] is None and on_disk["balanced_accuracy"] is None
    assert any(w.startswith("single class") for w in m["warnings"])
    text = open(m["report"], encoding="utf-8").read()
    assert "**Warning:** small N: 1 image (< " in text
    # The console says so too, one WARNING line each (README "Small N").
    capsys.readouterr()
    assert run_main("evaluate", f"--model_dir={untrained_export}",
                    f"--records_dir={real_records}", "--split=validation",
                    f"--out_dir={tmp_path}") == (0, "")
    warned = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith("WARNING: ")]
    assert warned == [f"WARNING: {w}" for w in m["warnings"]] and len(warned) >= 2, warned
    assert any(w.startswith("WARNING: small N") for w in warned), warned


def test_evaluate_reports_patient_bootstrap(real_records, untrained_export):
    m = evaluation.run(evaluation.EvalConfig(untrained_export, real_records,
                                             split="fold0"))
    ci = json.load(open(os.path.join(m["eval_dir"], "metrics.json")))["confidence_intervals"]
    assert ci["unit"] == "patients" and ci["units"] == 3  # patients 1, 3 and H6
    assert ci["weighted_f1"]["estimate"] == pytest.approx(m["weighted_f1"])
    text = open(m["report"], encoding="utf-8").read()
    assert ci["weighted_f1"]["low"] is None  # 3 patients: no interval that looks precise
    assert "(no interval: 3 patients, a bootstrap needs 5+)" in text
