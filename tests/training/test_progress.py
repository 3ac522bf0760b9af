"""What a user sees while training: progress within an epoch, phase lines, the summary."""
import io as textio
import json
import os

import numpy as np
import pytest
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.training import progress_callback as pc
from tests.helpers import tiny_config


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _fit_with(display, epochs=2):
    model = keras.Sequential([keras.layers.Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile("sgd", "binary_crossentropy")
    x = np.random.default_rng(0).random((40, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("float32")
    model.fit(x, y, batch_size=8, epochs=epochs, validation_data=(x[:8], y[:8]),
              callbacks=[display], verbose=0)


def test_log_lines_give_step_rate_and_both_etas():
    out = textio.StringIO()  # not a terminal: plain lines, here at every step
    display = pc.EpochProgress(steps=5, epochs=2, global_batch=8, num_val=8, cache_fill=True,
                               stream=out, interval=0.0)
    _fit_with(display)
    text = out.getvalue()
    assert "\r" not in text  # no bar redraws in a log
    assert "epoch 1/2: reading, decoding and caching" in text
    assert "epoch 1/2 step 3/5, loss " in text and "epoch 2/2 step 5/5" in text
    step = next(line for line in text.splitlines() if line.startswith("epoch 2/2 step 2/5"))
    assert " img/s, epoch ETA " in step and ", run ETA " in step
    assert text.count("validation pass (8 images)") == 2
    assert "epoch 2/2 done in " in text and "val_loss" in text


def test_terminal_gets_a_bar():
    out = textio.StringIO()
    display = pc.EpochProgress(steps=5, epochs=2, global_batch=8, stream=out, bar=True,
                               interval=0.0)
    _fit_with(display)
    text = out.getvalue()
    assert "\r" in text and "epoch 1/2" in text and "5/5" in text
    assert "step 3/5," not in text  # the bar replaces the plain lines


def test_duration():
    assert [pc.duration(s) for s in (None, 5, 75.2, 3725)] == ["?", "5s", "1m15s", "1h02m"]


@pytest.mark.slow
def test_run_prints_phases_and_a_summary(records_dir, tmp_path, capsys):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=2, verbose=1)
    summary = training.run(cfg)
    out = capsys.readouterr().out
    assert "Epoch 1/2" not in out and " - loss: " not in out  # Keras' output is off
    assert "epoch 2/2 done in " in out and "validation pass (10 images)" in out
    assert "exporting the best weights to" in out
    assert "scoring the exported model on validation (10 images)" in out
    tail = out[out.index("SUMMARY"):]
    assert f"best epoch {summary['best_epoch']} of 2" in tail
    assert "on validation: the selection split" in tail
    ci = json.load(open(os.path.join(tmp_path, "m", "summary.json")))["validation_ci"]
    assert ci["unit"] == "patients" and ci["units"] == 2  # validation patients 5 and H5
    assert f"weighted F1  {summary['weighted_f1']:.3f} (no interval: 2 patients" in tail
    assert "WARNING: few patients: 2" in tail
    assert "per patient (" in tail and "called ALL" in tail
    assert f"model: {tmp_path / 'm'}/export" in tail and "leukemia-evaluate" in tail


def test_keras_progress_brings_back_keras_output(records_dir, tmp_path, capsys):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=1, verbose=2)
    cfg = C.replace(cfg, train={"keras_progress": True})
    training.run(cfg)
    out = capsys.readouterr().out
    assert "6/6 - " in out and " - loss: " in out  # Keras' verbose=2 epoch line
    assert "done in" not in out
    assert "SUMMARY" in out
