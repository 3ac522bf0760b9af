"""Known-answer tests of leukemia_tf.metrics.classification; every expected value is worked out
by hand."""
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from leukemia_tf.metrics import classification as metrics
from tests.helpers import four_patients

# Set A: labels [1, 1, 1, 0, 0], probabilities [.9, .8, .3, .6, .1], threshold .5
#   predictions [1, 1, 0, 1, 0] -> tp = 2 (.9, .8), fn = 1 (.3), fp = 1 (.6), tn = 1 (.1)
LABELS_A = [1, 1, 1, 0, 0]
PROBS_A = [0.9, 0.8, 0.3, 0.6, 0.1]


def test_known_answers_set_a():
    m = metrics.classification_metrics(LABELS_A, PROBS_A, threshold=0.5)
    assert m["num_examples"] == 5
    assert m["threshold"] == 0.5
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]          # [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(3 / 5)                # (tp + tn) / N
    # ALL: precision tp/(tp+fp) = 2/3, recall tp/(tp+fn) = 2/3, F1 = 2/3
    assert m["precision_all"] == pytest.approx(2 / 3)
    assert m["recall_all"] == pytest.approx(2 / 3)
    assert m["f1_all"] == pytest.approx(2 / 3)
    assert m["support_all"] == 3
    # hem: precision tn/(tn+fn) = 1/2, recall tn/(tn+fp) = 1/2, F1 = 1/2
    assert m["precision_hem"] == pytest.approx(1 / 2)
    assert m["recall_hem"] == pytest.approx(1 / 2)
    assert m["f1_hem"] == pytest.approx(1 / 2)
    assert m["support_hem"] == 2
    # weighted F1 = (3 * 2/3 + 2 * 1/2) / 5 = 3/5; macro F1 = (2/3 + 1/2) / 2 = 7/12
    assert m["weighted_f1"] == pytest.approx(3 / 5)
    assert m["macro_f1"] == pytest.approx(7 / 12)
    # balanced accuracy = (recall_all + recall_hem) / 2 = (2/3 + 1/2) / 2 = 7/12
    assert m["balanced_accuracy"] == pytest.approx(7 / 12)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    # ROC AUC: positives {.9, .8, .3} vs negatives {.6, .1}: 6 pairs, only (.3 < .6)
    # is misordered -> 5/6.
    assert m["roc_auc"] == pytest.approx(5 / 6)
    # Average precision, ranking .9P .8P .6N .3P .1N: recall steps of 1/3 at precision
    # 1, 1 and 3/4 -> 1/3 + 1/3 + 1/4 = 11/12.
    assert m["pr_auc"] == pytest.approx(11 / 12)


def test_weighted_f1_differs_from_accuracy_known_answer():
    # labels [1,1,1,1,0,0], probs [.9,.8,.7,.6,.65,.2] at .5 -> preds [1,1,1,1,1,0]:
    # tp = 4, fn = 0, fp = 1, tn = 1. F1_all = 2*4/(8+1+0) = 8/9, F1_hem = 2/(2+0+1) = 2/3.
    # weighted = (4 * 8/9 + 2 * 2/3) / 6 = 22/27; accuracy = 5/6; macro = (8/9 + 2/3)/2 = 7/9
    labels = [1, 1, 1, 1, 0, 0]
    probs = [0.9, 0.8, 0.7, 0.6, 0.65, 0.2]
    m = metrics.classification_metrics(labels, probs)
    assert m["weighted_f1"] == pytest.approx(22 / 27)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["macro_f1"] == pytest.approx(7 / 9)
    assert m["recall_hem"] == pytest.approx(1 / 2)
    assert m["precision_hem"] == pytest.approx(1.0)


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.62, 0.9])
def test_weighted_f1_matches_sklearn(threshold):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    probs = np.clip(0.35 * labels + rng.random(200) * 0.65, 0, 1)
    m = metrics.classification_metrics(labels, probs, threshold=threshold)
    pred = (probs >= threshold).astype(int)
    assert m["weighted_f1"] == pytest.approx(f1_score(labels, pred, average="weighted"))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"))


def test_roc_auc_ties_count_half():
    # positives {.7, .4}, negatives {.7, .2}: (.7,.7) tie = .5, (.7,.2) = 1, (.4,.7) = 0,
    # (.4,.2) = 1 -> 2.5 / 4
    m = metrics.classification_metrics([1, 0, 1, 0], [0.7, 0.7, 0.4, 0.2])
    assert m["roc_auc"] == pytest.approx(0.625)


def test_probability_equal_to_threshold_is_all():
    m = metrics.classification_metrics([1, 0], [0.5, 0.4], threshold=0.5)
    assert m["confusion_matrix"] == [[1, 0], [0, 1]]
    assert m["accuracy"] == 1.0


def test_result_is_plain_json():
    m = metrics.classification_metrics(LABELS_A, PROBS_A)
    json.dumps(m, allow_nan=False)
    for key, value in m.items():
        assert value is None or type(value) in (int, float, list), (key, type(value))


def test_single_class_gives_none_not_crash():
    # Only ALL present; preds [1, 0, 1] -> 2/3 correct.
    m = metrics.classification_metrics([1, 1, 1], [0.9, 0.4, 0.8])
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["specificity"] is None and m["recall_hem"] is None
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["support_hem"] == 0
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]
    json.dumps(m, allow_nan=False)
    m = metrics.classification_metrics([0, 0], [0.1, 0.2])
    assert m["roc_auc"] is None and m["sensitivity"] is None
    assert m["specificity"] == 1.0 and m["weighted_f1"] == 1.0


@pytest.mark.parametrize("labels, probs, match", [
    ([], [], "empty"),
    ([0, 1], [0.5], "labels but"),
    ([0, 2], [0.1, 0.9], "labels must be 0"),
    ([0, 0.5], [0.1, 0.9], "labels must be 0"),
    ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
    ([0, 1], [-0.1, 0.9], r"\[0, 1\]"),
    ([0, 1], [float("nan"), 0.9], "NaN"),
    ([0, 1], ["a", 0.9], "numbers"),
])
def test_invalid_inputs_raise(labels, probs, match):
    with pytest.raises(ValueError, match=match):
        metrics.classification_metrics(labels, probs)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "x"])
def test_invalid_threshold_raises(threshold):
    with pytest.raises(ValueError, match="threshold"):
        metrics.classification_metrics([0, 1], [0.2, 0.8], threshold=threshold)


def test_choose_threshold_separable_set():
    # hem scores .1 .2 .3, ALL scores .7 .8 .9: every cut in (.3, .7] is perfect; the
    # chosen threshold is the midpoint between the best cut .7 and the next score .3.
    labels = [0, 0, 0, 1, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    assert metrics.choose_threshold(labels, probs, "youden") == pytest.approx(0.5)
    assert metrics.choose_threshold(labels, probs, "f1") == pytest.approx(0.5)
    assert metrics.choose_threshold(labels, probs, " F1 ") == pytest.approx(0.5)


def test_choose_threshold_youden_known_answer():
    # hem .1 .2 .3 .6, ALL .4 .7 .8 .9 (4 each). J = TPR - FPR at cut t (ALL if p >= t):
    #   .9: 1/4 - 0, .8: 2/4, .7: 3/4, .6: 3/4 - 1/4 = 2/4, .4: 1 - 1/4 = 3/4, .3: 1 - 2/4
    # Max 3/4 at .7 and .4; ties go to the highest cut .7 -> midpoint with .6 = .65.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert metrics.choose_threshold(labels, probs, "youden") == pytest.approx(0.65)


def test_choose_threshold_f1_known_answer():
    # hem .1 .2 .3 .6, ALL .4 .7 .8 .9 again. Weighted F1 (equal supports = macro):
    #   cut .7: tp 3 fn 1 fp 0 tn 4 -> F1_all 6/7, F1_hem 8/9 -> (6/7 + 8/9)/2 = 0.8730
    #   cut .4: tp 4 fn 0 fp 1 tn 3 -> F1_all 8/9, F1_hem 6/7 -> same 0.8730
    #   cut .6: tp 3 fn 1 fp 1 tn 3 -> 3/4 and 3/4 -> 0.75
    # Tie -> highest cut .7 -> midpoint with .6 = .65.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert metrics.choose_threshold(labels, probs, "f1") == pytest.approx(0.65)


def test_choose_threshold_imbalanced_known_answer():
    # 6 ALL at .6 .7 .8 .9 .95 .99, 2 hem at .1 and .65. Cut .7 misses one ALL (.6) and
    # the hem .65: tp 5 fn 1 fp 0 tn 2 -> F1_all 10/11, F1_hem 4/5 -> (6*10/11 + 2*4/5)/8
    # = 0.8818. Cut .6 catches all ALL: tp 6 fp 1 tn 1 -> F1_all 12/13, F1_hem 2/3 ->
    # (6*12/13 + 2*2/3)/8 = 0.8590; cut .65 (tp 5 fp 1) -> (6*5/6 + 2*1/2)/8 = 0.75.
    # Youden: cut .7 J = 5/6 - 0 = .833, cut .65 J = 5/6 - 1/2, cut .6 J = 1 - 1/2.
    # Both pick cut .7 -> midpoint with the next lower score .65.
    labels = [1, 1, 1, 1, 1, 1, 0, 0]
    probs = [0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.1, 0.65]
    assert metrics.choose_threshold(labels, probs, "f1") == pytest.approx((0.7 + 0.65) / 2)
    assert metrics.choose_threshold(labels, probs, "youden") == pytest.approx((0.7 + 0.65) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choose_threshold_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=150)
    probs = np.round(np.clip(0.3 * labels + rng.random(150) * 0.7, 0, 1), 2)   # with ties
    pos, neg = labels == 1, labels == 0

    def weighted_f1(t):
        return f1_score(labels, (probs >= t).astype(int), average="weighted")

    def youden(t):
        pred = probs >= t
        return pred[pos].mean() - pred[neg].mean()

    candidates = np.unique(probs)
    for method, score in (("f1", weighted_f1), ("youden", youden)):
        chosen = metrics.choose_threshold(labels, probs, method)
        assert 0.0 <= chosen <= 1.0
        assert score(chosen) == pytest.approx(max(score(t) for t in candidates)), method


def test_choose_threshold_numeric_and_errors():
    assert metrics.choose_threshold([0, 1], [0.2, 0.8], 0.3) == 0.3
    assert metrics.choose_threshold([0, 1], [0.2, 0.8], "0.42") == pytest.approx(0.42)
    assert metrics.choose_threshold(None, None, "1") == 1.0   # numbers need no data
    for bad in ("1.5", -0.2, "median", ""):
        with pytest.raises(ValueError, match="threshold method"):
            metrics.choose_threshold([0, 1], [0.2, 0.8], bad)
    with pytest.raises(ValueError, match="both classes"):
        metrics.choose_threshold([1, 1, 1], [0.2, 0.5, 0.8], "youden")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.choose_threshold([0, 1], [0.2, 3.0], "f1")


def test_per_patient_values_and_order():
    out = metrics.per_patient(four_patients())
    assert list(out.columns) == ["patient_id", "label", "images", "correct", "accuracy",
                                 "mean_probability"]
    # worst accuracy first; C and D tie at .5 and C has more images
    assert list(out["patient_id"]) == ["B", "C", "D", "A"]
    assert list(out["label"]) == [0, 0, 1, 1]
    assert list(out["images"]) == [2, 4, 2, 4]
    assert list(out["correct"]) == [0, 2, 1, 3]
    np.testing.assert_allclose(out["accuracy"], [0.0, 0.5, 0.5, 0.75])
    # means: B (.6+.8)/2, C (.1+.3+.7+.9)/4, D (.4+.6)/2, A (.9+.8+.7+.2)/4
    np.testing.assert_allclose(out["mean_probability"], [0.7, 0.5, 0.5, 0.65])


def test_per_patient_errors():
    df = four_patients()
    with pytest.raises(ValueError, match="columns"):
        metrics.per_patient(df.drop(columns=["prediction"]))
    with pytest.raises(ValueError, match="empty"):
        metrics.per_patient(df.iloc[:0])
    mixed = df.copy()
    mixed.loc[0, "label"] = 0
    with pytest.raises(ValueError, match="both labels.*A"):
        metrics.per_patient(mixed)
