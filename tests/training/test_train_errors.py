"""Errors a person can act on, start-up warnings, the duplicate warning and the images/s
of a one-epoch run."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.data import shard_check
from leukemia_tf.training import distribution
from tests.helpers import REPO, tiny_config


@pytest.fixture
def records_copy(records_dir, tmp_path):
    """A private copy of the tiny records that a test may damage."""
    dst = tmp_path / "rec"
    shutil.copytree(records_dir, dst)
    return dst


def _manifest(rec):
    return json.loads((rec / "manifest.json").read_text())


def _train_shard(rec):
    shard = next(s for s in _manifest(rec)["shards"] if s["split"] == "train")
    return rec / shard["path"]


def _quick(rec, md, **train):
    train.setdefault("epochs", 1)
    train.setdefault("steps_per_epoch", 2)
    return tiny_config(str(rec), md, **train)


def test_corrupt_shard_during_training_is_named(records_copy, tmp_path):
    path = _train_shard(records_copy)
    data = bytearray(path.read_bytes())
    data[12 + 100] ^= 0xFF  # a payload byte of the first record: same size, bad CRC
    path.write_bytes(bytes(data))
    with pytest.raises(training.InputError, match=rf"shard {path} is corrupt after 0 good"):
        training.run(_quick(records_copy, tmp_path / "m", steps_per_epoch=6))
    assert not (tmp_path / "m" / "train.lock").exists()


def test_truncated_shard_and_wrong_counts_fail_before_writing(records_copy, tmp_path):
    md = tmp_path / "m"
    path = _train_shard(records_copy)
    original = path.read_bytes()
    path.write_bytes(original[:-1000])
    with pytest.raises(training.InputError, match=rf"shard {path} is \d+ bytes, the manifest"):
        training.run(_quick(records_copy, md))
    path.write_bytes(original)
    manifest = _manifest(records_copy)
    for shard in manifest["shards"]:
        shard["num_examples"] *= 10  # a manifest that promises 10x the records
    for split in manifest["splits"].values():  # consistent in itself, not with the shards
        split["num_examples"] *= 10
    (records_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(training.InputError, match=r"holds \d+ records, the manifest says"):
        training.run(_quick(records_copy, md))
    (records_copy / "manifest.json").write_text("{not json")
    with pytest.raises(training.InputError, match="manifest.json is not valid JSON"):
        training.run(_quick(records_copy, md))
    with pytest.raises(training.InputError, match="does not exist"):
        training.run(_quick(tmp_path / "nowhere", md))
    assert not md.exists()


def test_count_records_reads_the_framing(records_dir):
    manifest = json.loads(open(os.path.join(records_dir, "manifest.json")).read())
    for shard in manifest["shards"]:
        n, problem = shard_check.count_records(os.path.join(records_dir, shard["path"]))
        assert (n, problem) == (shard["num_examples"], None)


def test_full_disk_is_one_line_and_releases_the_lock(records_dir, tmp_path, monkeypatch):
    md = tmp_path / "m"

    def full(path, value, atomic=True):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(training.rundir.io, "write_json", full)
    with pytest.raises(OSError) as err:
        training.run(_quick(records_dir, md))
    assert training.expected_error(err.value) == (
        f"No space left on device, {md / 'config.json'}")
    assert not (md / "train.lock").exists()


def test_unexpected_errors_keep_their_traceback():
    assert training.expected_error(RuntimeError("bug")) is None
    assert training.expected_error(KeyError("bug")) is None
    assert training.expected_error(OSError(errno.ENOENT, "gone")) is None
    assert training.expected_error(ValueError("a\n  b")) == "a b"


def test_cli_prints_one_error_line_and_exits_1(records_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    base = [sys.executable, "-m", "leukemia_tf.cli.train", f"--model_dir={tmp_path / 'm'}",
            "--notensorboard", "--verbose=0"]
    cases = [([f"--records_dir={tmp_path / 'missing'}"], f"records dir {tmp_path / 'missing'}"),
             ([f"--records_dir={records_dir}", "--batch_size=-8"],
              "--batch_size must be at least 1")]
    for extra, expected in cases:
        out = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, out.stderr[-2000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "m").exists()


def test_duplicates_across_train_and_validation_warn_and_speed_is_measured(
        records_copy, tmp_path, caplog):
    manifest = _manifest(records_copy)
    manifest["duplicate_groups"] = [
        {"sha256": "a", "paths": ["x", "y"], "splits": ["train", "validation"], "folds": [0]},
        {"sha256": "b", "paths": ["z", "w"], "splits": ["train", "validation"], "folds": [1]},
        {"sha256": "c", "paths": ["u", "v"], "splits": ["train"], "folds": [0, 2]}]
    (records_copy / "manifest.json").write_text(json.dumps(manifest))
    cfg = C.replace(_quick(records_copy, tmp_path / "m"), data={"train_folds": (0, 2)})
    summary = training.run(cfg)
    expected = "1 group of byte-identical images is both in the training folds [0, 2] and in"
    assert any(expected in w for w in summary["warnings"]), summary["warnings"]
    assert expected in caplog.text
    # One epoch of two steps is enough to time the training speed.
    assert summary["train_images_per_sec"] and summary["train_images_per_sec"] > 0


def test_startup_warnings():
    assert distribution.startup_warnings("default", 1, 0, []) == []
    [mirrored] = distribution.startup_warnings("mirrored", 1, 0, [])
    assert "--strategy=mirrored with 1 device" in mirrored
    [cuda] = distribution.startup_warnings("default", 1, 0, ["nvidia-cudnn-cu12"])
    assert "tensorflow[and-cuda] is installed" in cuda and "no GPU" in cuda
    assert distribution.startup_warnings("one_device", 1, 1, ["nvidia-cudnn-cu12"]) == []
