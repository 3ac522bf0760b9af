"""Nothing finished is lost: interruptions after training, torn state files, a records
dir that changes under a running trainer, and the one-line errors for broken files."""
import errno
import json
import logging
import os
import shutil

import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.model import export
from leukemia_tf.training import distribution, loop, rundir
from tests.helpers import tiny_config


def _cfg(records_dir, md, **train):
    train.setdefault("epochs", 2)
    train.setdefault("steps_per_epoch", 2)
    return tiny_config(records_dir, md, **train)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "model.keras")


@pytest.fixture(scope="module")
def _trained_once(records_dir, tmp_path_factory):
    """Two epochs trained, then the disk filled up while exporting (as a kill -9 there)."""
    md = tmp_path_factory.mktemp("trained") / "m"
    cfg = _cfg(records_dir, md)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "export_model", _full_disk)
        with pytest.raises(OSError, match="No space"):
            training.run(cfg)
    return cfg, md


@pytest.fixture
def trained(_trained_once, tmp_path):
    """A copy of a model dir whose training finished and whose export did not."""
    cfg, src = _trained_once
    md = tmp_path / "m"
    shutil.copytree(src, md)
    return C.replace(cfg, train={"model_dir": str(md)}), md


# ------------------------------------------------ an interruption after the last epoch
def test_interrupted_export_is_finished_from_the_saved_state(trained):
    cfg, md = trained
    assert not (md / "model.keras").exists() and not (md / "summary.json").exists()
    history = (md / "history.csv").read_bytes()
    best = (md / "best" / "state.json").read_bytes()
    summary = training.run(cfg)
    assert summary["status"] == "ok"
    assert summary["first_epoch"] is None  # no epoch trained again
    assert (md / "history.csv").read_bytes() == history
    assert (md / "best" / "state.json").read_bytes() == best
    assert (md / "model.keras").exists() and (md / "export" / "saved_model.pb").exists()
    assert json.loads((md / "summary.json").read_text())["status"] == "ok"


# ------------------------------------------------ a torn summary.json
def test_torn_summary_is_an_error_not_a_retrain(finished):
    cfg, md = finished
    model = (md / "model.keras").read_bytes()
    (md / "summary.json").write_text('{"status": "o')
    with pytest.raises(training.RunDirError, match=r"summary\.json .*not valid JSON"):
        training.run(cfg)
    assert (md / "model.keras").read_bytes() == model


def test_start_over_removes_the_old_evaluations(trained):
    cfg, md = trained
    shutil.rmtree(md / "backup")  # killed before its first backup: starts over
    (md / "eval").mkdir()
    (md / "eval" / "metrics.json").write_text("{}")
    assert training.run(cfg)["first_epoch"] == 1
    assert not (md / "eval").exists()


def test_an_exported_model_without_backup_is_never_deleted(trained):
    cfg, md = trained
    shutil.rmtree(md / "backup")
    (md / "model.keras").write_bytes(b"a finished export")
    with pytest.raises(training.RunDirError, match=r"model\.keras.*--overwrite"):
        training.run(cfg)
    assert (md / "model.keras").read_bytes() == b"a finished export"


# ------------------------------------------------ a torn best/state.json
def test_torn_best_state_is_recovered_from_the_history(trained):
    cfg, md = trained
    history = pd.read_csv(md / "history.csv")
    column, mode = rundir.MONITOR_KEYS[cfg.train.monitor]  # the run's own --monitor
    best_row = history.loc[history[column].idxmax() if mode == "max" else history[column].idxmin()]
    (md / "best" / "state.json").write_text('{"best": 0.8')
    summary = training.run(cfg)
    assert summary["best_epoch"] == int(best_row["epoch"])
    state = rundir.best_state(str(md))
    assert state["epoch"] == int(best_row["epoch"])
    assert state["best"] == pytest.approx(best_row[column])


def test_torn_best_state_without_history_is_one_line(trained):
    cfg, md = trained
    (md / "best" / "state.json").write_text('{"best": 0.8')
    (md / "history.csv").unlink()
    with pytest.raises(training.RunDirError, match=rf"{md / 'best' / 'state.json'}"):
        training.run(cfg)


# ------------------------------------------------ raising --epochs extends a run
def test_raising_epochs_continues_a_finished_run(finished, caplog):
    cfg, md = finished
    assert tf.train.latest_checkpoint(str(md / "backup" / "chief"))  # the last state
    with pytest.raises(training.RunDirError, match="train.epochs"):
        training.run(C.replace(cfg, train={"epochs": 2}, data={"seed": 3}))
    caplog.set_level(logging.INFO, logger="leukemia_tf")
    (md / "eval" / "validation").mkdir(parents=True)  # an evaluation of the 1-epoch model
    (md / "eval" / "validation" / "report.md").write_text("# of the old model")
    summary = training.run(C.replace(cfg, train={"epochs": 2}))
    assert summary["status"] == "ok" and summary["first_epoch"] == 2
    assert not (md / "eval").exists()  # its reports described a model that is gone
    said = [r.getMessage() for r in caplog.records if "extending the run" in r.getMessage()]
    assert said == [f"extending the run in {md} from 1 to 2 epochs"]  # said once
    assert list(pd.read_csv(md / "history.csv")["epoch"]) == [1, 2]
    assert json.loads((md / "config.json").read_text())["train"]["epochs"] == 2
    # Lowering it again is another configuration.
    with pytest.raises(training.RunDirError, match="train.epochs: 2"):
        training.run(cfg)


# ------------------------------------------------ the records dir changes under a trainer
def test_trainer_stops_when_the_manifest_changes(records_dir, tmp_path, monkeypatch):
    rec = tmp_path / "rec"
    shutil.copytree(records_dir, rec)
    make = loop.make_callbacks

    class Reconvert(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            manifest = json.loads((rec / "manifest.json").read_text())
            manifest["warnings"].append("a later conversion")
            (rec / "manifest.json").write_text(json.dumps(manifest))

    def with_reconvert(cfg, chief):
        callbacks, guard, progress = make(cfg, chief)
        return [Reconvert()] + callbacks, guard, progress

    monkeypatch.setattr(loop, "make_callbacks", with_reconvert)
    with pytest.raises(training.InputError, match=rf"{rec / 'manifest.json'} changed"):
        training.run(_cfg(str(rec), tmp_path / "m"))
    assert not (tmp_path / "m" / "model.keras").exists()


# ------------------------------------------------ broken files: one line naming them
def test_garbled_best_weights_name_the_file(trained):
    cfg, md = trained
    data = next((md / "best").glob("weights.data-*"))
    data.write_bytes(b"garbage" * 10)
    with pytest.raises(training.TrainingError) as err:
        training.run(cfg)
    message = training.expected_error(err.value)
    assert str(md / "best" / "weights") in message and "\n" not in message


def test_garbled_backup_names_the_folder(trained):
    cfg, md = trained
    for path in (md / "backup" / "chief").glob("ckpt-*.data-*"):
        path.write_bytes(b"garbage")
    with pytest.raises(training.TrainingError) as err:
        training.run(cfg)
    message = training.expected_error(err.value)
    assert str(md / "backup") in message and "--overwrite" in message


@pytest.mark.parametrize("content", ["{not json", "[]"])
def test_bad_config_json_names_the_file(finished, content):
    cfg, md = finished
    (md / "config.json").write_text(content)
    with pytest.raises(training.RunDirError, match=rf"{md / 'config.json'}"):
        training.run(cfg)


def test_garbled_history_names_the_file(trained):
    cfg, md = trained
    (md / "history.csv").write_bytes(b"\x00\xff\xfe garbage \x00\n\x01,\x02\n")
    with pytest.raises(training.RunDirError, match=rf"{md / 'history.csv'}"):
        training.run(cfg)


def test_bad_tf_config_names_the_variable(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1",]}}')
    with pytest.raises(ValueError, match="TF_CONFIG") as err:
        distribution.make_strategy("multi_worker")
    assert "\n" not in training.expected_error(err.value)


def test_lost_worker_is_one_line_naming_it():
    exc = tf.errors.UnavailableError(
        None, None, "Collective ops is aborted by: failed to connect to all addresses\n"
        "Additional GRPC error information from remote target /job:worker/replica:0/task:1"
        "\n:{created_time:...}")
    message = training.expected_error(exc)
    assert message is not None and "\n" not in message
    assert "worker 1" in message and "re-run all workers" in message


def test_failed_writes_leave_no_temporary(tmp_path, monkeypatch):
    from leukemia_tf import io

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io, "rename", fail)
    with pytest.raises(OSError):
        io.write_text(str(tmp_path / "history.csv"), "epoch\n1\n")
    assert os.listdir(tmp_path) == []


def test_a_failed_save_leaves_no_temporary_folder(trained, monkeypatch):
    cfg, md = trained
    temp = md / "best" / "weights_temp"

    def fail_like_a_full_disk(*args, **kwargs):
        temp.mkdir()  # what TensorFlow's sharded save leaves when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(temp))
    monkeypatch.setattr(export, "export_model", fail_like_a_full_disk)
    with pytest.raises(OSError):
        training.run(cfg)
    assert not temp.exists() and not (md / "train.lock").exists()
