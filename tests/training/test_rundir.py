"""The trainer owns its model_dir: one configuration per dir, one
trainer at a time, nothing written by a failed start, no non-finite weights kept."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.training import rundir
from tests.helpers import tiny_config


def _quick(records_dir, model_dir, **train):
    train.setdefault("epochs", 1)
    train.setdefault("steps_per_epoch", 2)
    return tiny_config(records_dir, model_dir, **train)


def _snapshot(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


# ------------------------------------------------------------------ case 1
def test_finished_dir_other_settings_refused_same_settings_not_retrained(finished, tmp_path):
    cfg, md = finished
    before = _snapshot(md)
    other = C.replace(cfg, train={"learning_rate": 1e-5}, data={"seed": 7})
    with pytest.raises(training.RunDirError, match=r"data\.seed.*train\.learning_rate"):
        training.run(other)
    with pytest.raises(training.RunDirError, match=r"model\.name: \"resnet_small\""):
        training.run(C.replace(cfg, model={"name": "seed_cnn"}))
    assert _snapshot(md) == before
    # Same settings on a copy (as a user would copy a finished run): finished, nothing
    # retrained, nothing rewritten.
    m2 = tmp_path / "m2"
    shutil.copytree(md, m2)
    again = training.run(C.replace(cfg, train={"model_dir": str(m2)}))
    assert again["status"] == "finished"
    assert _snapshot(m2) == before
    # Settings that do not change the model (a restarted cloud job's other cache or
    # backup frequency, logging) may differ: still finished, nothing retrained.
    relaxed = C.replace(cfg, train={"model_dir": str(m2), "backup_every_steps": 7,
                                    "verbose": 1, "steps_per_execution": 2},
                        data={"cache": "none"})
    assert training.run(relaxed)["status"] == "finished"
    assert _snapshot(m2) == before


def test_overwrite_starts_fresh_and_keeps_foreign_files(finished):
    cfg, md = finished
    (md / "notes.txt").write_text("mine")
    (md / "eval").mkdir()
    (md / "eval" / "metrics.json").write_text("{}")
    old_model = (md / "model.keras").read_bytes()
    other = C.replace(cfg, train={"learning_rate": 1e-2, "overwrite": True}, data={"seed": 7})
    summary = training.run(other)
    assert summary["status"] == "ok" and summary["first_epoch"] == 1
    assert (md / "notes.txt").read_text() == "mine"
    assert not (md / "eval").exists()  # the old weights' report went with them
    assert (md / "model.keras").read_bytes() != old_model
    assert json.loads((md / "config.json").read_text())["train"]["learning_rate"] == 1e-2


def test_training_output_without_config_is_not_adopted(records_dir, tmp_path):
    md = tmp_path / "m"
    (md / "best").mkdir(parents=True)
    (md / "best" / "state.json").write_text('{"best": 0.99, "epoch": 9, '
                                            '"monitor": "val_weighted_f1"}')
    with pytest.raises(training.RunDirError, match="no config.json"):
        training.run(_quick(records_dir, md))
    assert sorted(_snapshot(md)) == ["best/state.json"]


# ------------------------------------------------------------------ case 2
def test_second_trainer_refuses_while_the_lock_is_held(records_dir, tmp_path):
    md = tmp_path / "m"
    md.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "token": "other",
                "started": "2026-01-01T00:00:00Z", "renewed": time.time()}  # live: renewed
        (md / "train.lock").write_text(json.dumps(lock))
        with pytest.raises(training.RunDirError,
                           match=rf"in use by another trainer .*pid {holder.pid}.*delete"):
            training.run(_quick(records_dir, md))
        assert os.listdir(md) == ["train.lock"]  # no config.json, no history
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale, and the next trainer takes over.
    assert training.run(_quick(records_dir, md))["status"] == "ok"
    assert not (md / "train.lock").exists()


def test_lock_is_exclusive_and_a_lock_without_times_is_never_taken_over(tmp_path):
    first, second = rundir.Lock(str(tmp_path)), rundir.Lock(str(tmp_path))
    first.acquire()
    with pytest.raises(training.RunDirError, match="in use"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
    (tmp_path / "train.lock").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "started": "x", "token": "t"}))
    with pytest.raises(training.RunDirError, match="host elsewhere"):
        rundir.Lock(str(tmp_path)).acquire()


# ------------------------------------------------------------------ case 3
def test_failed_start_writes_nothing(finished, records_dir, tmp_path):
    cfg, md = finished
    before = _snapshot(md)
    with pytest.raises(ValueError, match="vgg99"):
        training.run(C.replace(cfg, model={"name": "vgg99"}))
    assert _snapshot(md) == before
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="--batch_size must be at least 1"):
        training.run(_quick(records_dir, fresh, batch_size=-8))
    # A model that fails to build (seed_cnn needs 46 px or more) writes nothing either.
    small = C.replace(_quick(records_dir, fresh), data={"image_size": 32},
                      model={"name": "seed_cnn"})
    with pytest.raises(ValueError, match="seed_cnn needs image_size"):
        training.run(small)
    assert not fresh.exists()


# ------------------------------------------------------------------ case 4
def _explode_after(steps):
    """make_optimizer whose learning rate becomes infinite after `steps` steps."""
    def make(cfg, steps_per_epoch, precision, model=None):
        lr = keras.optimizers.schedules.PiecewiseConstantDecay([steps], [1e-3, float("inf")])
        return keras.optimizers.Adam(lr)
    return make


@pytest.fixture(scope="module")
def diverged(records_dir, tmp_path_factory):
    """A model dir whose run diverged in epoch 2 (3 steps/epoch, a backup every step)."""
    md = tmp_path_factory.mktemp("diverged") / "m"
    cfg = tiny_config(records_dir, md, epochs=3, steps_per_epoch=3, backup_every_steps=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.loop.objectives, "make_optimizer", _explode_after(3))
        with pytest.raises(FloatingPointError) as err:
            training.run(cfg)
    keras.mixed_precision.set_global_policy("float32")
    return cfg, md, str(err.value)


def _all_finite(prefix):
    reader = tf.train.load_checkpoint(prefix)
    values = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()]
    floats = [v for v in values if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    return bool(floats) and all(np.isfinite(v).all() for v in floats)


def test_nan_stop_keeps_the_last_good_backup_and_best(diverged, tmp_path):
    cfg, src, message = diverged
    md = tmp_path / "m"
    shutil.copytree(src, md)
    assert "epoch 2" in message and "nothing was exported" in message
    assert os.path.join(str(src), "backup") in message  # says where they are
    assert os.path.join(str(src), "best") in message
    assert not (md / "model.keras").exists() and not (md / "export").exists()
    assert not (md / "summary.json").exists() and not (md / "train.lock").exists()
    state = json.loads((md / "best" / "state.json").read_text())
    assert state["epoch"] == 1 and np.isfinite(state["best"])
    assert _all_finite(str(md / "best" / "weights"))
    backup = tf.train.latest_checkpoint(str(md / "backup" / "chief"))
    assert backup and _all_finite(backup)
    # The same settings resume from that backup and finish. Steps 1-4 had a finite
    # learning rate, step 5 made the weights infinite: the last good backup is step 4
    # (epoch 2, its first step); the one after step 5 was not taken.
    summary = training.run(C.replace(cfg, train={"model_dir": str(md)}))
    assert summary["status"] == "ok" and summary["resumed_from_step"] == 4
    assert summary["first_epoch"] == 2


# ------------------------------------------------------------------ case 5
def test_restart_with_other_settings_after_a_stop_is_refused(diverged, tmp_path):
    cfg, src, _ = diverged
    md = tmp_path / "m"
    shutil.copytree(src, md)
    before = _snapshot(md)
    base = C.replace(cfg, train={"model_dir": str(md)})
    for other, key in ((C.replace(base, model={"name": "seed_cnn"}), r"model\.name"),
                       (C.replace(base, train={"batch_size": 16}), r"train\.batch_size")):
        with pytest.raises(training.RunDirError, match=key):
            training.run(other)
    assert _snapshot(md) == before
