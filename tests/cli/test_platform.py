"""Cloud jobs: Vertex AI's AIP_* variables supply the dirs no flag gives; flags win; the
run's config.json records what came from the environment."""
import json
import logging
import os

import pytest
from absl import flags

from leukemia_tf.cli import flag_table
from leukemia_tf.cli import train as cli
from tests.helpers import run_main

AIP = {"AIP_MODEL_DIR": "gs://b/job/model/", "AIP_CHECKPOINT_DIR": "gs://b/job/checkpoints/",
       "AIP_TENSORBOARD_LOG_DIR": "gs://b/job/logs/"}


def _config(environ, *args):
    fv = flags.FlagValues()
    cli.define_flags(fv)
    flag_table.parse(fv, [cli.COMMAND.script, "--records_dir=R", *args])
    notes = cli.from_environment(fv, environ)
    return cli.config_from_flags(fv), notes


def test_the_variables_fill_what_no_flag_gives():
    cfg, notes = _config(AIP)
    t = cfg.train
    assert (t.model_dir, t.serving_dir, t.tensorboard_dir) == (
        "gs://b/job/checkpoints/", "gs://b/job/model/", "gs://b/job/logs/")
    assert notes == ("train.model_dir from AIP_CHECKPOINT_DIR",
                     "train.serving_dir from AIP_MODEL_DIR",
                     "train.tensorboard_dir from AIP_TENSORBOARD_LOG_DIR")


def test_flags_win_and_the_model_dir_alone_holds_everything():
    cfg, notes = _config(AIP, "--model_dir=M", "--config.train.tensorboard_dir=T")
    assert (cfg.train.model_dir, cfg.train.tensorboard_dir) == ("M", "T")
    assert notes == ("train.serving_dir from AIP_MODEL_DIR",)
    cfg, notes = _config({"AIP_MODEL_DIR": "gs://b/m"})
    assert (cfg.train.model_dir, cfg.train.serving_dir) == ("gs://b/m", "gs://b/m")
    assert _config({}, "--model_dir=M")[1] == ()


@pytest.mark.slow
def test_a_vertex_job_trains_without_model_dir(records_dir, tmp_path, monkeypatch, caplog):
    """The trainer's main, run in this process, on the job's variables."""
    for var, name in {"AIP_MODEL_DIR": "model", "AIP_CHECKPOINT_DIR": "checkpoints",
                      "AIP_TENSORBOARD_LOG_DIR": "logs"}.items():
        monkeypatch.setenv(var, str(tmp_path / name))
    job = [f"--records_dir={records_dir}", "--model=resnet_small", "--width=8",
           "--image_size=48", "--batch_size=8", "--epochs=1", "--steps_per_epoch=2",
           "--mixed_precision=float32", "--progress=none"]
    assert run_main("train", *job) == (0, "")
    state, served = tmp_path / "checkpoints", tmp_path / "model"
    # The job restarted after it finished (a spot VM's loop): exit 0, nothing retrained.
    summary = (state / "summary.json").read_bytes()
    with caplog.at_level(logging.INFO, logger="leukemia_tf"):
        assert run_main("train", *job) == (0, "")
    assert "nothing to do" in caplog.text and (state / "summary.json").read_bytes() == summary
    assert (state / "backup" / "chief" / "checkpoint").exists()
    assert (state / "summary.json").exists() and not (state / "logs").exists()
    assert (served / "saved_model.pb").exists() and (served / "model.keras").exists()
    assert (served / "preprocessing.json").exists()
    before_evaluate = os.listdir(served)
    assert any(name.startswith("events.") for _, _, names in os.walk(tmp_path / "logs")
               for name in names)
    recorded = json.loads((state / "config.json").read_text())["train"]["from_environment"]
    assert recorded == ["train.model_dir from AIP_CHECKPOINT_DIR",
                        "train.serving_dir from AIP_MODEL_DIR",
                        "train.tensorboard_dir from AIP_TENSORBOARD_LOG_DIR"]
    # The serving dir is what the platform uploads: evaluate writes nothing into it.
    code, said = run_main("evaluate", f"--model_dir={served}", f"--records_dir={records_dir}")
    assert code == 1 and "is a serving dir" in said and "--out_dir" in said, said
    assert sorted(os.listdir(served)) == sorted(before_evaluate)
    code, said = run_main("evaluate", f"--model_dir={served}", f"--records_dir={records_dir}",
                          f"--out_dir={tmp_path / 'eval'}")
    assert (code, said) == (0, "") and (tmp_path / "eval").is_dir()
