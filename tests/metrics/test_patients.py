"""Patient table, disagreement ranking and the patient bootstrap."""
import numpy as np
import pandas as pd
import pytest

from leukemia_tf.data.cnmc import CnmcError
from leukemia_tf.metrics import patients


def _hand_set():
    # P1 (ALL): 3 of 4 cells called ALL. H2 (hem): 1 of 2 called, tie broken by mean 0.45.
    # P3 (ALL): 0 of 3 called -> wrong. H4: mixed labels (2 hem, 1 ALL), all called hem.
    ids = ["P1"] * 4 + ["H2"] * 2 + ["P3"] * 3 + ["H4"] * 3
    probs = [0.9, 0.8, 0.6, 0.2, 0.5, 0.4, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1]
    labels = [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1]
    return ids, probs, labels


@pytest.mark.parametrize("ids, known", [
    (["P1", "H2", " 30 "], True),
    (["P1", ""], False),                # the records' final-test split
    (["P1", np.nan], False),            # that empty field once pandas read it
    (["P1", "nan"], False),
    (["P1", "unknown"], False),
    (["P1", "-1"], False),
    (["P1", None], False),
    ([], False),
    (None, False),
])
def test_one_rule_for_a_known_patient(ids, known):
    assert patients.patient_ids_known(ids) is known
    if ids is not None:
        frame = pd.DataFrame({"patient_id": pd.Series(ids, dtype=object)})
        assert patients.patient_ids_known(frame) is known


def test_patient_table_known_answer():
    table = patients.patient_table(*_hand_set()).set_index("patient")
    assert list(table.index) == ["H2", "H4", "P1", "P3"]
    assert table["cells"].tolist() == [2, 3, 4, 3]
    assert table["fraction_called_all"].tolist() == [0.5, 0.0, 0.75, 0.0]
    assert table["mean_probability"].tolist() == pytest.approx([0.45, 0.1, 0.625, 0.2])
    assert table["call"].tolist() == [0, 0, 1, 0]
    assert table["truth"].tolist() == [0, 0, 1, 1]
    assert table["mixed_labels"].tolist() == [False, True, False, False]
    assert table["correct"].tolist() == [True, True, True, False]
    assert patients.patient_accuracy(table) == 0.75


def test_tie_goes_by_mean_probability_and_threshold():
    table = patients.patient_table(["A", "A"], [0.5, 0.45], threshold=0.5)
    assert table["call"].tolist() == [0]          # mean 0.475 < 0.5
    table = patients.patient_table(["A", "A"], [0.5, 0.45], threshold=0.46)
    assert table["fraction_called_all"].tolist() == [0.5]
    assert table["call"].tolist() == [1]          # mean 0.475 >= 0.46
    assert "truth" not in table.columns
    with pytest.raises(patients.PatientError, match="labels"):
        patients.patient_accuracy(table)


def test_disagreement_ranks_split_patients_first():
    ranked = patients.disagreement(patients.patient_table(*_hand_set()))
    assert ranked["patient"].tolist() == ["H2", "P1", "H4", "P3"]
    assert ranked["disagreement"].iloc[0] == pytest.approx(1.0)
    assert ranked["disagreement"].iloc[1] == pytest.approx(0.8112781, abs=1e-6)
    assert ranked["disagreement"].iloc[2:].tolist() == [0.0, 0.0]


def test_patient_id_from_name_reuses_cnmc_parser():
    assert patients.patient_id_from_name("a/b/UID_h3_2_1_hem.bmp") == "H3"
    assert patients.patient_id_from_name("UID_45_11_3_all.bmp") == "45"
    with pytest.raises(CnmcError):
        patients.patient_id_from_name("12.bmp")


def test_bad_input_is_a_user_error():
    with pytest.raises(patients.PatientError, match="logits"):
        patients.patient_table(["A"], [1.5])
    with pytest.raises(patients.PatientError, match="one length"):
        patients.patient_table(["A", "B"], [0.5])
    with pytest.raises(patients.PatientError, match="labels"):
        patients.patient_table(["A"], [0.5], labels=[2])


def _cohort(n_patients, seed):
    """Half ALL, half hem patients, 20 cells each; per-patient quality varies, so the
    metric varies between resamples."""
    rng = np.random.default_rng(seed)
    ids, labels, probs = [], [], []
    for i in range(n_patients):
        label = i % 2
        shift = rng.normal(0.0, 1.0)
        logits = (2 * label - 1) * 1.0 + shift + rng.normal(0, 1.5, 20)
        ids += [f"{'P' if label else 'H'}{i}"] * 20
        labels += [label] * 20
        probs += list(1 / (1 + np.exp(-logits)))
    return ids, np.array(labels), np.array(probs)


@pytest.mark.parametrize("metric", [patients.roc_auc, patients.weighted_f1])
def test_bootstrap_contains_estimate_and_narrows_with_more_patients(metric):
    small = patients.bootstrap_ci(*_cohort(8, 1), metric, n=300, seed=0)
    large = patients.bootstrap_ci(*_cohort(128, 1), metric, n=300, seed=0)
    for ci in (small, large):
        assert ci.low <= ci.estimate <= ci.high
        assert ci.resamples == 300
    assert small.patients == 8 and large.patients == 128
    assert (large.high - large.low) < 0.6 * (small.high - small.low)
    again = patients.bootstrap_ci(*_cohort(8, 1), metric, n=300, seed=0)
    assert again == small


def test_bootstrap_counts_undefined_resamples():
    ids, labels, probs = _cohort(8, 2)
    hem = labels == 0
    single = patients.bootstrap_ci(np.array(ids)[hem], labels[hem], probs[hem],
                                   patients.roc_auc, n=200)
    assert single.undefined == 200 and single.low is None and single.high is None
    assert single.estimate is None
    # One ALL and one hem patient: a resample is single-class with probability 1/2.
    two = np.isin(ids, ["P1", "H0"])
    pair = patients.bootstrap_ci(np.array(ids)[two], labels[two], probs[two],
                                 patients.roc_auc, n=400)
    assert 150 < pair.undefined < 250
    assert pair.low is not None and pair.as_dict()["undefined"] == pair.undefined
