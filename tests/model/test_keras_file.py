"""The .keras trust check: a model file cannot make tf_keras import a module outside
tf_keras and this package's registered classes, nor carry a Lambda; every load path
(evaluate/predict, the options that reload the network, --weights) goes through it."""
import json
import os
import shutil
import subprocess
import sys
import types
import uuid
import zipfile

import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.config import AugmentConfig, ModelConfig
from leukemia_tf.errors import UserError
from leukemia_tf.inference import loading
from leukemia_tf.model import keras_file
from leukemia_tf.model.registry import build_model
from tests.helpers import REPO


def _rewrite_config(keras_path, change):
    """Apply `change(config)` to the config.json inside the archive at `keras_path`."""
    with zipfile.ZipFile(keras_path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    change(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(keras_path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def _first_conv(config):
    return next(layer for layer in config["config"]["layers"]
                if layer["class_name"] == "Conv2D")


@pytest.fixture
def evil(untrained_32, tmp_path, monkeypatch):
    """A model dir whose model.keras names a module `evil_mod_<random>` beside it, on
    sys.path and in the working dir, which would leave a marker file if imported."""
    md = tmp_path / "m"
    shutil.copytree(untrained_32, md)
    name = f"evil_mod_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported.txt"
    (md / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                   "from tf_keras.activations import relu  # noqa\n")
    layer = {}

    def change(config):
        conv = _first_conv(config)
        layer["name"] = conv["config"]["name"]
        conv["config"]["activation"] = {"module": name, "class_name": "function",
                                        "config": "relu", "registered_name": "relu"}

    _rewrite_config(md / "model.keras", change)
    monkeypatch.syspath_prepend(str(md))
    monkeypatch.chdir(md)
    return types.SimpleNamespace(dir=md, module=name, marker=marker, layer=layer["name"],
                                 keras=str(md / "model.keras"))


def _refused(evil, err):
    text = str(err.value)
    assert text == (f"{evil.keras}: layer {evil.layer!r} names module {evil.module!r}, which "
                    "loading would import and run; a model of this project needs only "
                    "tf_keras and leukemia_tf layers, so the file is not loaded")
    assert not evil.marker.exists() and evil.module not in sys.modules


def test_foreign_module_is_refused_before_tf_keras_imports_it(evil):
    with pytest.raises(UserError) as err:
        loading.load_model(str(evil.dir))
    _refused(evil, err)


def test_options_reload_and_weights_go_through_the_check(evil):
    from leukemia_tf.inference import options
    with pytest.raises(UserError) as err:
        options.keras_model(types.SimpleNamespace(path=evil.keras))
    _refused(evil, err)
    for weights in (evil.keras, str(evil.dir)):
        cfg = ModelConfig(name="resnet_small", width=4, weights=weights,
                          augment=AugmentConfig(enabled=False))
        with pytest.raises(UserError) as err:
            build_model(cfg, 32)
        _refused(evil, err)


@pytest.mark.slow
def test_predict_cli_refuses_in_one_line_from_the_model_dir(evil, tmp_path):
    from leukemia_tf.data import images
    import numpy as np
    img = tmp_path / "1.png"
    img.write_bytes(images.encode(np.zeros((32, 32, 3), np.uint8), "png"))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "leukemia_tf.cli.predict", "--model_dir=.",
                           f"--input={img}", f"--output={tmp_path / 'p.csv'}"],
                          cwd=evil.dir, env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("error: ./model.keras: layer "), lines
    assert f"names module {evil.module!r}" in lines[-1] and "Traceback" not in proc.stderr
    assert not evil.marker.exists() and not (tmp_path / "p.csv").exists()


def test_builtins_may_name_keras_functions_only():
    def config(name, module="builtins"):
        return {"class_name": "Conv2D", "config": {"name": "c", "activation": {
            "module": module, "class_name": "function", "config": name,
            "registered_name": name}}}
    keras_file.check_config("m.keras", config("relu"))
    keras_file.check_config("m.keras", config("relu", "keras.activations"))
    for name in ("exec", "eval", "exit", "breakpoint"):
        with pytest.raises(UserError, match=r"^m\.keras: layer 'c' names module 'builtins'"):
            keras_file.check_config("m.keras", config(name))
    with pytest.raises(UserError, match="layer 'c' names module 'leukemia_tf.cli.train'"):
        keras_file.check_config("m.keras", config("relu", "leukemia_tf.cli.train"))


def test_lambda_layer_is_refused_naming_the_file_without_safe_mode_advice(tmp_path):
    import tf_keras as keras
    inputs = keras.Input([4])
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2, name="double")(inputs))
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(UserError) as err:
        loading.load_model(path)
    assert str(err.value).startswith(f"{path}: layer 'double' is a Lambda layer")
    assert "safe_mode" not in str(err.value) and "\n" not in str(err.value)


def test_project_models_with_registered_classes_load(untrained_32, tmp_path):
    import tf_keras as keras
    from leukemia_tf.training import objectives  # noqa: F401  (registers WeightedF1)
    registered = {name: obj.__module__ for name, obj in
                  keras.saving.get_custom_objects().items()
                  if name.startswith("leukemia_tf>")}
    assert keras_file.PROJECT_CLASSES == registered
    model = build_model(ModelConfig(name="resnet_small", width=4), 32)  # with Augmentation
    model.compile(loss="binary_crossentropy", metrics=[objectives.WeightedF1()])
    path = str(tmp_path / "full.keras")
    model.save(path)
    with zipfile.ZipFile(path) as z:
        assert "leukemia_tf>Augmentation" in z.read("config.json").decode()
    assert keras_file.load(path).count_params() == model.count_params()
    assert loading.load_model(str(untrained_32)).image_size == 32


def test_weights_names_what_it_accepts(untrained_32, tmp_path):
    accepted = ("--weights takes none, imagenet, a model dir holding model.keras, a .keras "
                "or .h5 file, or a TensorFlow checkpoint prefix (its .index file beside it)")
    (tmp_path / "empty").mkdir()
    for path, problem in ((untrained_32 / "export",
                           "is a SavedModel (an export/ dir), whose weights are not read back"),
                          (tmp_path / "empty", "is a folder without model.keras"),
                          (tmp_path / "nothing.h5", "does not exist")):
        with pytest.raises(UserError) as err:
            keras_file.weights_path(str(path))
        assert str(err.value) == f"--weights={path} {problem}: {accepted}"
    assert keras_file.weights_path(str(untrained_32)) == str(untrained_32 / "model.keras")
    cfg = ModelConfig(name="resnet_small", width=4, weights=str(untrained_32 / "export"),
                      augment=AugmentConfig(enabled=False))
    with pytest.raises(UserError, match="is a SavedModel"):
        build_model(cfg, 32)


def test_train_refuses_a_weights_folder_before_tensorflow(records_dir, tmp_path):
    from tests.cli.test_cli import _probe
    empty = tmp_path / "empty"
    empty.mkdir()
    last, err = _probe("train", f"--records_dir={records_dir}", f"--model_dir={tmp_path}/m",
                       f"--weights={empty}")
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert err == [f"error: --weights={empty} is a folder without model.keras: "
                   f"{keras_file.WEIGHTS_ACCEPTED}"], err
    assert not (tmp_path / "m").exists()
