"""Pooled out-of-fold measures (crossval.pooled): choosing an epoch after the fact,
thresholds, pooling folds per seed, the seed mean's patient-bootstrap interval and the
paired difference of two recipes. Pure pandas: the runs are built by hand here; a real
study run end to end is in test_run.py."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from leukemia_tf.crossval import pooled


def selection(values):
    """Per-epoch selection scores: epoch e gives probabilities values[e-1] to 4 cells
    with labels 1, 1, 0, 0."""
    rows = []
    for e, probs in enumerate(values, 1):
        for i, (y, p) in enumerate(zip((1, 1, 0, 0), probs)):
            rows.append({"epoch": e, "label": y, "probability": p, "source_path": f"s{i}"})
    return pd.DataFrame(rows)


def test_choose_epoch_by_each_rule():
    sel = selection([(0.6, 0.4, 0.5, 0.45),     # AUC 0.5, F1 at 0.5 poor
                     (0.9, 0.5, 0.4, 0.6),      # AUC 0.75, loss lowest
                     (0.55, 0.52, 0.49, 0.48),  # AUC 1.0, F1 1.0, loss high
                     (0.9, 0.05, 0.1, 0.3)])    # AUC 0.5, F1 0.73, loss highest
    assert pooled.choose_epoch(sel, "last") == 4
    assert pooled.choose_epoch(sel, "val_auc") == 3
    assert pooled.choose_epoch(sel, "val_weighted_f1") == 3
    losses = [pooled.log_loss(g["label"], g["probability"]) for _, g in sel.groupby("epoch")]
    assert pooled.choose_epoch(sel, "val_loss") == int(np.argmin(losses)) + 1 == 2
    with pytest.raises(ValueError, match="rule must be one of"):
        pooled.choose_epoch(sel, "val_accuracy")


def test_thresholds_prior_youden_and_platt():
    sel = selection([(0.9, 0.7, 0.6, 0.2)])
    run = {"prior": 0.68, "selection_at_best": sel}
    assert pooled.threshold("prior", run) == pytest.approx(0.32)
    youden = pooled.threshold("youden", run)
    assert 0.6 < youden <= 0.7   # separates the two ALL cells from the two hem cells
    # A recalibration of scores that are all too high moves the cut above 0.5.
    y = np.array([1] * 50 + [0] * 50)
    p = np.r_[np.linspace(0.7, 0.99, 50), np.linspace(0.5, 0.8, 50)]
    assert pooled.platt_threshold(y, p) > 0.6
    assert pooled.platt_threshold([1, 1], [0.2, 0.3]) == 0.5   # one class: no fit


def fake_run(fold, seed, cells, rng):
    """A finished run as read_run returns it: 2 epochs of held-out and selection scores,
    variants of the exported model."""
    rows = []
    for e in (1, 2):
        for path, pid, y in cells:
            p = float(np.clip(0.5 + (0.3 if y else -0.3) * e / 2 + rng.normal(0, 0.2), 0, 1))
            rows.append({"epoch": e, "set": "heldout", "source_path": path,
                         "patient_id": pid, "label": y, "probability": p})
        for i, y in enumerate((1, 0, 1, 0)):
            rows.append({"epoch": e, "set": "selection", "source_path": f"sel{i}",
                         "patient_id": f"S{i}", "label": y, "probability": 0.4 + 0.2 * y})
    scores = pd.DataFrame(rows)
    last = scores[(scores["set"] == "heldout") & (scores["epoch"] == 2)]
    variants = last[["source_path", "patient_id", "label"]].assign(
        plain=last["probability"].to_numpy(), dihedral8=last["probability"].to_numpy() * 0.9)
    sel = scores[(scores["set"] == "selection") & (scores["epoch"] == 2)]
    return {"dir": f"s{seed}/cv{fold}", "scores": scores, "variants": variants,
            "best_epoch": 2, "prior": 0.6, "selection_at_best": sel, "minutes": 1.0,
            "load": [1.0, 1.0, 1.0]}


def study(seeds=(0, 1, 2)):
    """6 patients (4 ALL, 2 hem), 5 cells each, in 3 folds of two patients."""
    patients = [("A1", 1), ("H1", 0), ("A2", 1), ("A3", 1), ("H2", 0), ("A4", 1)]
    folds = [patients[0:2], patients[2:4], patients[4:6]]
    by_seed = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        by_seed[seed] = [fake_run(k, seed, [(f"{p}/{i}.bmp", p, y) for p, y in fold
                                            for i in range(5)], rng)
                         for k, fold in enumerate(folds)]
    return by_seed


def test_pooled_scores_every_cell_once_per_seed_and_matches_sklearn():
    by_seed = study()
    frame = pooled.pooled(by_seed, "plain")
    assert len(frame) == 30 and frame["source_path"].is_unique
    assert {"p0", "p1", "p2", "t0", "t1", "t2"} <= set(frame.columns)
    m = pooled.seed_measures(frame, 1)
    y, p = frame["label"], frame["p1"]
    assert m["weighted_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="weighted"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["patients"] == 6 and 0 <= m["patients_right"] <= 6
    assert set(m["per_patient"]) == {"A1", "A2", "A3", "A4", "H1", "H2"}
    # epoch:last is the second epoch's held-out scores, which are the plain variant here.
    last = pooled.pooled(by_seed, "epoch:last")
    assert np.allclose(last["p2"], frame["p2"])
    assert pooled.variant_names([r for rs in by_seed.values() for r in rs]) == [
        "epoch:last", "epoch:val_auc", "epoch:val_loss", "epoch:val_weighted_f1", "plain",
        "dihedral8", "thr:prior", "thr:youden", "thr:platt"]
    assert pooled.pooled(by_seed, "thr:prior")["t0"].tolist() == pytest.approx([0.4] * 30)


def test_pooled_refuses_a_cell_held_out_twice_or_seeds_that_differ():
    by_seed = study(seeds=(0,))
    by_seed[0].append(by_seed[0][0])
    with pytest.raises(ValueError, match="held out by two folds"):
        pooled.pooled(by_seed, "plain")
    by_seed = study(seeds=(0, 1))
    by_seed[1] = by_seed[1][:2]
    with pytest.raises(ValueError, match="held out other cells"):
        pooled.pooled(by_seed, "plain")


def test_summary_spread_and_patient_interval():
    frame = pooled.pooled(study(), "plain")
    s = pooled.summarize(frame, [0, 1, 2])
    values = [pooled.seed_measures(frame, k)["weighted_f1"] for k in (0, 1, 2)]
    assert s["weighted_f1"] == pytest.approx(np.mean(values))
    assert s["weighted_f1_sd"] == pytest.approx(np.std(values, ddof=1))
    assert s["weighted_f1_min"] == min(values) and s["weighted_f1_max"] == max(values)
    assert s["weighted_f1_low"] <= s["weighted_f1"] <= s["weighted_f1_high"]
    assert s["roc_auc_low"] < s["roc_auc_high"]


def test_paired_difference_of_a_recipe_with_itself_and_with_a_worse_one():
    by_seed = study()
    a = pooled.pooled(by_seed, "plain")
    diff, low, high = pooled.paired_difference(a, a, [0, 1, 2], n=200)
    assert diff == 0 and low == 0 and high == 0
    worse = a.copy()
    for s in (0, 1, 2):   # flip every call of the hem patient H1
        worse.loc[worse["patient_id"] == "H1", f"p{s}"] = 0.99
    diff, low, high = pooled.paired_difference(a, worse, [0, 1, 2], "weighted_f1", n=200)
    assert diff > 0 and low <= diff <= high
    with pytest.raises(ValueError, match="held out different cells"):
        pooled.paired_difference(a, a.iloc[1:], [0, 1, 2])
