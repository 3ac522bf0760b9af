"""run(cfg) end to end per strategy, mixed precision, preemption and the CLI contract."""
import contextlib
import csv
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf.inference import loading
from leukemia_tf.model import registry as models
from leukemia_tf import training
from tests.helpers import REPO, tiny_config


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _wait_for(predicate, timeout, what, proc=None):
    """Poll until `predicate()` is true; fail the test (never pass silently) on timeout or
    when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the trainer exited (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_epochs(records_dir, tmp_path_factory):
    """One 2-epoch run with the phase display (verbose=1), trained once for the tests that
    read it: (config, model dir, summary, console output, leukemia_tf's INFO log)."""
    md = tmp_path_factory.mktemp("two_epochs") / "m"
    cfg = tiny_config(records_dir, md, epochs=2, verbose=1)
    out, log = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("leukemia_tf")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out):
            summary = training.run(cfg)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return cfg, md, summary, out.getvalue(), log.getvalue()


@pytest.mark.slow
def test_run_default_strategy_writes_the_contract(two_epochs):
    cfg, md, summary, _, log = two_epochs
    for name in ("config.json", "history.csv", "summary.json", "model.keras",
                 "export/saved_model.pb"):
        assert (md / name).exists(), name
    assert C.from_dict(json.load(open(md / "config.json"))) == cfg
    on_disk = json.load(open(md / "summary.json"))
    assert on_disk["weighted_f1"] == summary["validation"]["weighted_f1"]
    assert on_disk["validation"]["num_examples"] == 10  # every validation image, once
    assert on_disk["train_images_per_sec"] > 0 and on_disk["steps_per_epoch"] == 6
    rows = _history(md)
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # epochs from 1, as on the console
    assert on_disk["best_epoch"] in (1, 2) and on_disk["first_epoch"] == 1
    assert {"loss", "accuracy", "auc_approx", "precision", "recall", "weighted_f1",
            "val_weighted_f1", "val_auc_approx", "val_loss"} <= set(rows[0])
    # One AUC definition: the bucketed Keras AUC is never called plain "auc".
    assert not {"auc", "val_auc"} & set(rows[0]) and "roc_auc" in on_disk["validation"]
    assert not {"auc", "val_auc"} & set(on_disk["history"])
    # The start-up log says what the run computes on.
    assert "strategy default, 1 replica, precision float32" in log
    assert "global batch 8 = 8 per replica" in log and "devices:" in log
    # The exported model predicts like the in-memory one would, on uint8 input.
    images = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    from_keras = loading.load_model(str(md / "model.keras"))(images)
    from_saved = loading.load_model(str(md / "export"), trust_saved_model=True)(images)
    np.testing.assert_allclose(from_keras, from_saved, atol=1e-5)
    # A finished run keeps its last state (to extend it with more epochs), no lock.
    assert tf.train.latest_checkpoint(str(md / "backup" / "chief"))
    assert not (md / "train.lock").exists()


@pytest.mark.slow
def test_run_prints_phases_and_a_summary(two_epochs):
    _, md, summary, out, _ = two_epochs
    assert "Epoch 1/2" not in out and " - loss: " not in out  # Keras' output is off
    assert "epoch 2/2 done in " in out and "validation pass (10 images)" in out
    assert "exporting the best weights to" in out
    assert "scoring the exported model on validation (selection split), 10 images" in out
    tail = out[out.index("SUMMARY"):]
    assert f"best epoch {summary['best_epoch']} of 2" in tail
    assert "on validation (selection split): it chose the best epoch" in tail
    ci = json.load(open(md / "summary.json"))["validation_ci"]
    assert ci["unit"] == "patients" and ci["units"] == 2  # validation patients 5 and H5
    assert f"weighted F1  {summary['weighted_f1']:.3f} (no interval: 2 patients" in tail
    assert "WARNING: few patients: 2" in tail
    assert "per patient (" in tail and "called ALL" in tail
    assert f"model: {md}/export" in tail and "leukemia-evaluate" in tail


def _compiled(strategy, cfg):
    with strategy.scope():
        model = models.build_model(cfg.model, cfg.data.image_size)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    return model


def test_mirrored_two_devices_same_loss_as_one(records_dir, tmp_path):
    cfg = tiny_config(records_dir, tmp_path)
    cfg = C.replace(cfg, model={"name": "seed_cnn", "dropout": 0.0,
                                "augment": C.AugmentConfig(enabled=False)})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 48, 48, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (8, 1)).astype("float32")
    keras.utils.set_random_seed(1)
    single = _compiled(tf.distribute.get_strategy(), cfg)
    mirrored_strategy = training.make_strategy("mirrored")
    mirrored = _compiled(mirrored_strategy, cfg)
    mirrored.set_weights(single.get_weights())
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    loss_single = single.fit(ds, epochs=1, verbose=0).history["loss"][0]
    loss_mirrored = mirrored.fit(ds, epochs=1, verbose=0).history["loss"][0]
    assert mirrored_strategy.num_replicas_in_sync == 2
    assert loss_mirrored == pytest.approx(loss_single, rel=1e-5)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mixed_float16_layers_output_and_loss_scaling(records_dir, tmp_path):
    cfg = tiny_config(records_dir, tmp_path, mixed_precision="mixed_float16")
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = models.build_model(cfg.model, cfg.data.image_size)
    opt = training.make_optimizer(cfg, 10, "mixed_float16")
    assert isinstance(opt, keras.mixed_precision.LossScaleOptimizer) and opt.dynamic
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and not layer.name.startswith("normalize")]  # its float32 channel pickers
    assert convs and all(layer.compute_dtype == "float16" for layer in convs)
    out = model(np.zeros((2, 48, 48, 3), np.uint8))
    assert out.dtype == tf.float32
    assert training.resolve_precision("mixed_float16") == "mixed_float16"


def test_run_mixed_bfloat16_on_cpu(records_dir, tmp_path):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=1, steps_per_epoch=2,
                      mixed_precision="mixed_bfloat16")
    summary = training.run(cfg)
    assert summary["precision"] == "mixed_bfloat16" and np.isfinite(
        summary["history"]["loss"][0])


def test_impossible_combinations(records_dir, tmp_path):
    with pytest.raises(ValueError, match="also a training fold"):
        training.run(C.replace(tiny_config(records_dir, tmp_path), data={"val_split": "fold1"}))
    with pytest.raises(ValueError, match="not divisible"):
        training.run(tiny_config(records_dir, tmp_path, batch_size=7, strategy="mirrored"))
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        training.make_strategy("multi_worker")


def _train_cmd(records_dir, model_dir, *extra):
    return [sys.executable, "-m", "leukemia_tf.cli.train", f"--records_dir={records_dir}",
            f"--model_dir={model_dir}", "--model=resnet_small", "--width=8",
            "--image_size=48", "--batch_size=8", "--mixed_precision=float32",
            "--notensorboard", "--verbose=0", *extra]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO, **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _backup_saves(md):
    """How many backups the running trainer has taken (CheckpointManager's ckpt-N)."""
    state = md / "backup" / "chief" / "checkpoint"
    try:
        text = state.read_text()
    except OSError:
        return 0
    m = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', text)
    return int(m.group(1)) if m else 0


@pytest.mark.slow
def test_preemption_sigkill_resumes_from_backup(records_dir, tmp_path):
    md = tmp_path / "m"
    cmd = _train_cmd(records_dir, md, "--epochs=4", "--steps_per_epoch=12",
                     "--backup_every_steps=3", "--image_size=48")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # Epoch 1 takes 12 / 3 step backups and one at its end: the 6th backup is a step
        # backup inside epoch 2, the point this test kills at.
        _wait_for(lambda: _backup_saves(md) >= 6, 300, "a step backup in epoch 2", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the trainer ended before it was killed"
    assert not (md / "summary.json").exists()
    done_before = len(_history(md))
    assert done_before >= 1
    assert (md / "train.lock").exists()  # a killed trainer leaves its (stale) lock
    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.load(open(md / "summary.json"))
    assert summary["resumed_from_step"] > 12 * done_before  # not from step 0
    assert summary["first_epoch"] == done_before + 1
    assert [int(r["epoch"]) for r in _history(md)] == [1, 2, 3, 4]
    assert "validation (selection split) weighted F1" in rerun.stdout
    said = re.search(r"resumed from epoch (\d+), step (\d+)", rerun.stdout + rerun.stderr)
    assert said, rerun.stderr[-3000:]
    assert (int(said.group(1)), int(said.group(2))) == (summary["first_epoch"],
                                                        summary["resumed_from_step"])
    assert "removing stale lock" in rerun.stderr and not (md / "train.lock").exists()


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:  # TensorFlow's gRPC server binds without SO_REUSEPORT: free them
        s.close()
    return ports


def _run_two_workers(records_dir, md, logs):
    """Start two workers; return [(returncode, stdout, stderr)]. When one fails (e.g. its
    port was taken in between), the other is stopped instead of waiting for its peer."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs, files = [], []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            cmd = _train_cmd(records_dir, md, "--epochs=2", "--strategy=multi_worker",
                             "--backup_every_steps=2")
            out, err = open(logs / f"w{i}.out", "w+"), open(logs / f"w{i}.err", "w+")
            files.append((out, err))
            procs.append(subprocess.Popen(cmd, env=_env(TF_CONFIG=tf_config), stdout=out,
                                          stderr=err, text=True))
        _wait_for(lambda: all(p.poll() is not None for p in procs)
                  or any(p.poll() not in (None, 0) for p in procs), 400, "both workers")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    results = []
    for p, (out, err) in zip(procs, files):
        out.seek(0)
        err.seek(0)
        results.append((p.returncode, out.read(), err.read()))
        out.close()
        err.close()
    return results


@pytest.mark.slow
def test_multi_worker_two_processes_only_chief_writes(records_dir, tmp_path):
    """Two local workers with TF_CONFIG on loopback and one shared model dir, as on a
    cluster with a shared file system. Both finish; the chief alone writes (a second
    writer would double history.csv); workers' temporary copies are gone."""
    md = tmp_path / "shared_model_dir"
    for attempt in range(3):  # a port taken by another process in between: new ports
        results = _run_two_workers(records_dir, md, tmp_path)
        if not any("Could not start gRPC server" in err for _, _, err in results):
            break
    for code, _, err in results:
        assert code == 0, err[-3000:]
    summary = json.load(open(md / "summary.json"))
    assert summary["replicas"] == 2 and summary["strategy"] == "multi_worker"
    assert summary["validation"]["num_examples"] == 10
    assert (md / "export" / "saved_model.pb").exists()
    assert [int(r["epoch"]) for r in _history(md)] == [1, 2]
    assert not [p for p in md.rglob("*") if "workertemp" in str(p)]
    assert not (md / "train.lock").exists()  # the chief took the lock and released it
    assert "validation (selection split) weighted F1" in results[0][1]
    assert '"chief": false' in results[1][1]


def test_nan_loss_stops_with_a_readable_message(records_dir, tmp_path):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=2, optimizer="adam",
                      schedule="constant", learning_rate=1e38)
    with pytest.raises(FloatingPointError, match="lower --learning_rate"):
        training.run(cfg)
