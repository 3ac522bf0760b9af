"""Prediction and the converter's summary on a copy of C-NMC without testing_data/."""
import pandas as pd
import pytest

from leukemia_tf.evaluation import predict as prediction
from leukemia_tf.data import manifest as manifest_lib
from tests.helpers import run_main


def test_summary_reads_per_split_and_flags_empty_and_one_image(real_records):
    text = manifest_lib.summarize(manifest_lib.load(real_records))
    assert "{" not in text, text  # no Python dicts
    lines = text.splitlines()
    assert "train: fold 0: 3 ALL + 4 hem" in lines
    assert any(line.startswith("test: EMPTY (no images under testing_data/)")
               for line in lines), text
    assert any(line.startswith("validation: only 1 image") for line in lines), text


def test_missing_test_split_is_named_before_the_model_loads(real_records, tmp_path):
    # No model at all: the split check comes first, so a missing model is not reached.
    with pytest.raises(ValueError) as e:
        prediction.predict(str(tmp_path / "no_model"), [real_records])
    message = str(e.value)
    assert "has no test images" in message and "testing_data/" in message
    assert "splits with images: validation, fold0" in message
    assert "['test'" not in message  # the empty split is not listed as present


def test_unknown_split_name_is_refused(real_records, tmp_path):
    with pytest.raises(ValueError, match="test, validation or fold<k>, not 'valid'"):
        prediction.predict(str(tmp_path / "no_model"), [real_records], split="valid")


def test_named_split_is_predicted(real_records, untrained_export):
    table, errors = prediction.predict(untrained_export, [real_records], split="validation")
    assert errors == [] and list(table.file) == ["1105.bmp"]
    table, _ = prediction.predict(untrained_export, [real_records], split="fold0")
    assert len(table) == 7 and table.probability.between(0, 1).all()


def test_readme_predict_commands_on_a_tree_without_testing_data(real_records,
                                                                untrained_export, tmp_path):
    """The README's predict command as a user types it: the default split fails with one
    line that says what to do; the command it suggests works."""
    out = tmp_path / "p.csv"
    flags = (f"--model_dir={untrained_export}", f"--input={real_records}", f"--output={out}")
    code, line = run_main("predict", *flags)
    assert code == 1 and line.startswith("error:") and "\n" not in line
    assert "no test images" in line and "--split=validation" in line, line
    assert run_main("predict", *flags, "--split=validation") == (0, "")
    assert list(pd.read_csv(out).file) == ["1105.bmp"]
