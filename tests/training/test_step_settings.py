"""The train step's execution settings: jit_compile auto|on|off, steps_per_execution with
the run's callbacks and MirroredStrategy, TensorFlow's thread pools."""
import csv
import logging
import os
import subprocess
import sys

import pytest
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.training import callbacks as cb
from leukemia_tf.training import step_settings
from tests.helpers import REPO, tiny_config


def test_resolve_jit_rule():
    assert step_settings.resolve_jit("auto", "CPU", "float32") is False
    assert step_settings.resolve_jit("auto", "GPU", "mixed_bfloat16") is True
    assert step_settings.resolve_jit("on", "CPU", "float32") is True
    assert step_settings.resolve_jit("off", "GPU", "float32") is False
    assert step_settings.resolve_jit(True, "CPU", "float32") is True  # older config.json
    with pytest.raises(ValueError, match="jit_compile"):
        step_settings.resolve_jit("yes", "CPU", "float32")


def test_compile_kwargs_logs_the_resolved_value(caplog):
    t = C.TrainConfig(jit_compile="auto", steps_per_execution=4)
    with caplog.at_level(logging.INFO, logger="leukemia_tf.training"):
        kw = step_settings.compile_kwargs(t, "float32")
    assert kw == {"jit_compile": False, "steps_per_execution": 4}  # the tests run on CPU
    assert "jit_compile=False (setting auto on CPU" in caplog.text
    with pytest.raises(ValueError, match="steps_per_execution"):
        step_settings.compile_kwargs(C.TrainConfig(steps_per_execution=0), "float32")


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_steps_per_execution_with_callbacks_and_mirrored(records_dir, tmp_path):
    """48 images, batch 8: 6 steps per epoch run as calls of 4 and 2 steps on 2 replicas;
    every epoch validates, every step counts (optimizer and images/s). (The trainer's
    MirroredStrategy run end to end: with steps_per_execution=1 it is the pretrained
    preset's test, tests/training/test_pretrained.py.)"""
    md = tmp_path / "m"
    cfg = tiny_config(records_dir, md, epochs=2, strategy="mirrored", steps_per_execution=4,
                      backup_every_steps=4, jit_compile="off")
    summary = training.run(cfg)
    assert summary["replicas"] == 2 and summary["strategy"] == "mirrored"
    assert summary["status"] == "ok" and summary["validation"]["num_examples"] == 10
    rows = _history(md)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r["val_weighted_f1"] != "" for r in rows)
    assert summary["steps_per_epoch"] == 6
    # finished: the backup is kept as the run's last state (a larger --epochs extends it)
    assert (md / "backup" / "chief" / "checkpoint").is_file()
    assert all(float(r["images_per_sec"]) > 0 for r in rows)


def test_progress_counts_steps_not_calls():
    p = cb.Throughput(global_batch=8)
    p._last, p._epoch_steps, p._epoch_seconds = None, 0, 0.0  # on_epoch_begin needs a model
    for end in (3, 7, 11):  # calls of 4 steps each end at these steps
        p.on_train_batch_end(end)
    assert p._epoch_steps == 8  # two timed calls of 4 steps (the first is not timed)


def test_backup_records_the_last_step_of_a_call(tmp_path):
    """The step a restart continues after is the last one of the backed-up call."""
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="adam", loss="mse", steps_per_execution=4)
    guard = cb.NanGuard()
    guard.set_model(model)
    backup = cb.Backup(str(tmp_path / "backup"), 1, guard)
    backup.set_model(model)
    backup.on_train_begin()
    backup.on_epoch_begin(0)
    backup.on_train_batch_begin(4)
    backup.on_train_batch_end(7)
    saved = int(keras.backend.eval(model._training_state._ckpt_saved_batch))
    assert saved == 7


def test_nan_guard_with_steps_per_execution(records_dir, tmp_path):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=2, optimizer="adam",
                      schedule="constant", learning_rate=1e38, steps_per_execution=4)
    with pytest.raises(FloatingPointError, match="lower --learning_rate"):
        training.run(cfg)


def test_thread_settings_apply_at_start_up():
    code = ("import leukemia_tf, tensorflow as tf\n"
            "from leukemia_tf import config as C\n"
            "from leukemia_tf.training import step_settings as s\n"
            "s.apply_threads(C.TrainConfig(inter_op_threads=1, intra_op_threads=2))\n"
            "tf.constant(1.0) + 1\n"
            "print(tf.config.threading.get_inter_op_parallelism_threads(),"
            " tf.config.threading.get_intra_op_parallelism_threads())\n")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "2"]
    with pytest.raises(ValueError, match=">= 0"):
        step_settings.apply_threads(C.TrainConfig(inter_op_threads=-1))


def test_cli_flags_reach_the_config():
    from absl import flags
    from leukemia_tf.cli import train as cli
    fv = flags.FlagValues()
    cli.define_flags(fv)
    fv(["train", "--records_dir=r", "--model_dir=m", "--jit_compile=on",
        "--steps_per_execution=16", "--inter_op_threads=2", "--intra_op_threads=3"])
    cfg = cli.config_from_flags(fv)
    assert (cfg.train.jit_compile, cfg.train.steps_per_execution, cfg.train.inter_op_threads,
            cfg.train.intra_op_threads) == ("on", 16, 2, 3)
