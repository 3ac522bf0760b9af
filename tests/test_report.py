"""Tests of leukemia_tf.report: figures are real PNGs, reports say what was measured."""
import struct

import pandas as pd
import pytest

from leukemia_tf import metrics, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) of a PNG, after checking it is one and is not trivially small."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, (path, len(data))
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _history(tmp_path, columns):
    rows = {"epoch": [0, 1, 2, 3]}
    values = {"loss": [0.9, 0.6, 0.5, 0.45], "val_loss": [0.8, 0.65, 0.6, 0.62],
              "accuracy": [0.6, 0.75, 0.8, 0.82], "val_accuracy": [0.62, 0.7, 0.74, 0.73],
              "weighted_f1": [0.55, 0.72, 0.79, 0.81], "val_weighted_f1": [0.6, 0.7, 0.75, 0.72],
              "lr": [1e-3] * 4}
    rows.update({c: values[c] for c in columns})
    path = tmp_path / "history.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_training_curves_three_panels(tmp_path):
    path = _history(tmp_path, ["loss", "val_loss", "accuracy", "val_accuracy", "weighted_f1",
                               "val_weighted_f1", "lr"])
    out = report.plot_training_curves(path, tmp_path / "plots" / "curves.png")
    assert out == str(tmp_path / "plots" / "curves.png")
    assert _png_size(out) == (1500, 400)        # 3 panels of 5 x 4 inches at 100 dpi


def test_training_curves_tolerates_missing_columns(tmp_path):
    # no train weighted_f1 (only val) and no accuracy at all -> loss + weighted F1 panels
    path = _history(tmp_path, ["loss", "val_loss", "val_weighted_f1"])
    out = report.plot_training_curves(path, tmp_path / "curves.png")
    assert _png_size(out) == (1000, 400)


def test_training_curves_without_known_columns_raises(tmp_path):
    path = _history(tmp_path, ["lr"])
    with pytest.raises(ValueError, match="no loss"):
        report.plot_training_curves(path, tmp_path / "curves.png")


def test_confusion_matrix_plot(tmp_path):
    out = report.plot_confusion_matrix([[40, 10], [5, 95]], tmp_path / "cm.png")
    _png_size(out)
    with pytest.raises(ValueError, match="2x2"):
        report.plot_confusion_matrix([[1, 2, 3]], tmp_path / "bad.png")


def test_roc_pr_plot(tmp_path):
    out = report.plot_roc_pr([1, 1, 1, 0, 0], [0.9, 0.8, 0.3, 0.6, 0.1], tmp_path / "rp.png")
    assert _png_size(out) == (1000, 450)


def test_roc_pr_plot_single_class_does_not_crash(tmp_path):
    out = report.plot_roc_pr([1, 1, 1], [0.9, 0.8, 0.3], tmp_path / "rp.png")
    _png_size(out)


def _predictions():
    # patient A (ALL) 3/4 correct, B (hem) 0/2, C (hem) 2/4, D (ALL) 1/2
    rows = [
        ("A", 1, 0.9, 1), ("A", 1, 0.8, 1), ("A", 1, 0.7, 1), ("A", 1, 0.2, 0),
        ("B", 0, 0.6, 1), ("B", 0, 0.8, 1),
        ("C", 0, 0.1, 0), ("C", 0, 0.3, 0), ("C", 0, 0.7, 1), ("C", 0, 0.9, 1),
        ("D", 1, 0.4, 0), ("D", 1, 0.6, 1),
    ]
    return pd.DataFrame(rows, columns=["patient_id", "label", "probability", "prediction"])


def test_write_report(tmp_path):
    df = _predictions()
    m = metrics.classification_metrics(df["label"], df["probability"], threshold=0.5)
    eval_dir = tmp_path / "eval"
    plots = {
        "ROC and PR": report.plot_roc_pr(df["label"], df["probability"],
                                         eval_dir / "plots" / "roc_pr.png"),
        "confusion matrix": report.plot_confusion_matrix(m["confusion_matrix"],
                                                         eval_dir / "plots" / "cm.png"),
    }
    path = report.write_report(eval_dir, m, metrics.per_patient(df), plots,
                               title="Eval on fold 2", extra_md="## Run\nmodel: resnet_small")
    assert path == str(eval_dir / "report.md")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Eval on fold 2")
    # preds == labels for 6 of 12 images: tp 4 (A .9 .8 .7, D .6), fn 2, fp 4, tn 2
    assert m["confusion_matrix"] == [[2, 4], [2, 4]]
    assert f"| {m['weighted_f1']:.4f} |" in text
    assert "| accuracy | 0.5000 |" in text
    assert f"| ROC AUC | {m['roc_auc']:.4f} |" in text
    assert "| images (N) | 12 |" in text
    assert "| threshold (ALL if p >= t) | 0.5000 |" in text
    assert "| hem (0) | 2 | 4 |" in text and "| ALL (1) | 2 | 4 |" in text
    # relative links to the plots
    assert "![ROC and PR](plots/roc_pr.png)" in text
    assert "![confusion matrix](plots/cm.png)" in text
    # per patient: worst (B, 0%) first, flagged; A (75%) last and not flagged
    table = text[text.index("Worst first"):]
    positions = [table.index(f"| {p} |") for p in ("B", "C", "D", "A")]
    assert positions == sorted(positions)
    assert "| B | hem | 2 | 0 | 0.0000 | 0.7000 | **LOW** |" in text
    assert "| A | ALL | 4 | 3 | 0.7500 | 0.6500 |  |" in text
    # spread per class: hem 0% (B) - 50% (C), ALL 50% (D) - 75% (A)
    assert "0.0% - 50.0%" in text and "50.0% - 75.0%" in text
    assert "1 below 50% accuracy" in text
    assert text.rstrip().endswith("model: resnet_small")


def test_write_report_single_class_and_no_patients(tmp_path):
    m = metrics.classification_metrics([1, 1, 1], [0.9, 0.8, 0.3])
    path = report.write_report(tmp_path, m, None, {}, title="ALL only")
    text = open(path, encoding="utf-8").read()
    assert "| ROC AUC | n/a |" in text
    assert "| specificity (recall hem) | n/a |" in text
    assert "No per-patient results" in text


def _comparison_rows():
    rows = []
    for model, f1s, speed, params in (("resnet_small", [0.80, 0.85, 0.90], 900.0, 1234567),
                                      ("effnet_b0", [0.88, 0.86, 0.87], 400.0, 4049564)):
        for fold, f1 in enumerate(f1s):
            rows.append({"model": model, "fold": fold, "weighted_f1": f1,
                         "roc_auc": f1 + 0.05, "images_per_sec": speed, "params": params,
                         "epochs": 5})
    return rows


def test_write_comparison(tmp_path):
    paths = report.write_comparison(_comparison_rows(), tmp_path / "cv")
    assert set(paths) == {"csv", "md", "png"}
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == 6
    assert list(csv.columns) == ["model", "fold", "weighted_f1", "roc_auc", "images_per_sec",
                                 "params", "epochs"]
    assert list(csv["model"]) == ["resnet_small"] * 3 + ["effnet_b0"] * 3
    md = open(paths["md"], encoding="utf-8").read()
    # resnet_small: mean(.80, .85, .90) = .85, sample std = sqrt((.05^2 + 0 + .05^2) / 2) = .05
    assert "| resnet_small | 3 | 0.8500 ± 0.0500 | 0.9000 ± 0.0500 | 900.0 | 1,234,567 |" in md
    # effnet_b0: mean(.88, .86, .87) = .87, std = sqrt((.01^2 + .01^2 + 0) / 2) = .01
    assert "| effnet_b0 | 3 | 0.8700 ± 0.0100 |" in md
    assert "| resnet_small | 1 | 0.8500 | 0.9000 | 900.0 | 1,234,567 |" in md
    assert "![weighted F1 per model and fold](comparison.png)" in md
    _png_size(paths["png"])


def test_write_comparison_eval_set_alias_and_missing_values(tmp_path):
    rows = [{"model": "m", "eval_set": "validation", "weighted_f1": 0.9},
            {"model": "m", "eval_set": "fold2", "weighted_f1": 0.8, "roc_auc": 0.95}]
    paths = report.write_comparison(rows, tmp_path)
    csv = pd.read_csv(paths["csv"])
    assert list(csv["fold"]) == ["validation", "fold2"]
    md = open(paths["md"], encoding="utf-8").read()
    assert "| m | validation | 0.9000 | n/a | n/a | n/a |" in md
    assert "| m | 2 | 0.8500 ± 0.0707 | 0.9500 | n/a | n/a |" in md
    _png_size(paths["png"])
    with pytest.raises(ValueError, match="no comparison rows"):
        report.write_comparison([], tmp_path)
    with pytest.raises(ValueError, match="'model'"):
        report.write_comparison([{"fold": 0, "weighted_f1": 0.5}], tmp_path)
