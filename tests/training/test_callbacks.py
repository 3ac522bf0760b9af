"""The callbacks of a run: NaN guard, progress, history.csv, best checkpoint (tiny models)."""
import math

import numpy as np
import pandas as pd
import pytest
import tf_keras as keras

from leukemia_tf.training import callbacks as cb


def _model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    return model


def _data(n=16, nan_from=None):
    x = np.random.default_rng(0).random((n, 2)).astype(np.float32)
    y = (x[:, :1] > 0.5).astype(np.float32)
    if nan_from is not None:
        x[nan_from:] = np.nan
    return x, y


def test_nan_guard_stops_at_the_first_non_finite_loss():
    model = _model()
    guard = cb.NanGuard()
    x, y = _data(nan_from=8)     # batch 3 of 4 (batch size 4) is NaN
    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, callbacks=[guard], verbose=0)
    assert guard.tripped and guard.nan_at[:2] == (1, 3) and math.isnan(guard.nan_at[2])
    assert model.stop_training
    assert not guard.safe_to_save(model)     # tripped: savers skip
    assert not cb.weights_finite(model)      # the NaN step reached the weights


def test_nan_guard_leaves_a_finite_run_alone():
    model = _model()
    guard = cb.NanGuard()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[guard], verbose=0)
    assert not guard.tripped and guard.nan_at is None
    assert guard.safe_to_save(model) and cb.weights_finite(model)


def test_progress_and_history_number_epochs_from_one(tmp_path):
    model = _model()
    progress = cb.Throughput(global_batch=4)
    path = str(tmp_path / "history.csv")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[progress, cb.CsvHistory(path)],
              verbose=0)
    assert progress.first_epoch == 1 and progress.resumed_from_step == 0
    assert progress.images_per_sec > 0
    table = pd.read_csv(path)
    assert list(table["epoch"]) == [1, 2] and {"loss", "images_per_sec"} <= set(table)
    # A restarted run that repeats epoch 2 replaces its row instead of adding one.
    again = cb.CsvHistory(path)
    again.on_epoch_begin(1)
    again.on_epoch_end(1, {"loss": 0.25})
    table = pd.read_csv(path)
    assert list(table["epoch"]) == [1, 2] and table["loss"].iloc[-1] == 0.25


def test_best_checkpoint_keeps_only_finite_improvements(tmp_path):
    model = _model()
    guard = cb.NanGuard()
    best = cb.BestCheckpoint(str(tmp_path), "val_weighted_f1", chief=True, guard=guard)
    best.set_model(model)
    best.on_train_begin()
    for epoch, value in enumerate([0.5, float("nan"), 0.4, 0.7]):
        best.on_epoch_end(epoch, {"val_weighted_f1": value})
    state = pd.read_json(tmp_path / "best" / "state.json", typ="series")
    assert state["best"] == pytest.approx(0.7) and state["epoch"] == 4
    guard.nan_at = (5, 1, float("nan"))      # after a NaN stop nothing more is saved
    best.on_epoch_end(4, {"val_weighted_f1": 0.9})
    assert pd.read_json(tmp_path / "best" / "state.json", typ="series")["epoch"] == 4
