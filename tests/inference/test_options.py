"""Inference options through evaluate on the tiny records, and their wiring."""
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from leukemia_tf import config as C
from leukemia_tf.errors import UserError
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.metrics import calibration
from leukemia_tf.inference import cells, options, stored_calibration
from leukemia_tf.evaluation import evaluate as evaluation
from tests.helpers import check_links, run_main


def _eval(model_dir, records_dir, tmp_path, **kw):
    chosen = {k: kw.pop(k) for k in ("adapt_bn", "calibrate", "neighbour_vote") if k in kw}
    kw.setdefault("tta", "none")  # the options on plain scores (TTA has its own tests)
    cfg = evaluation.EvalConfig(model_dir, records_dir, out_dir=str(tmp_path), batch_size=16,
                                inference=C.InferenceConfig(**chosen), **kw)
    m = evaluation.run(cfg)
    on_disk = json.load(open(os.path.join(m["eval_dir"], "metrics.json")))
    preds = pd.read_csv(os.path.join(m["eval_dir"], "predictions.csv"))
    return m, on_disk, preds, open(m["report"], encoding="utf-8").read()


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_training_stores_a_temperature(model_dir):
    stored = stored_calibration.load(model_dir)
    assert stored["fitted_on"] == "validation" and stored["n"] == 10
    assert stored["temperature"] > 0
    assert stored["ece_after"] <= stored["ece_before"] + 1e-9


def test_default_evaluation_has_patients_calibration_and_probe(
        model_dir, records_dir, tmp_path):
    m, on_disk, preds, text = _eval(model_dir, records_dir, tmp_path)
    assert on_disk["options"] == {"adapt_bn": "none", "calibrate": "none",
                                  "neighbour_vote": 0, "transductive": False}
    assert not [c for c in preds if c.startswith("probability_")]
    # patients: validation has patients 5 (ALL) and H5 (hem), 5 cells each
    table = pd.read_csv(os.path.join(m["eval_dir"], "patients.csv"), dtype={"patient": str})
    assert {"patient", "cells", "fraction_called_all", "mean_probability", "call", "truth",
            "correct", "disagreement"} <= set(table)
    assert sorted(table["patient"]) == ["5", "H5"] and table["cells"].sum() == 10
    assert on_disk["patients"]["accuracy"] == pytest.approx(table["correct"].mean())
    assert "## Patient-level calls" in text and "Patient-level accuracy" in text
    # ECE and Brier of the reported probabilities
    y, p = preds["label"], preds["probability"]
    assert on_disk["calibration"]["ece"] == pytest.approx(
        calibration.expected_calibration_error(p, y), abs=1e-6)
    assert on_disk["calibration"]["brier"] == pytest.approx(
        calibration.brier_score(p, y), abs=1e-6)
    assert "uncalibrated" not in on_disk["calibration"]
    assert os.path.getsize(os.path.join(m["eval_dir"], "reliability.png")) > 1000
    # the probe: fitted on the 32 cells of training folds 0 and 1, scored on the 10
    probe = on_disk["shortcut_probe"]
    assert probe["num_train"] == 32 and probe["num_examples"] == 10
    assert 0 <= probe["weighted_f1"] <= 1
    assert "## Shortcut probe" in text and "| shortcut probe |" in text
    assert {"reliability.png", "patients.csv"} <= set(check_links(m["report"]))


def test_shortcut_probe_can_be_turned_off(model_dir, records_dir, tmp_path):
    m, on_disk, _, text = _eval(model_dir, records_dir, tmp_path, shortcut_probe=False)
    assert "shortcut_probe" not in on_disk and "Shortcut probe" not in text


def test_adapt_bn_set_leaves_model_file_untouched(model_dir, records_dir, tmp_path):
    keras_file = os.path.join(model_dir, "model.keras")
    before = _sha(keras_file)
    m, on_disk, preds, text = _eval(model_dir, records_dir, tmp_path, adapt_bn="set")
    assert _sha(keras_file) == before
    assert on_disk["options"]["adapt_bn"] == "set" and on_disk["options"]["transductive"]
    assert {"probability_model", "probability_adapted"} <= set(preds)
    assert np.allclose(preds["probability"], preds["probability_adapted"])
    # adaptation on 10 cells moves the scores (the statistics changed)
    assert not np.allclose(preds["probability_model"], preds["probability_adapted"])
    assert "before_options" in on_disk
    assert f"weighted F1 {on_disk['before_options']['weighted_f1']:.4f}" in text
    assert "BN adaptation on the whole scored set (transductive)" in text


def test_adapt_bn_patient_warns_about_single_class_patients(model_dir, records_dir, tmp_path):
    _, on_disk, _, text = _eval(model_dir, records_dir, tmp_path, adapt_bn="patient",
                                shortcut_probe=False)
    assert on_disk["options"]["adapt_bn"] == "patient"
    assert "single class" in text


def test_adapt_bn_refuses_a_model_without_batch_norm(records_dir, tmp_path):
    from leukemia_tf.model import export, registry
    model = registry.build_model(C.ModelConfig(name="seed_cnn", width=4,
                                               augment=C.AugmentConfig(enabled=False)), 48)
    export.export_model(model, str(tmp_path / "nobn"))
    with pytest.raises(UserError, match="no BatchNormalization"):
        _eval(str(tmp_path / "nobn"), records_dir, tmp_path / "out", adapt_bn="set",
              shortcut_probe=False)


def test_calibrate_on_a_held_out_split(model_dir, records_dir, tmp_path):
    m, on_disk, preds, text = _eval(model_dir, records_dir, tmp_path, calibrate="fold2",
                                    shortcut_probe=False)
    cal = on_disk["calibration"]
    assert {"uncalibrated", "calibrated", "ece", "brier"} <= set(cal)
    t = on_disk["options"]["temperature"]
    assert t["fitted_on"] == "fold2" and t["n"] == 16
    assert np.allclose(preds["probability"], calibration.apply_temperature(
        preds["probability_model"], t["temperature"]), atol=1e-6)
    assert "## Calibration" in text and "after the temperature" in text
    with pytest.raises(UserError, match="evaluated split"):
        _eval(model_dir, records_dir, tmp_path, calibrate="validation")


def test_calibrate_run_uses_the_stored_temperature(model_dir, records_dir, tmp_path):
    _, on_disk, _, _ = _eval(model_dir, records_dir, tmp_path, split="fold2",
                             calibrate="run", shortcut_probe=False)
    assert on_disk["options"]["temperature"]["temperature"] == pytest.approx(
        stored_calibration.load(model_dir)["temperature"])


def test_neighbour_vote_through_evaluate(model_dir, records_dir, tmp_path):
    m, on_disk, preds, text = _eval(model_dir, records_dir, tmp_path, neighbour_vote=3,
                                    shortcut_probe=False)
    assert on_disk["options"]["neighbour_vote"] == 3 and on_disk["options"]["transductive"]
    assert os.path.basename(m["eval_dir"]) == "validation-vote3"  # not the plain report's
    assert "probability_voted" in preds
    assert "Neighbour vote (transductive)" in text


def test_options_refuse_an_ensemble(model_dir, records_dir, tmp_path):
    with pytest.raises(UserError, match="ensemble"):
        _eval(f"{model_dir},{model_dir}", records_dir, tmp_path, neighbour_vote=3)


class _Saved:
    """A stand-in predictor: only `.path` (a .keras file) is read by the options."""

    def __init__(self, path):
        self.path, self.image_size = path, 2


def _two_cluster_model(path):
    """A model whose penultimate features are its flattened pixels."""
    import tf_keras as keras
    inputs = keras.Input((2, 2, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    out = keras.layers.Dense(1, activation="sigmoid", name="logit")(x)
    keras.Model(inputs, out).save(path)
    return path


def test_neighbour_vote_flips_an_isolated_wrong_cell(tmp_path):
    path = _two_cluster_model(str(tmp_path / "m.keras"))
    a = np.zeros((6, 2, 2, 3), np.uint8)
    a[..., 0] = 200
    b = np.zeros((6, 2, 2, 3), np.uint8)
    b[..., 2] = 200
    images = np.concatenate([a, b])
    probs = np.array([0.9] * 5 + [0.2] + [0.1] * 6)   # cell 5 is wrong among ALL look-alikes
    frame = pd.DataFrame({"source_path": [f"c{i}" for i in range(12)], "patient_id": "1",
                          "probability": probs})
    shuffled = [3, 7, 0, 11, 5, 8, 1, 10, 2, 6, 9, 4]   # read back in another order
    out, notes, info = options.transform(
        frame, C.InferenceConfig(neighbour_vote=5), predictor=_Saved(path), tta="none",
        batch_size=4, read_images=lambda: (images[shuffled], [f"c{i}" for i in shuffled]))
    assert out["probability"][5] >= 0.5 > probs[5]
    assert ((out["probability"] >= 0.5) == np.array([True] * 6 + [False] * 6)).all()
    assert info["transductive"] and "transductive" in notes[0]


def test_temperature_lowers_ece_of_an_over_confident_model():
    rng = np.random.default_rng(0)

    def scores(n):   # right 70% of the time, always 99% sure
        y = rng.integers(0, 2, n)
        right = rng.random(n) < 0.7
        return pd.DataFrame({"source_path": [f"c{i}" for i in range(n)], "patient_id": "p",
                             "label": y, "probability": np.where(right == (y == 1), 0.99, 0.01)})
    evaluated = scores(400)
    out, _, info = options.transform(
        evaluated, C.InferenceConfig(calibrate="fold1"), predictor=None, tta="none",
        batch_size=8, read_images=None, split="validation", score_split=lambda s: scores(400))
    assert info["temperature"]["fitted_on"] == "fold1" and info["temperature"]["temperature"] > 1
    m = options.measurements(out, 0.5, calibrated=True)["calibration"]
    assert m["calibrated"]["ece"] < m["uncalibrated"]["ece"] - 0.1


def _features(area, labels):
    n = len(labels)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(100, 5, (n, 7)), columns=list(cells.shortcut.FEATURE_NAMES))
    frame["area"] = area
    return frame.assign(source_path=[f"c{i}" for i in range(n)], label=labels,
                        patient_id=[f"p{i % 4}" for i in range(n)])


@pytest.mark.parametrize("size_is_label", [True, False])
def test_probe_fits_training_cells_and_scores_evaluated_ones(monkeypatch, size_is_label):
    rng = np.random.default_rng(2)
    y_train, y_eval = rng.integers(0, 2, 400), rng.integers(0, 2, 200)
    train = _features(0.3 + 0.2 * y_train + rng.normal(0, 0.01, 400), y_train)
    eval_area = (0.3 + 0.2 * y_eval if size_is_label else rng.uniform(0.3, 0.5, 200))
    evaluated = _features(eval_area + rng.normal(0, 0.01, 200), y_eval)
    read = {"train": train, "validation": evaluated}
    monkeypatch.setattr(cells, "read_features", lambda r, m, sel, s, b: read[sel.split])
    run_config = {"data": {"train_folds": [0, 1]}}
    out = cells.probe("R", {}, manifest_lib.Selection("validation"), 8, 8,
                      [run_config], evaluated[["source_path", "label"]])
    assert out["num_train"] == 400 and out["num_examples"] == 200
    if size_is_label:
        assert out["roc_auc"] > 0.98 and out["weighted_f1"] > 0.95
    else:
        assert 0.35 < out["roc_auc"] < 0.65


def test_every_option_has_its_own_evaluation_folder():
    """An evaluation with options never replaces the plain one's report (or another's)."""
    name = evaluation.eval_name
    combos = [C.InferenceConfig(), C.InferenceConfig(adapt_bn="set"),
              C.InferenceConfig(adapt_bn="patient"), C.InferenceConfig(calibrate="run"),
              C.InferenceConfig(calibrate="fold1"), C.InferenceConfig(neighbour_vote=5),
              C.InferenceConfig(adapt_bn="set", calibrate="run", neighbour_vote=3)]
    names = [name("fold2", tta, "0.5", None, o) for o in combos for tta in ("none", "flips")]
    assert len(set(names)) == len(names), names
    assert names[0] == "fold2" and name("fold2", "flips", "youden", "fold1", combos[-1]) == \
        "fold2-flips-adapt_bn_set-calibrate_run-vote3-thr_youden_fold1"
    assert name("fold2", "none", "0.3", None) == "fold2-thr_0.3"  # not the 0.5 report's


def test_options_config_checks():
    with pytest.raises(UserError, match="adapt_bn"):
        C.check(evaluation.EvalConfig("m", "r", inference=C.InferenceConfig(adapt_bn="batch")))


def test_predict_applies_options_and_writes_patient_csv(model_dir, records_dir, tmp_path):
    from leukemia_tf.evaluation import predict as prediction
    plain, _ = prediction.predict(model_dir, [records_dir], split="fold0", batch_size=16)
    table, _ = prediction.predict(model_dir, [records_dir], split="fold0", batch_size=16,
                                  opts=C.InferenceConfig(calibrate="run"))
    assert list(table.columns) == list(prediction.COLUMNS)
    t = stored_calibration.load(model_dir)["temperature"]
    assert np.allclose(table["probability"],
                       calibration.apply_temperature(plain["probability"], t), atol=1e-6)
    out = str(tmp_path / "p.csv")
    path = prediction.write_patient_csv(table, 0.5, out)
    assert path == str(tmp_path / "p.patients.csv")
    per_patient = pd.read_csv(path, dtype={"patient": str})
    assert {"patient", "cells", "fraction_called_all", "mean_probability", "call"} <= set(
        per_patient)
    assert per_patient["cells"].sum() == len(table) == 16
    # the final test's numbered files carry no patient: no CSV, and a stale one goes
    test_table, _ = prediction.predict(model_dir, [records_dir], split="test", batch_size=16)
    assert prediction.write_patient_csv(test_table, 0.5, out) is None
    assert not os.path.exists(path)


def test_predict_cli_neighbour_vote(model_dir, records_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, line = run_main("predict", f"--model_dir={model_dir}", f"--input={records_dir}",
                          "--split=fold1", f"--output={out}", "--neighbour_vote=3",
                          "--adapt_bn=patient")
    assert (code, line) == (0, "")
    assert "per-patient calls" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 16 and (tmp_path / "p.patients.csv").exists()


def test_evaluate_flags_reach_the_config():
    from absl import flags
    from leukemia_tf.cli import evaluate as cli
    fv = flags.FlagValues()
    cli.define_flags(fv)
    fv(["x", "--model_dir=m", "--records_dir=r", "--adapt_bn=patient", "--calibrate=fold2",
        "--neighbour_vote=5", "--noshortcut_probe"])
    cfg = cli.config_from_flags(fv)
    assert (cfg.inference.adapt_bn, cfg.inference.calibrate, cfg.inference.neighbour_vote,
            cfg.shortcut_probe) == (
        "patient", "fold2", 5, False)
    assert options.needs_network(cfg.inference)


def test_calibration_json_belongs_to_the_run(tmp_path):
    from leukemia_tf.training import rundir
    md = tmp_path / "m"
    md.mkdir()
    (md / "calibration.json").write_text('{"temperature": 2.0}')
    cfg = C.Config(train=C.TrainConfig(model_dir=str(md), overwrite=True))
    assert "calibration.json" in rundir.inspect(cfg).clean
    # a selection split with one class fits nothing and leaves no stale temperature
    one_class = pd.DataFrame({"label": [1, 1, 1], "probability": [0.2, 0.7, 0.9]})
    assert stored_calibration.fit_and_store(str(md), one_class, "fold2") is None
    assert not (md / "calibration.json").exists()
    with pytest.raises(UserError, match="calibration.json: not found"):
        stored_calibration.load(str(md))
