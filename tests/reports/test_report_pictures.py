"""The report's pictures of cells and patients: confident mistakes and per-patient calls."""
import os

import numpy as np
import pandas as pd
import pytest

from leukemia_tf import config as C
from leukemia_tf.data import pipeline
from leukemia_tf.evaluation import evaluate as evaluation
from leukemia_tf.inference import cells
from leukemia_tf.metrics import patients
from leukemia_tf.reports import cell_gallery as pictures, charts as plots
from leukemia_tf.data import manifest as manifest_lib
from tests.helpers import check_links


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _scores():
    return pd.DataFrame({
        "source_path": [f"c{i}" for i in range(6)],
        "patient_id": ["A", "A", "B", "B", "C", "C"],
        "label": [1, 1, 0, 0, 1, 0],
        "probability": [0.05, 0.45, 0.99, 0.2, 0.9, 0.6]})


def test_confident_mistakes_most_confident_first():
    m = pictures.confident_mistakes(_scores(), 0.5)
    # wrong: c0 (ALL at .05: .45 off), c1 (ALL at .45: .05), c2 (hem at .99: .49),
    # c5 (hem at .6: .1); most confident first
    assert list(m.source_path) == ["c2", "c0", "c5", "c1"]
    assert list(pictures.confident_mistakes(_scores(), 0.5, limit=2).source_path) == \
        ["c2", "c0"]
    assert pictures.confident_mistakes(_scores().iloc[[3, 4]], 0.5).empty


def test_mistakes_grid_and_patient_chart(tmp_path):
    cells = [{"image": np.full((48, 48, 3), 40 * i, np.uint8), "patient_id": p, "label": y,
              "probability": q} for i, (p, y, q) in enumerate([("A", 1, 0.05), ("B", 0, 0.9),
                                                               ("C", 0, 0.7)])]
    w, h = _png_size(plots.plot_mistakes(cells, tmp_path / "m.png", columns=2))
    assert (w, h) == (380, 440)  # 2 columns of 1.9 in, 2 rows of 2.2 in, 100 dpi
    s = _scores()
    table = patients.patient_table(s.patient_id, s.probability, s.label)
    w, h = _png_size(plots.plot_patient_fractions(table, tmp_path / "p.png"))
    assert w >= 500 and h == 400
    with pytest.raises(ValueError, match="no cells"):
        plots.plot_mistakes([], tmp_path / "none.png")


def test_read_cells_gives_the_evaluated_pixels(real_records):
    manifest = manifest_lib.load(real_records)
    cfg = C.Config(data=C.DataConfig(records_dir=real_records, image_size=48))
    ds = pipeline.make_dataset(cfg.data, manifest_lib.parse_val_split("fold0"), training=False,
                               manifest=manifest, batch_size=8, with_metadata=True)
    batch = next(iter(ds))
    paths = [p.decode() for p in batch["source_path"].numpy()]
    got = cells.read_cells(real_records, "fold0", paths[2:4])
    assert sorted(got) == sorted(paths[2:4])
    for i in (2, 3):
        np.testing.assert_array_equal(got[paths[i]], batch["image"][i].numpy())


def test_report_shows_mistakes_and_patients(real_records, untrained_export, tmp_path):
    m = evaluation.run(evaluation.EvalConfig(untrained_export, real_records,
                                             split="fold0", out_dir=str(tmp_path)))
    out = m["eval_dir"]
    preds = pd.read_csv(os.path.join(out, "predictions.csv"))
    wrong = int((preds.prediction != preds.label).sum())
    assert wrong > 0  # 3 ALL and 4 hem cells: an untrained model gets some wrong
    linked = check_links(m["report"])
    assert {"mistakes.png", "patients.png"} <= set(linked)
    text = open(m["report"], encoding="utf-8").read()
    assert f"Most confidently misclassified cells ({wrong} of {wrong} mistakes" in text
    assert "Fraction of cells called ALL per patient" in text
    assert _png_size(os.path.join(out, "patients.png"))[0] >= 500


def _drawn(monkeypatch):
    """The figures the plots module saves, kept so a test can read their artists."""
    figures = []
    save = plots._save

    def keep(fig, out_png):
        figures.append(fig)
        return save(fig, out_png)
    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_patient_chart_labels_are_readable(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch)
    s = _scores()
    plots.plot_patient_fractions(patients.patient_table(s.patient_id, s.probability, s.label),
                                 tmp_path / "p.png")
    ax = figures[0].axes[0]
    ticks = ax.get_xticklabels()
    assert len(ticks) == 3 and all(t.get_text().endswith(" (2)") for t in ticks)
    assert all(t.get_rotation() == 90 and t.get_fontsize() >= 9 for t in ticks), \
        [t.get_fontsize() for t in ticks]
    assert ax.get_ylabel().startswith("fraction of cells called ALL")


def test_every_training_curve_panel_names_its_y_axis(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch)
    path = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.9, 0.6, 0.5], "val_loss": [0.8, 0.7, 0.6],
                  "accuracy": [0.6, 0.7, 0.8], "val_accuracy": [0.6, 0.7, 0.7],
                  "weighted_f1": [0.5, 0.7, 0.8], "val_weighted_f1": [0.6, 0.7, 0.7]}
                 ).to_csv(path, index=False)
    plots.plot_training_curves(path, tmp_path / "c.png", monitor="val_loss")
    axes = figures[0].axes
    assert [ax.get_ylabel() for ax in axes] == [
        "loss (lower is better)", "accuracy (higher is better)",
        "weighted F1 (higher is better)"]
    assert axes[0].get_title() == "loss (chooses the epoch)"
