"""The one leak rule: duplicate groups on both sides of a train / held-out boundary."""
from leukemia_tf.data import duplicates
from leukemia_tf.data.manifest import Selection
from leukemia_tf.evaluation import evaluate

MANIFEST = {"duplicate_groups": [
    {"splits": ["train"], "folds": [0, 2]}, {"splits": ["train"], "folds": [1, 1]},
    {"splits": ["train", "validation"], "folds": [1]}]}


def test_leaked_groups_by_name():
    assert duplicates.leaked_groups(MANIFEST, (0, 1), "fold2") == 1
    assert duplicates.leaked_groups(MANIFEST, (0, 2), "fold1") == 0
    assert duplicates.leaked_groups(MANIFEST, (1,), "validation") == 1
    assert duplicates.leaked_groups(MANIFEST, (0, 2), "validation") == 0
    assert duplicates.leaked_groups(MANIFEST, (0, 1), "cv") == 0   # grouped CV: no fold side
    assert duplicates.leaked_groups({}, (0, 1), "fold2") == 0


def test_leaked_groups_of_a_selection_spanning_several_folds():
    assert duplicates.leaked_groups(MANIFEST, (0,), Selection("train", (1, 2))) == 1
    assert duplicates.leaked_groups(MANIFEST, (1,), Selection("train", (0, 2))) == 0
    assert duplicates.leaked_groups(MANIFEST, (0, 1), Selection("train", (1, 2))) == 3
    assert duplicates.leaked_groups(MANIFEST, (1,), Selection("validation")) == 1
    # the name and the one-fold selection are the same question
    assert duplicates.leaked_groups(MANIFEST, (0, 1), Selection("train", (2,))) == \
        duplicates.leaked_groups(MANIFEST, (0, 1), "fold2")


def test_evaluation_warns_with_the_same_count():
    warned = evaluate.leakage_warnings(MANIFEST, (0,), Selection("train", (1, 2)))
    assert len(warned) == 1 and warned[0].startswith("1 groups of byte-identical images")
    assert "train-fold12" in warned[0]
    assert evaluate.leakage_warnings(MANIFEST, None, Selection("validation")) == []
    assert evaluate.leakage_warnings(MANIFEST, (0, 2), Selection("validation")) == []
