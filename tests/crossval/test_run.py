"""Cross-validation: the plan of runs, their order and progress lines, the comparison."""
import os

import pandas as pd
import pytest

from leukemia_tf import training
from leukemia_tf.crossval import run as crossval
from tests.helpers import check_links, tiny_config


def test_crossval_two_folds_and_validation(records_dir, tmp_path, monkeypatch):
    # training.run is replaced by a stand-in that records its configs and returns a known
    # summary per run (training itself is tested in test_train.py and by `model_dir`).
    seen = []
    f1 = {"fold0": 0.7, "fold1": 0.9, "validation": 0.2}

    def fake_run(cfg):
        seen.append((cfg.data.train_folds, cfg.data.val_split, cfg.train.model_dir))
        return {"validation": {"weighted_f1": f1[cfg.data.val_split], "roc_auc": 0.5,
                               "accuracy": 0.6}, "params": 1234, "best_epoch": 1,
                "train_images_per_sec": 10.0}
    monkeypatch.setattr(training, "run", fake_run)
    base = tiny_config(records_dir, "", epochs=1, steps_per_epoch=2)
    lines = []
    cv = str(tmp_path / "cv")
    result = crossval.run(base, ["resnet_small"], cv, folds=(0, 1), on_progress=lines.append)
    assert seen == [((1,), "fold0", os.path.join(cv, "resnet_small", "fold0")),
                    ((0,), "fold1", os.path.join(cv, "resnet_small", "fold1")),
                    ((0, 1), "validation", os.path.join(cv, "resnet_small", "validation"))]
    assert [x for x in lines if not x.startswith("run 1/3 done")][:2] == [
        "run 1/3: resnet_small fold 0 (train folds 1)",
        "run 2/3: resnet_small fold 1 (train folds 0)"]
    assert "run 3/3: resnet_small all folds -> validation (train folds 0,1)" in lines
    assert "run 2/3 done in 0 s: weighted F1 0.9000 on fold1" in lines
    assert result["summary"].startswith("crossval: 3 runs in ")
    assert result["summary"].endswith("resnet_small 0.8000 ± 0.1414 (2 folds)")
    table = pd.read_csv(result["csv"], dtype=str, keep_default_na=False)
    assert list(table.eval_split) == ["fold0", "fold1", "validation"]
    assert list(table.fold) == ["0", "1", ""] and list(table.train_folds) == ["1", "0", "0,1"]
    assert list(table.split_role) == ["selection"] * 3 and list(table.params) == ["1234"] * 3
    stats = result["stats"].iloc[0]
    assert stats["folds"] == 2 and stats["weighted_f1_mean"] == pytest.approx(0.8)
    md = open(result["md"], encoding="utf-8").read()
    assert "| resnet_small | 2 | 0.8000 ± 0.1414 |" in md    # 0.2 (validation) left out
    assert os.path.getsize(result["png"]) > 1000
    check_links(result["md"])


def test_crossval_plan():
    assert crossval.plan((0, 1, 2))[-1] == {"train_folds": (0, 1, 2), "val_split": "validation",
                                            "name": "validation", "fold": None, "data": {},
                                            "protocol": "all folds -> validation"}
    assert crossval.plan((0, 1, 2))[0]["fold"] == 0


@pytest.mark.slow
def test_pooled_study_end_to_end_and_compared(records_dir, tmp_path):
    # The study protocol at toy size, really trained: fold 1's patients regrouped into 2
    # folds, each trained once per seed, its epochs scored on fold 0 (other patients).
    from leukemia_tf.crossval import compare
    base = tiny_config(records_dir, "", epochs=2, steps_per_epoch=1)
    out = str(tmp_path / "study")
    result = crossval.run(base, ["seed_cnn"], out, folds=(1,), cv="pooled", num_folds=2,
                          seeds=(0, 1), selection_split="fold0", on_progress=lambda _: None)
    fold1 = 16   # fold 1 of records_dir: 8 ALL + 8 hem cells
    oof = pd.read_csv(result["oof"], dtype={"patient_id": str})
    oof = oof[oof["variant"] == "plain"]
    assert len(oof) == fold1 and oof["source_path"].is_unique   # each cell held out once
    assert {"p0", "p1", "t0", "t1"} <= set(oof.columns)
    assert not oof[["p0", "p1"]].isna().any().any()
    table = pd.read_csv(result["csv"])
    assert {"plain", "epoch:last", "epoch:val_auc", "thr:prior"} <= set(table["variant"])
    assert (table["seeds"] == 2).all() and (table["cells"] == fold1).all()
    scores = pd.read_csv(os.path.join(out, "seed_cnn", "s1", "cv0", "epoch_scores.csv"))
    assert sorted(scores["epoch"].unique()) == [1, 2]
    assert set(scores["set"]) == {"heldout", "selection"}
    # Compared with itself, every paired difference of the plain variant is exactly 0;
    # the ensemble of a recipe with itself is that recipe.
    a, b = compare.Study(out, "a"), compare.Study(out, "b")
    assert sorted(a.by_seed) == [0, 1]
    rows, seeds = compare.compare([a, b], ("plain", "epoch:last"), pairs=[("a", "b")])
    plain_b = next(r for r in rows if r["recipe"] == "b" and r["variant"] == "plain")
    assert seeds == [0, 1] and plain_b["d_weighted_f1"] == 0.0 == plain_b["d_roc_auc"]
    ens = rows[-1]
    assert ens["recipe"] == "a + b" and ens["weighted_f1"] == pytest.approx(rows[0]["weighted_f1"])
    paths = compare.write(str(tmp_path / "cmp"), rows, seeds)
    assert "| a + b | ensemble (mean) |" in open(paths["md"], encoding="utf-8").read()
    # A seed with an unfinished fold is left out of the comparison.
    os.remove(os.path.join(out, "seed_cnn", "s1", "cv1", "study_run.json"))
    assert sorted(compare.Study(out).by_seed) == [0]


def test_compare_studies_bad_folder_is_one_line(tmp_path):
    import subprocess
    import sys
    repo = os.path.join(os.path.dirname(__file__), "..", "..")
    r = subprocess.run([sys.executable, "-m", "leukemia_tf.cli.compare", f"--studies={tmp_path}",
                        f"--out_dir={tmp_path}/o"], capture_output=True, text=True, cwd=repo)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: --studies: {tmp_path}: no "
                                                        "cv_assignment.csv")
    assert "tensorflow" not in r.stderr.lower()
