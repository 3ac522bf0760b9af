"""The split-role rule: held-out, selection, trained-on, unknown."""
import pytest

from leukemia_tf.metrics import split_roles as R


def test_roles():
    assert R.role("fold0", (0, 1), "validation") == R.TRAINED_ON
    assert R.role("validation", (0, 1), "validation") == R.SELECTION
    assert R.role("fold2", (0, 1), "validation") == R.HELD_OUT
    assert R.role("fold2", (0, 1), "fold2") == R.SELECTION
    assert R.role("validation", (0, 1), "fold2") == R.HELD_OUT
    assert R.role("fold1", None, None) == R.UNKNOWN
    assert R.split_fold("fold12") == 12 and R.split_fold("validation") is None


def test_an_ensemble_takes_the_worst_role():
    assert R.worst([R.HELD_OUT, R.SELECTION]) == R.SELECTION
    assert R.worst([R.SELECTION, R.TRAINED_ON, R.HELD_OUT]) == R.TRAINED_ON
    assert R.worst([R.HELD_OUT]) == R.HELD_OUT and R.worst([]) == R.UNKNOWN


def test_banners():
    assert R.banner("fold2", R.HELD_OUT) == ""
    assert "selection split" in R.banner("validation", R.SELECTION)
    assert "(train_folds 0, 1)" in R.banner("fold0", R.TRAINED_ON, (0, 1))
    assert "config.json was not found" in R.banner("fold0", R.UNKNOWN)


def test_biased_threshold_rule():
    assert R.threshold_biased("fold0", R.TRAINED_ON)
    assert R.threshold_biased("fold0", R.UNKNOWN)          # a fold may have been trained on
    assert not R.threshold_biased("validation", R.UNKNOWN)  # never a training split
    assert not R.threshold_biased("validation", R.SELECTION)
    R.check_threshold_split("fold2", R.HELD_OUT, allow_biased=False)
    R.check_threshold_split("fold0", R.TRAINED_ON, allow_biased=True)
    with pytest.raises(ValueError, match="refusing to choose the threshold on fold0: the "
                                         "model was trained on it"):
        R.check_threshold_split("fold0", R.TRAINED_ON, allow_biased=False)
    with pytest.raises(ValueError, match="config.json is missing"):
        R.check_threshold_split("fold1", R.UNKNOWN, allow_biased=False)
