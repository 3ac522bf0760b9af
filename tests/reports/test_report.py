"""Tests of leukemia_tf.evaluation.report: figures are real PNGs, reports say what was measured."""
import struct

import pandas as pd
import pytest

from leukemia_tf.crossval import report as crossval_report
from leukemia_tf.metrics import classification as metrics
from leukemia_tf.reports import charts as plots, report
from tests.helpers import check_links, four_patients

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
    out = plots.plot_training_curves(path, tmp_path / "plots" / "curves.png")
    assert out == str(tmp_path / "plots" / "curves.png")
    assert _png_size(out) == (1500, 400)        # 3 panels of 5 x 4 inches at 100 dpi


def test_kept_epoch_follows_the_run_and_its_monitor(tmp_path):
    history = pd.read_csv(_history(tmp_path, ["loss", "val_loss", "val_weighted_f1"]))
    epochs = plots._epochs(history)   # 1..4
    assert plots._best_index(history, epochs, None, "val_weighted_f1") == 2   # F1 0.75
    assert plots._best_index(history, epochs, None, "val_loss") == 2          # loss 0.60
    history.loc[3, "val_loss"] = 0.5
    assert plots._best_index(history, epochs, None, "val_loss") == 3
    assert plots._best_index(history, epochs, None, "last") == 3
    assert plots._best_index(history, epochs, None, "val_auc") is None   # no column here
    assert plots._best_index(history, epochs, 2, "val_auc") == 1   # the run's own word wins
    out = plots.plot_training_curves(tmp_path / "history.csv", tmp_path / "c.png",
                                     best_epoch=4, monitor="last")
    assert _png_size(out) == (1000, 400)


def test_training_curves_tolerates_missing_columns(tmp_path):
    # no train weighted_f1 (only val) and no accuracy at all -> loss + weighted F1 panels
    path = _history(tmp_path, ["loss", "val_loss", "val_weighted_f1"])
    out = plots.plot_training_curves(path, tmp_path / "curves.png")
    assert _png_size(out) == (1000, 400)


def test_training_curves_without_known_columns_raises(tmp_path):
    path = _history(tmp_path, ["lr"])
    with pytest.raises(ValueError, match="no loss"):
        plots.plot_training_curves(path, tmp_path / "curves.png")


def test_confusion_matrix_plot(tmp_path):
    out = plots.plot_confusion_matrix([[40, 10], [5, 95]], tmp_path / "cm.png")
    _png_size(out)
    with pytest.raises(ValueError, match="2x2"):
        plots.plot_confusion_matrix([[1, 2, 3]], tmp_path / "bad.png")


def test_roc_pr_plot(tmp_path):
    out = plots.plot_roc_pr([1, 1, 1, 0, 0], [0.9, 0.8, 0.3, 0.6, 0.1], tmp_path / "rp.png")
    assert _png_size(out) == (1000, 450)


def test_roc_pr_plot_single_class_does_not_crash(tmp_path):
    out = plots.plot_roc_pr([1, 1, 1], [0.9, 0.8, 0.3], tmp_path / "rp.png")
    _png_size(out)


def test_write_report(tmp_path):
    df = four_patients()
    m = metrics.classification_metrics(df["label"], df["probability"], threshold=0.5)
    eval_dir = tmp_path / "eval"
    figures = {
        "ROC and PR": plots.plot_roc_pr(df["label"], df["probability"],
                                        eval_dir / "plots" / "roc_pr.png"),
        "confusion matrix": plots.plot_confusion_matrix(m["confusion_matrix"],
                                                        eval_dir / "plots" / "cm.png"),
    }
    path = report.write_report(eval_dir, m, metrics.per_patient(df), figures,
                               title="Eval on fold 2", extra_md="## Run\nmodel: resnet_small")
    assert path == str(eval_dir / "report.md")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Eval on fold 2")
    # preds == labels for 6 of 12 images: tp 4 (A .9 .8 .7, D .6), fn 2, fp 4, tn 2
    assert m["confusion_matrix"] == [[2, 4], [2, 4]]
    assert f"| {m['weighted_f1']:.4f} |" in text
    assert "| accuracy | 0.5000 |" in text
    assert f"| ROC AUC (exact, sklearn) | {m['roc_auc']:.4f} |" in text
    assert "| images (N) | 12 |" in text
    assert "| threshold (ALL if p >= t) | 0.5000 |" in text
    assert "| hem (0) | 2 | 4 |" in text and "| ALL (1) | 2 | 4 |" in text
    # relative links to the plots
    assert "![ROC and PR](plots/roc_pr.png)" in text
    assert "![confusion matrix](plots/cm.png)" in text
    assert check_links(path) == ["plots/roc_pr.png", "plots/cm.png"]
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
    assert "| ROC AUC (exact, sklearn) | n/a |" in text
    assert "| specificity (recall hem) | n/a |" in text
    assert "No per-patient results" in text


def test_report_context_and_banner_come_first(tmp_path):
    m = metrics.classification_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6])
    context = [("model", "resnet_small (m|x)"), ("evaluated split", "fold0 (trained-on)")]
    path = report.write_report(tmp_path / "e", m, None, {}, title="T", context=context,
                               banners=["fold0 is a training fold"])
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines()
    assert lines[:3] == ["# T", "", "> **Warning:** fold0 is a training fold"]
    assert text.index("## Run context") < text.index("## Headline")
    assert "| model | resnet_small (m\\|x) |" in text      # a pipe cannot split the cell
    assert "| evaluated split | fold0 (trained-on) |" in text


def test_relative_link(tmp_path):
    assert report.relative_link(str(tmp_path / "e" / "a.png"), str(tmp_path / "e")) == "a.png"
    assert report.relative_link(str(tmp_path / "h.csv"), str(tmp_path / "e")) == "../h.csv"
    assert report.relative_link("ram://m/eval/v/x.png", "ram://m/eval/v") == "x.png"
    with pytest.raises(ValueError, match="not under"):
        report.relative_link("ram://other/x.png", "ram://m/eval/v")


def test_roc_marks_the_operating_point(tmp_path):
    y, p = [1, 1, 1, 0, 0], [0.9, 0.8, 0.3, 0.6, 0.1]
    op = plots.operating_point(y, p, 0.5)
    # predicted ALL: .9 .8 .6 -> TPR 2/3 (of .9 .8 .3), FPR 1/2 (of .6 .1), precision 2/3
    assert op == {"threshold": 0.5, "fpr": 0.5, "tpr": pytest.approx(2 / 3),
                  "precision": pytest.approx(2 / 3)}
    plain = open(plots.plot_roc_pr(y, p, tmp_path / "a.png"), "rb").read()
    marked = open(plots.plot_roc_pr(y, p, tmp_path / "b.png", threshold=0.5), "rb").read()
    assert marked != plain and _png_size(tmp_path / "b.png") == (1000, 450)


def test_training_curves_epochs_from_one(tmp_path):
    zero = pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5]})
    one = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5]})
    assert list(plots._epochs(zero)) == [1, 2] == list(plots._epochs(one))


def test_index_lists_every_evaluation(tmp_path):
    from leukemia_tf import io
    root = tmp_path / "eval"
    for name, role in (("validation", "selection"), ("fold2-flips", "held-out")):
        io.write_json(str(root / name / "metrics.json"),
                      {"split": name.split("-")[0], "split_role": role, "tta": "none",
                       "threshold": 0.5, "num_examples": 10, "weighted_f1": 0.8,
                       "roc_auc": 0.9, "date": "2026-01-01"})
        io.write_text(str(root / name / "report.md"), "# r\n")
    (root / "not_an_eval").mkdir()
    path = report.write_index(str(root))
    text = open(path, encoding="utf-8").read()
    assert check_links(path) == ["fold2-flips/report.md", "validation/report.md"]
    assert "| [validation](validation/report.md) | validation | **selection** |" in text
    assert "| [fold2-flips](fold2-flips/report.md) | fold2 | held-out |" in text
    assert "not_an_eval" not in text


def _comparison_rows():
    """Hand-built: two models, three held-out folds each, plus an all-folds run."""
    rows = []
    for model, f1s, val_f1, speed, params in (
            ("resnet_small", [0.80, 0.85, 0.90], 0.10, 900.0, 1234567),
            ("effnet_b0", [0.88, 0.86, 0.87], 0.99, 400.0, 4049564)):
        for fold, f1 in enumerate(f1s):
            rows.append({"model": model, "eval_split": f"fold{fold}", "fold": fold,
                         "train_folds": ",".join(str(k) for k in range(3) if k != fold),
                         "split_role": "selection", "weighted_f1": f1, "roc_auc": f1 + 0.05,
                         "accuracy": f1, "images_per_sec": speed, "params": params})
        rows.append({"model": model, "eval_split": "validation", "train_folds": "0,1,2",
                     "split_role": "selection", "weighted_f1": val_f1, "roc_auc": val_f1,
                     "accuracy": val_f1, "images_per_sec": speed, "params": params})
    return rows


def test_fold_statistics_exclude_the_validation_run():
    df = crossval_report.comparison_frame(_comparison_rows())
    stats = crossval_report.fold_statistics(df).set_index("model")
    # resnet_small: mean(.80, .85, .90) = .85, sample std sqrt((.05^2 + 0 + .05^2) / 2) = .05;
    # the validation row (.10) would pull the mean to .6625 if it were averaged in.
    assert stats.loc["resnet_small", "folds"] == 3
    assert stats.loc["resnet_small", "weighted_f1_mean"] == pytest.approx(0.85)
    assert stats.loc["resnet_small", "weighted_f1_std"] == pytest.approx(0.05)
    # effnet_b0: mean(.88, .86, .87) = .87, std sqrt((.01^2 + .01^2 + 0) / 2) = .01
    assert stats.loc["effnet_b0", "weighted_f1_mean"] == pytest.approx(0.87)
    assert stats.loc["effnet_b0", "weighted_f1_std"] == pytest.approx(0.01)
    assert stats.loc["effnet_b0", "roc_auc_mean"] == pytest.approx(0.92)


def test_write_comparison(tmp_path):
    paths = crossval_report.write_comparison(_comparison_rows(), tmp_path / "cv",
                                             warnings=["2 groups leak"])
    csv = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False)
    assert len(csv) == 8
    assert list(csv.columns[:6]) == ["model", "protocol", "eval_split", "fold", "train_folds",
                                     "split_role"]
    assert list(csv["fold"]) == ["0", "1", "2", ""] * 2           # integers, not 0.0
    assert list(csv["protocol"][:4]) == ["cv fold"] * 3 + ["all folds -> validation"]
    md = open(paths["md"], encoding="utf-8").read()
    summary = md[md.index("## Mean ± std"):md.index("## All folds")]
    assert ("| resnet_small | 3 | 0.8500 ± 0.0500 | 0.9000 ± 0.0500 | 0.8500 ± 0.0500 | "
            "900.0 | 1,234,567 |") in summary
    assert "| effnet_b0 | 3 | 0.8700 ± 0.0100 |" in summary
    separate = md[md.index("## All folds"):md.index("## Every run")]
    assert "| resnet_small | validation | 0,1,2 | selection | 0.1000 |" in separate
    assert "- 2 groups leak" in md
    assert check_links(paths["md"]) == ["comparison.png"]
    _png_size(paths["png"])


def test_comparison_single_fold_and_errors(tmp_path):
    rows = [{"model": "m", "eval_split": "fold2", "weighted_f1": 0.8},
            {"model": "m", "eval_split": "validation", "weighted_f1": 0.9}]
    df = crossval_report.comparison_frame(rows)
    assert list(df["fold"].astype(object).where(df["fold"].notna(), None)) == [2, None]
    md = crossval_report.comparison_markdown(df)
    assert "| m | 1 | 0.8000 (1 fold, no std) | n/a |" in md
    with pytest.raises(ValueError, match="no comparison rows"):
        crossval_report.write_comparison([], tmp_path)
    with pytest.raises(ValueError, match="'eval_split'"):
        crossval_report.write_comparison([{"model": "m", "weighted_f1": 0.5}], tmp_path)
