"""The converter: shards, manifest, resume, kill -9, verify, bad input, ram://."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf.data import cnmc, convert, images, preprocess, records
from leukemia_tf.data import manifest as manifest_lib
from tests.helpers import REPO, REAL_SAMPLES, build_tree, real_sample_paths


def _cfg(data_dir, out, **kw):
    kw.setdefault("num_workers", 1)
    kw.setdefault("progress", False)
    return convert.ConvertConfig(data_dir=data_dir, output_dir=str(out), **kw)


def _read_all(out, manifest):
    rows = []
    for shard in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(str(out), shard["path"])):
            rows.append(records.parse_example(raw))
    return rows


def test_real_samples_convert_pixel_exact(real_tree, tmp_path):
    out = tmp_path / "rec"
    manifest = convert.convert(_cfg(real_tree, out))
    assert manifest["splits"]["train"]["num_examples"] == 7
    assert manifest["splits"]["validation"]["num_examples"] == 1
    # Compare with the original sample files, not the copy the converter read.
    originals = {os.path.relpath(p, os.path.join(REAL_SAMPLES, cnmc.ROOT_NAME)): p
                 for p in real_sample_paths()}
    seen = set()
    for ex in _read_all(out, manifest):
        rel = ex["image/source_path"].numpy().decode()
        src = open(originals[rel], "rb").read()
        pixels = records.decoder("png", 450)(ex).numpy()
        np.testing.assert_array_equal(pixels, tf.io.decode_bmp(src, channels=3).numpy())
        assert ex["image/sha256"].numpy().decode() == hashlib.sha256(src).hexdigest()
        seen.add(rel)
    assert seen == set(originals) and len(seen) == 8
    val = [e for e in _read_all(out, manifest) if e["image/split"].numpy() == b"validation"][0]
    assert val["image/patient_id"].numpy() == b"53" and val["image/class/label"].numpy() == 1


def test_tree_all_splits_canvas_and_manifest(tiny_tree, tmp_path):
    out = tmp_path / "rec"
    manifest = convert.convert(_cfg(tiny_tree, out, num_shards=2, num_workers=2))
    s = manifest["splits"]
    assert s["train"]["num_examples"] == 12
    assert s["train"]["by_label"] == {"all": 6, "hem": 6, "unlabeled": 0}
    assert s["train"]["by_fold"] == {"0": 4, "1": 4, "2": 4}
    assert s["validation"]["num_examples"] == 4 and s["test"]["num_examples"] == 3
    assert s["test"]["by_label"]["unlabeled"] == 3
    names = sorted(sh["path"] for sh in manifest["shards"])
    assert "train-fold0-00000-of-00002.tfrecord" in names
    assert "test-00001-of-00002.tfrecord" in names
    assert sum(sh["num_examples"] for sh in manifest["shards"]) == 19
    # Test images (600x600) are stored as decoded; the one preprocessing function
    # centre-crops them to the 450 canvas without rescaling when they are read.
    assert manifest["settings"]["stored_size"] == 0
    for ex in _read_all(out, manifest):
        if ex["image/split"].numpy() == b"test":
            rel = ex["image/source_path"].numpy().decode()
            src = images.decode_bmp(open(os.path.join(tiny_tree, rel), "rb").read())
            got = records.decoder("png", 0)(ex).numpy()
            np.testing.assert_array_equal(got, src)
            np.testing.assert_array_equal(preprocess.to_canvas(got, 450).numpy(),
                                          src[75:525, 75:525])
            assert ex["image/class/label"].numpy() == -1 and ex["image/fold"].numpy() == -1
    assert convert.verify(str(out))["examples"] == 19
    summary = manifest_lib.summarize(manifest).splitlines()
    assert [line.split()[:2] for line in summary[1:4]] == [["train", "12"],
                                                           ["validation", "4"], ["test", "3"]]


def test_stored_resize_and_raw(tiny_tree, tmp_path):
    manifest = convert.convert(_cfg(tiny_tree, tmp_path / "r", encoding="raw", image_size=64))
    ex = _read_all(tmp_path / "r", manifest)[0]
    assert ex["image/height"].numpy() == 64
    assert records.decoder("raw", 64)(ex).shape == (64, 64, 3)


def test_duplicates_across_folds_warn(tiny_tree, tmp_path):
    fold0 = os.path.join(tiny_tree, "training_data", "fold_0", "all")
    src = os.path.join(fold0, sorted(os.listdir(fold0))[0])
    dst = os.path.join(tiny_tree, "training_data", "fold_2", "all", "UID_77_1_1_all.bmp")
    open(dst, "wb").write(open(src, "rb").read())
    manifest = convert.convert(_cfg(tiny_tree, tmp_path / "r"))
    assert len(manifest["duplicates"]) == 1 and len(manifest["duplicates"][0]) == 2
    assert manifest["duplicate_groups"][0]["folds"] == [0, 2]
    assert any("cross training folds" in w for w in manifest["warnings"])


def test_rerun_skips_verified_shards_and_rewrites_damaged(tiny_tree, tmp_path):
    out = tmp_path / "r"
    first = convert.convert(_cfg(tiny_tree, out, num_shards=2))
    second = convert.convert(_cfg(tiny_tree, out, num_shards=2))
    assert second["stats"]["reused_shards"] == len(first["shards"])
    assert second["stats"]["encoded_images"] == 0
    assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in first["shards"]]
    victim = os.path.join(str(out), first["shards"][0]["path"])
    with open(victim, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(convert.ConvertError, match="checksum mismatch"):
        convert.verify(str(out))
    third = convert.convert(_cfg(tiny_tree, out, num_shards=2))
    assert third["stats"]["reused_shards"] == len(first["shards"]) - 1
    assert convert.verify(str(out))["examples"] == 19
    # Other settings (a new seed) mean another plan: nothing is reused, stale files go.
    fourth = convert.convert(_cfg(tiny_tree, out, num_shards=1, seed=5))
    assert fourth["stats"]["reused_shards"] == 0
    shards = [n for n in os.listdir(out) if n.endswith(".tfrecord")]
    assert sorted(shards) == sorted(s["path"] for s in fourth["shards"])


def test_ram_filesystem(tiny_tree):
    out = "ram://leukemia_tf_test/records"
    manifest = convert.convert(_cfg(tiny_tree, out))
    assert tf.io.gfile.exists(out + "/manifest.json")
    assert convert.verify(out)["examples"] == 19
    assert manifest["splits"]["validation"]["num_examples"] == 4


def _corrupt(tree, kind):
    d = os.path.join(tree, "training_data", "fold_1", "hem")
    path = os.path.join(d, sorted(os.listdir(d))[0])
    data = open(path, "rb").read()
    if kind == "truncated":
        open(path, "wb").write(data[: len(data) // 2])
    elif kind == "zero_bytes":
        open(path, "wb").close()
    elif kind == "corrupt_header":
        open(path, "wb").write(b"BM" + os.urandom(60) + data[62:])
    elif kind == "not_an_image":
        open(path, "wb").write(b"<html>this is not a bitmap</html>" * 10)
    return os.path.relpath(path, tree)


@pytest.mark.parametrize("kind, reason", [
    ("truncated", "truncated BMP"), ("zero_bytes", "empty file"),
    ("corrupt_header", "BMP"), ("not_an_image", "not an image"),
])
def test_bad_image_stops_or_is_recorded(tiny_tree, tmp_path, kind, reason):
    rel = _corrupt(tiny_tree, kind)
    with pytest.raises(convert.ConvertError, match=reason) as err:
        convert.convert(_cfg(tiny_tree, tmp_path / "a"))
    assert rel in str(err.value)
    assert not os.path.exists(tmp_path / "a" / "manifest.json")
    assert not os.path.exists(tmp_path / "a" / convert.LOCK)  # released on the error too
    manifest = convert.convert(_cfg(tiny_tree, tmp_path / "b", on_error="skip"))
    assert [s["path"] for s in manifest["skipped"]] == [rel]
    assert reason in manifest["skipped"][0]["reason"]
    assert manifest["splits"]["train"]["num_examples"] == 11
    assert any("skipped" in w for w in manifest["warnings"])


def test_bad_tree_entries_are_recorded_in_the_manifest(tiny_tree, tmp_path):
    os.makedirs(os.path.join(tiny_tree, "training_data", "fold_0", "blast"))
    open(os.path.join(tiny_tree, "training_data", "fold_0", "blast", "x.bmp"), "wb").close()
    with pytest.raises(cnmc.CnmcError, match="unknown class folder"):
        convert.convert(_cfg(tiny_tree, tmp_path / "a"))
    manifest = convert.convert(_cfg(tiny_tree, tmp_path / "b", on_error="skip"))
    assert manifest["skipped"][0]["path"] == "training_data/fold_0/blast/x.bmp"


@pytest.mark.slow
def test_cli_exit_status_and_kill9_resume(tmp_path):
    tree = build_tree(str(tmp_path / "data"), per_class_per_fold=2, n_val=4, n_test=2)
    out = tmp_path / "rec"
    cmd = [sys.executable, "-m", "leukemia_tf.cli.convert",
           f"--data_dir={tree}", f"--output_dir={out}", "--num_shards=4", "--num_workers=1",
           "--png_compression=9", "--noprogress"]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / ".progress"
    deadline = time.time() + 120
    while not (progress.exists() and len(list(progress.glob("*.json"))) >= 2):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the converter never finished two shards (or ended before the kill)")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "killed run must not look complete"
    with pytest.raises(convert.ConvertError, match="no complete conversion"):
        manifest_lib.load(str(out))
    done = len(list(progress.glob("*.json")))
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["stats"]["reused_shards"] >= done - 1 >= 1
    assert manifest["splits"]["train"]["num_examples"] == 12
    assert not [n for n in os.listdir(out) + os.listdir(progress) if ".tmp-" in n]
    verify = subprocess.run(cmd[:3] + [f"--output_dir={out}", "--verify"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and "verified" in verify.stdout
    bad = subprocess.run(cmd[:3] + [f"--data_dir={tmp_path}/nothing", f"--output_dir={out}2"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines()[-1] == (
        f"error: --data_dir: {tmp_path}/nothing does not exist (the C-NMC_Leukemia folder "
        "or the folder above it was expected)")
