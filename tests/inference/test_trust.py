"""What evaluate and predict load: model.keras in safe mode; a SavedModel (which runs its
own graph) only when trusted; broken model files and outputs as one line naming them."""
import json
import os

import numpy as np
import pandas as pd
import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.errors import UserError
from leukemia_tf.inference import ensemble
from leukemia_tf.evaluation import predict as prediction
from leukemia_tf.inference import loading
from tests.helpers import run_main


@pytest.fixture
def model_dir(untrained_32, tmp_path):
    import shutil
    md = tmp_path / "m"
    shutil.copytree(untrained_32, md)
    return md


def _images(n=2):
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_saved_model_is_loaded_only_when_trusted(model_dir):
    os.remove(model_dir / "model.keras")
    for path in (model_dir, model_dir / "export"):
        with pytest.raises(UserError, match=r"SavedModel.*--trust_saved_model") as err:
            loading.load_model(str(path))
        assert str(model_dir / "export") in str(err.value)
        with pytest.raises(UserError, match="--trust_saved_model"):
            ensemble.load(str(path))
    predictor = loading.load_model(str(model_dir), trust_saved_model=True)
    assert predictor(_images()).shape == (2,)


def test_garbled_model_keras_names_the_file(model_dir):
    (model_dir / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match=rf"{model_dir / 'model.keras'}") as err:
        loading.load_model(str(model_dir))
    assert "\n" not in str(err.value)


def test_garbled_preprocessing_json_names_the_file(model_dir):
    (model_dir / "preprocessing.json").write_text('{"canvas_size": 45')
    with pytest.raises(UserError, match=rf"{model_dir / 'preprocessing.json'}"):
        loading.load_model(str(model_dir))


def test_tampered_preprocessing_json_is_refused(model_dir, tmp_path):
    import shutil
    serving = tmp_path / "serving"  # train --serving_dir: the SavedModel at the root
    shutil.copytree(model_dir / "export", serving)
    for name in ("model.keras", "preprocessing.json"):
        shutil.copy(model_dir / name, serving / name)
    for folder in (model_dir, serving):
        loading.load_model(str(folder))  # as exported: accepted
        spec = json.loads((folder / "preprocessing.json").read_text())
        spec["canvas_size"] = 300
        (folder / "preprocessing.json").write_text(json.dumps(spec))
        with pytest.raises(UserError, match=r"preprocessing\.json.*export"):
            loading.load_model(str(folder))


def test_output_that_is_a_directory_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    table = pd.DataFrame({"file": ["1.bmp"], "probability": [0.5], "label": [1],
                          "path": ["1.bmp"]})
    with pytest.raises(UserError, match=rf"{out} is a directory"):
        prediction.write_outputs(table, [], str(out))
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == []


def test_input_paths_with_commas_are_kept_whole(tmp_path):
    (tmp_path / "a,b.bmp").write_bytes(b"x")
    (tmp_path / "c.bmp").write_bytes(b"x")
    items = [str(tmp_path / "a"), "b.bmp", str(tmp_path / "c.bmp")]
    expected = [str(tmp_path / "a,b.bmp"), str(tmp_path / "c.bmp")]
    assert prediction.list_images(items) == expected


def test_predict_cli_one_lines(model_dir, tmp_path):
    img = tmp_path / "1.png"
    from leukemia_tf.data import images
    img.write_bytes(images.encode(_images(1)[0], "png"))
    (tmp_path / "out").mkdir()
    code, line = run_main("predict", f"--model_dir={model_dir}", f"--input={img}",
                          f"--output={tmp_path / 'out'}")
    assert code == 1 and line == (f"error: --output {tmp_path / 'out'} is a directory: give "
                                  f"the CSV file to write, e.g. {tmp_path / 'out'}/"
                                  "predictions.csv")
    os.remove(model_dir / "model.keras")
    code, line = run_main("predict", f"--model_dir={model_dir}", f"--input={img}",
                          f"--output={tmp_path / 'p.csv'}")
    assert code == 1 and line.startswith("error: ") and "--trust_saved_model" in line
    assert sorted(os.listdir(tmp_path)) == ["1.png", "m", "out"]  # no p.csv, no temporary
    assert os.listdir(tmp_path / "out") == []
