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


@pytest.mark.parametrize("monitor, values, stops_after", [
    ("val_auc", [0.70, 0.80, 0.79, 0.78, 0.90], 4),        # no gain in epochs 3 and 4
    ("val_loss", [0.60, 0.50, 0.55, 0.40, 0.70, 0.80], 6),
    ("val_weighted_f1", [0.5, 0.6, 0.7, 0.8], None),
])
def test_early_stopping_follows_the_monitor(tmp_path, monitor, values, stops_after):
    """--early_stopping_patience counts epochs without a gain in the --monitor measure
    (its Keras log key and direction: rundir.MONITOR_KEYS), patience 2 here."""
    from leukemia_tf.training import loop, rundir
    from tests.helpers import tiny_config
    cfg = tiny_config("R", tmp_path, monitor=monitor, early_stopping_patience=2)
    callbacks, _, _ = loop.make_callbacks(cfg, chief=False)
    [stopper] = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    stopper.set_model(_model())
    stopper.on_train_begin()
    key = rundir.MONITOR_KEYS[monitor][0]
    stopped = None
    for epoch, value in enumerate(values):
        stopper.on_epoch_end(epoch, {key: value})
        if stopper.model.stop_training:
            stopped = epoch + 1
            break
    assert stopped == stops_after


def test_early_stopping_needs_a_validation_monitor(tmp_path):
    from leukemia_tf.training import preflight
    from tests.helpers import tiny_config
    cfg = tiny_config("R", tmp_path, monitor="last", early_stopping_patience=3)
    with pytest.raises(ValueError, match="--early_stopping_patience needs a validation "
                                         "--monitor"):
        preflight.check_config(cfg)
