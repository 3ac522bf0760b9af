"""The config roots: one home per setting, dotted overrides by annotation, checks, presets,
JSON round trip (and config.json files of the older layout)."""
import dataclasses
import json
import sys

import pytest

from leukemia_tf import config as C
from leukemia_tf import presets


def test_each_setting_has_one_home():
    """image_size, seed and deterministic live in the data section only."""
    paths = C.fields(C.Config)
    for name in ("image_size", "seed", "deterministic"):
        homes = [p for p in paths if p.split(".")[-1] == name]
        assert homes == [f"data.{name}"], homes


def test_override_parses_by_annotation():
    cfg = C.apply(C.Config(), {"train.epochs": "3", "data.train_folds": "0, 2",
                               "model.augment.enabled": "false", "train.learning_rate": "0.5",
                               "model.name": "seed_cnn"})
    assert cfg.train.epochs == 3 and cfg.data.train_folds == (0, 2)
    assert cfg.model.augment.enabled is False and cfg.train.learning_rate == 0.5
    assert cfg.model.name == "seed_cnn"
    assert C.override(cfg, "data.train_folds", [1]).data.train_folds == (1,)
    assert dataclasses.replace(cfg) is not cfg  # frozen: overrides copy, never mutate


@pytest.mark.parametrize("path,value,message", [
    ("train.epochz", "3", "unknown setting 'train.epochz' (did you mean train.epochs"),
    ("train.epochs", "three", "train.epochs='three' is not an int"),
    ("data.deterministic", "maybe", "data.deterministic='maybe' is not a bool"),
    ("data.train_folds", "0,x", "data.train_folds='x' is not an int"),
])
def test_bad_overrides_are_one_error_naming_the_setting(path, value, message):
    with pytest.raises(C.ConfigError) as e:
        C.override(C.Config(), path, value)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value) and e.value.path == path


def test_check_reads_declared_choices_and_minimums():
    C.check(C.Config())
    with pytest.raises(C.ConfigError, match="train.epochs must be at least 1, not 0"):
        C.check(C.override(C.Config(), "train.epochs", 0))
    with pytest.raises(C.ConfigError, match="train.schedule=linear is not one of cosine"):
        C.check(C.override(C.Config(), "train.schedule", "linear"))
    with pytest.raises(C.ConfigError, match="tta=all is not one of none, flips"):
        C.check(C.EvalConfig("m", "r", tta="all"))


def test_presets_are_registered_by_name():
    assert {"default", "seed_cnn"} <= set(presets.preset_names(C.Config))
    seed = presets.preset("seed_cnn")
    assert seed.model.name == "seed_cnn" and seed.train.optimizer == "adam"
    assert seed.model.augment.enabled is False
    with pytest.raises(C.ConfigError, match="no preset 'seedcnn'; presets: default"):
        presets.preset("seedcnn")

    @presets.register_preset("tiny_for_test")
    def tiny():
        return C.replace(C.Config(), train={"epochs": 1})
    try:
        assert presets.preset("tiny_for_test").train.epochs == 1
        with pytest.raises(ValueError, match="registered twice"):
            presets.register_preset("tiny_for_test")(tiny)
    finally:
        presets._PRESETS.pop("tiny_for_test")


def test_json_round_trip_and_older_layout():
    cfg = C.apply(presets.preset("seed_cnn"), {"data.image_size": "96", "data.seed": "4",
                                               "data.deterministic": "true"})
    assert C.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()  # the layout that held the size, seed and determinism twice
    old["model"]["image_size"], old["train"]["seed"] = 96, 4
    old["train"]["deterministic"] = True
    assert C.from_dict(old) == cfg
    assert C.upgrade(old) == json.loads(cfg.to_json())  # what the ownership check compares
    with pytest.raises(ValueError, match="unknown"):
        C.from_dict({"train": {"epochz": 3}})


def test_config_imports_no_tensorflow():
    import subprocess
    code = ("import sys, leukemia_tf.config, leukemia_tf.cli.flag_table, "
            "leukemia_tf.cli.runner, leukemia_tf.cli.splits;"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_model_dir_of_the_older_layout_is_the_same_run(tmp_path):
    """The run-dir ownership check reads an old config.json through `upgrade`: the same
    flags find the finished run instead of refusing it as a run with other settings."""
    from leukemia_tf.training import rundir
    cfg = C.replace(C.Config(), data={"records_dir": "R"},
                    train={"model_dir": str(tmp_path)})
    old = json.loads(cfg.to_json())
    old["model"]["image_size"], old["train"]["seed"] = 224, 0
    old["train"]["deterministic"] = False
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "ok"}))
    assert rundir.inspect(cfg).status == "finished"
    other = C.replace(cfg, data={"image_size": 96})
    with pytest.raises(rundir.RunDirError, match="data.image_size: 224 in config.json, 96"):
        rundir.inspect(other)
