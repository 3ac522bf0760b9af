"""The report's pictures of cells and patients: confident mistakes and per-patient calls."""
import os

import numpy as np
import pandas as pd
import pytest

from leukemia_tf import config as C
from leukemia_tf.data import pipeline
from leukemia_tf.evaluation import evaluate as evaluation, patients, pictures, plots
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
    manifest = pipeline.load(real_records)
    cfg = C.Config(data=C.DataConfig(records_dir=real_records, image_size=48))
    ds = pipeline.make_dataset(cfg, pipeline.parse_val_split("fold0"), False,
                               manifest=manifest, batch_size=8, with_metadata=True)
    batch = next(iter(ds))
    paths = [p.decode() for p in batch["source_path"].numpy()]
    got = pictures.read_cells(real_records, "fold0", paths[2:4])
    assert sorted(got) == sorted(paths[2:4])
    for i in (2, 3):
        np.testing.assert_array_equal(got[paths[i]], batch["image"][i].numpy())


def test_report_shows_mistakes_and_patients(real_records, untrained_export, tmp_path):
    m = evaluation.evaluate(evaluation.EvalConfig(untrained_export, real_records,
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
