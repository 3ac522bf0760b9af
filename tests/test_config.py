"""Flags -> frozen config: presets, overrides, flagfile, JSON round trip."""
import pytest
from absl import flags

from leukemia_tf import config as C
from leukemia_tf.cli import train as train_cli


@pytest.fixture
def parse():
    def _parse(*args):
        fv = flags.FlagValues()
        train_cli.define_flags(fv)
        fv(["leukemia-train", "--records_dir=R", "--model_dir=M", *args])
        return train_cli.config_from_flags(fv)
    return _parse


def test_default_preset_takes_every_flag(parse):
    cfg = parse("--model=seed_cnn", "--image_size=96", "--epochs=3", "--train_folds=0,1",
                "--val_split=fold2", "--noaugment", "--mixed_precision=mixed_float16")
    assert cfg.model.name == "seed_cnn" and cfg.model.image_size == 96
    assert cfg.data.image_size == 96 and cfg.data.train_folds == (0, 1)
    assert cfg.data.val_split == "fold2" and cfg.train.epochs == 3
    assert cfg.model.augment.enabled is False
    assert cfg.train.mixed_precision == "mixed_float16"
    assert (cfg.data.records_dir, cfg.train.model_dir) == ("R", "M")
    assert C.from_dict(cfg.to_dict()) == cfg


def test_seed_preset_keeps_its_values_unless_overridden(parse):
    cfg = parse("--preset=seed_cnn")
    seed = C.seed_cnn_preset("R", "M")
    assert cfg == seed
    assert cfg.model.augment.enabled is False and cfg.train.optimizer == "adam"
    cfg = parse("--preset=seed_cnn", "--epochs=7", "--l2=0.001")
    assert cfg.train.epochs == 7 and cfg.model.l2 == 0.001 and cfg.train.optimizer == "adam"


def test_flagfile(parse, tmp_path):
    f = tmp_path / "run.flags"
    f.write_text("--epochs=9\n--batch_size=16\n--learning_rate=0.01\n")
    cfg = parse(f"--flagfile={f}")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate) == (9, 16, 0.01)


def test_unknown_config_field():
    with pytest.raises(ValueError, match="unknown"):
        C.from_dict({"train": {"epochz": 3}})
