"""SIGTERM (a preempted cloud VM) and SIGINT (Ctrl-C): the trainer stops at a step's end
with a backup of that step, says so in one line, and the same command, on another host,
resumes mid-epoch and ends where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import lock, signals, training
from leukemia_tf.model import export
from leukemia_tf.training import rundir
from tests.helpers import REPO


def _cfg(records_dir, md, **train):
    """seed_cnn without dropout or augmentation, deterministic: nothing random but the
    seeded input stream, so a resumed run can equal an uninterrupted one bit for bit."""
    train = {"epochs": 2, "steps_per_epoch": 6, "batch_size": 8, "backup_every_steps": 100,
             "mixed_precision": "float32", "tensorboard": False, "verbose": 0,
             "optimizer": "adam", "schedule": "constant", "warmup_epochs": 0.0, **train}
    return C.Config(data=C.DataConfig(records_dir=records_dir, image_size=48,
                                      deterministic=True),
                    model=C.ModelConfig(name="seed_cnn", width=4, dropout=0.0,
                                        normalize="none",
                                        augment=C.AugmentConfig(enabled=False)),
                    train=C.TrainConfig(model_dir=str(md), **train))


class SignalAt(keras.callbacks.Callback):
    """Sends `signum` to this process at the end of step `step` of epoch `epoch` (from 1),
    as the platform does: from outside the trainer's code, at any moment."""

    def __init__(self, epoch, step, signum=signal.SIGTERM):
        super().__init__()
        self.at, self.signum, self._epoch = (epoch, step), signum, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if (self._epoch, batch + 1) == self.at:
            os.kill(os.getpid(), self.signum)


def _weights(md):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(f"{md}/backup/chief"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/")}


def _leftovers(md):
    """Locks and temporaries anywhere under `md`."""
    return [os.path.join(d, n) for d, dirs, names in os.walk(md) for n in names + dirs
            if n.endswith(".lock") or ".tmp" in n or n.endswith("_temp")]


@pytest.fixture(scope="module")
def uninterrupted(records_dir, tmp_path_factory):
    md = tmp_path_factory.mktemp("whole") / "m"
    assert training.run(_cfg(records_dir, md))["status"] == "ok"
    return md


def test_sigterm_mid_epoch_then_a_restart_on_another_host_equals_the_whole_run(
        records_dir, uninterrupted, tmp_path, monkeypatch):
    md = tmp_path / "m"
    cfg = _cfg(records_dir, md)
    monkeypatch.setattr(lock, "hostname", lambda: "vm-a")
    with pytest.raises(signals.Stopped) as stopped:
        training.run(cfg, callbacks=[SignalAt(epoch=2, step=3)])
    assert str(stopped.value) == ("stopped by SIGTERM at epoch 2 step 3; the same command "
                                  "resumes from there")
    assert stopped.value.code == 143
    assert _leftovers(md) == []
    assert list(pd.read_csv(md / "history.csv")["epoch"]) == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back
    # The VM was gone before its lock went: a lock nobody renews, from host vm-a.
    (md / "train.lock").write_text(json.dumps({
        "host": "vm-a", "pid": 1, "token": "gone", "started": "2026-01-01T00:00:00Z",
        "renewed": time.time() - lock.LEASE_SECONDS - 1}))
    monkeypatch.setattr(lock, "hostname", lambda: "vm-b")
    summary = training.run(cfg)
    assert summary["status"] == "ok"
    assert (summary["first_epoch"], summary["resumed_from_step"]) == (2, 6 + 3)
    assert list(pd.read_csv(md / "history.csv")["epoch"]) == [1, 2]
    assert _leftovers(md) == []
    whole, resumed = _weights(uninterrupted), _weights(md)
    assert whole.keys() == resumed.keys()
    for name in whole:  # the same steps on the same batches: bit for bit
        assert np.array_equal(whole[name], resumed[name]), name
    # Validation scores of every epoch, and the kept epoch, are the same too.
    a, b = (pd.read_csv(p / "history.csv") for p in (uninterrupted, md))
    assert a.filter(like="val_").equals(b.filter(like="val_"))
    assert rundir.best_state(str(md)) == rundir.best_state(str(uninterrupted))


def test_a_signal_at_an_epochs_last_step_stops_after_its_validation(records_dir, tmp_path):
    md = tmp_path / "m"
    cfg = _cfg(records_dir, md)
    with pytest.raises(signals.Stopped, match="at epoch 1 step 6 \\(its end\\)"):
        training.run(cfg, callbacks=[SignalAt(epoch=1, step=6, signum=signal.SIGINT)])
    assert list(pd.read_csv(md / "history.csv")["epoch"]) == [1]  # its row is written
    summary = training.run(cfg)
    assert (summary["first_epoch"], summary["resumed_from_step"]) == (2, 6)
    assert list(pd.read_csv(md / "history.csv")["epoch"]) == [1, 2]


def test_sigterm_during_export_keeps_the_training_and_the_restart_exports(
        records_dir, tmp_path, monkeypatch):
    md = tmp_path / "m"
    cfg = _cfg(records_dir, md, epochs=1, steps_per_epoch=2)
    real = export.export_model

    def preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(export, "export_model", preempted)
    with pytest.raises(signals.Stopped, match="by SIGTERM while exporting \\(the export is "
                                              "redone\\); the same command resumes"):
        training.run(cfg)
    assert not (md / "summary.json").exists() and _leftovers(md) == []
    monkeypatch.setattr(export, "export_model", real)
    summary = training.run(cfg)
    assert summary["status"] == "ok" and summary["first_epoch"] is None  # nothing retrained
    assert (md / "export" / "saved_model.pb").exists() and (md / "model.keras").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_command_line_says_one_line_and_exits_with_the_signal_status(
        records_dir, tmp_path, signum):
    md = tmp_path / "m"
    cmd = [sys.executable, "-m", "leukemia_tf.cli.train", f"--records_dir={records_dir}",
           f"--model_dir={md}", "--preset=seed_cnn", "--image_size=48", "--width=4",
           "--batch_size=8", "--epochs=2", "--steps_per_epoch=400",
           "--backup_every_steps=2", "--notensorboard", "--progress=none"]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        while not (md / "backup" / "chief" / "checkpoint").exists():  # training runs
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signum)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    name = signal.Signals(signum).name
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 128 + signum, err[-2000:]
    assert last.startswith(f"stopped by {name} at epoch 1 step "), err[-2000:]
    assert last.endswith("; the same command resumes from there")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert took < 30, f"{took:.1f} s from the signal to the exit"
    assert _leftovers(md) == []
