"""The one leak rule: duplicate groups on both sides of a train / held-out boundary."""
from leukemia_tf.data import duplicates
from leukemia_tf.data.manifest import Selection

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


def test_one_warning_text():
    assert duplicates.leak_warnings(0, (0, 1), "validation") == []
    [one] = duplicates.leak_warnings(1, (2, 0), "fold1")
    assert one.startswith("1 group of byte-identical images is both in the training folds "
                          "[0, 2] and in fold1: ")
    [many] = duplicates.leak_warnings(3, (0,), "validation")
    assert many.startswith("3 groups of byte-identical images are both")
    assert many.endswith("so scores on validation are optimistic")
