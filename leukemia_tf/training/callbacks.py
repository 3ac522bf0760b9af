"""The callbacks of a run: NaN guard, throughput, history.csv, best checkpoint, backup.

Order matters and is set in `loop.make_callbacks`: the NaN guard first (so nothing after
it saves weights of a diverged step), the backup last (so an epoch's backup is taken after
its history row and best checkpoint: a restart never skips an epoch's record).

Epochs are numbered from 1 everywhere a user reads them (history.csv, best/state.json,
summary.json, console); Keras numbers them from 0 internally.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Optional

import pandas as pd
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import io, signals
from leukemia_tf.training import rundir

log = logging.getLogger("leukemia_tf.training")


def weights_finite(model: keras.Model) -> bool:
    """True if every floating-point weight of `model` is finite (cheap: on device)."""
    for v in model.weights:
        if v.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(v))):
            return False
    return True


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss; `tripped` tells the savers to skip."""

    def __init__(self):
        super().__init__()
        self.nan_at = None  # (1-based epoch, step in epoch, loss)
        self._epoch = 0

    @property
    def tripped(self) -> bool:
        return self.nan_at is not None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and not self.tripped:
            self.nan_at = (self._epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True

    def safe_to_save(self, model: keras.Model) -> bool:
        return not self.tripped and weights_finite(model)


class Throughput(keras.callbacks.Callback):
    """Training images/s and the point a resumed run continues from.

    Throughput is the time between consecutive step ends within an epoch, so it covers
    input waits as well as compute; the first step of each epoch (tracing, cache fill
    start, validation hand-over) is not timed. One epoch of two or more steps is enough.
    """

    def __init__(self, global_batch: int):
        super().__init__()
        self.global_batch = global_batch
        self.first_epoch = None         # 1-based epoch this invocation started in
        self.resumed_from_step = 0
        self._steps, self._seconds, self._last = 0, 0.0, None
        self._epoch_steps, self._epoch_seconds = 0, 0.0

    def _note_start(self, epoch: int) -> None:
        self.first_epoch = epoch + 1
        self.resumed_from_step = int(self.model.optimizer.iterations.numpy())
        if self.resumed_from_step:
            log.info("resumed from epoch %d, step %d", self.first_epoch,
                     self.resumed_from_step)

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:  # after BackupAndRestore has restored the counters
            self._note_start(epoch)
        self._last, self._epoch_steps, self._epoch_seconds = None, 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the call: with steps_per_execution > 1 one call
        # runs several steps.
        now = time.perf_counter()
        if self._last is not None:
            self._epoch_steps += batch - self._last_batch
            self._epoch_seconds += now - self._last
        self._last, self._last_batch = now, batch

    def on_epoch_end(self, epoch, logs=None):
        self._steps += self._epoch_steps
        self._seconds += self._epoch_seconds
        if logs is not None and self._epoch_seconds > 0:
            logs["images_per_sec"] = self._epoch_steps * self.global_batch / self._epoch_seconds

    def on_train_end(self, logs=None):
        if self.first_epoch is None:  # restored after the last epoch: nothing left to run
            self.resumed_from_step = int(self.model.optimizer.iterations.numpy())
            log.info("resumed after the last epoch, step %d: exporting",
                     self.resumed_from_step)

    @property
    def images_per_sec(self) -> Optional[float]:
        return self._steps * self.global_batch / self._seconds if self._seconds else None


class CsvHistory(keras.callbacks.Callback):
    """history.csv that stays right across restarts: rows of epochs that a resumed run
    repeats are replaced, not duplicated. Rewritten whole each epoch (works on gs://,
    which cannot append). Epochs are numbered from 1."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:
            self.rows = []
            if io.exists(self.path):
                old = io.read_csv(self.path)
                self.rows = [r for r in old.to_dict("records") if int(r["epoch"]) <= epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        io.write_csv(self.path, pd.DataFrame(self.rows))


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Best weights by the run's `monitor` (config.MONITORS); the best value survives a
    restart. `last` keeps every epoch's weights in turn: the final epoch is exported.

    Never saves non-finite weights or a non-finite metric. It adopts best/state.json only
    when it was written for the same metric: the model dir rules (`rundir`) make sure the
    file belongs to this run's configuration and training lineage.
    """

    def __init__(self, model_dir: str, monitor: str, chief: bool, guard: NanGuard):
        self._state = io.join(model_dir, rundir.BEST, "state.json")
        key, mode = rundir.MONITOR_KEYS[monitor]
        super().__init__(io.join(model_dir, rundir.BEST, "weights"), monitor=key,
                         mode=mode, save_best_only=True, save_weights_only=True, verbose=0)
        self._chief = chief
        self._guard = guard

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = rundir.best_state(io.dirname(io.dirname(self._state)))
        if state and state.get("monitor") == self.monitor and math.isfinite(state["best"]):
            self.best = state["best"]

    def on_epoch_end(self, epoch, logs=None):
        logs = {**(logs or {}), "last_epoch": epoch + 1}  # what monitor `last` reads
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        if not self._guard.safe_to_save(self.model):
            return
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before and self._chief:
            io.write_json(self._state, {"best": float(self.best), "epoch": epoch + 1,
                                        "monitor": self.monitor})


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore every N steps *and* at every epoch end, of finite weights only;
    on SIGTERM/SIGINT (`leukemia_tf.signals`) also at the step where it stops.

    The backup is never deleted when training ends: it is the last state, from which a
    run interrupted after its last epoch finishes its export and a larger --epochs
    continues (`rundir`). After a NaN stop it is the last good one.

    Keras resumes a backup taken at an epoch's last step at the *next* epoch, skipping
    the epoch's validation and records: so the last step of an epoch never saves nor
    stops (its epoch end does both, after the history row and the best checkpoint).
    `save_freq` is always a step count (`EPOCH_ENDS_ONLY` for epoch ends only): a mid-epoch
    stop must resume mid-epoch, which Keras does only for step-counted backups.
    """

    EPOCH_ENDS_ONLY = sys.maxsize

    def __init__(self, backup_dir: str, save_freq: int, guard: NanGuard):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self._guard = guard
        self._save_on_stop = True

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except Exception as e:  # noqa: BLE001 - torn or garbled checkpoint files
            raise rundir.unreadable_backup(self.backup_dir, e) from e
        # Under multi-worker training a signal reaches one worker: a save there alone
        # would wait for peers that do not save. It stops without one (README "Cloud jobs").
        self._save_on_stop = not isinstance(self.model.distribute_strategy,
                                            tf.distribute.MultiWorkerMirroredStrategy)

    def _backup(self, epoch, batch=0):
        if self._guard.safe_to_save(self.model):
            super()._backup(epoch, batch)

    def _implements_train_batch_hooks(self):
        return True  # the stop check runs at every step

    def _steps(self):
        """Steps per epoch (from `fit`), inf when not known."""
        return (getattr(self, "params", None) or {}).get("steps") or math.inf

    def on_train_batch_end(self, batch, logs=None):
        # Keras records the first step of a call as the one saved; with
        # steps_per_execution > 1 the weights are those after its last step, so a restart
        # would repeat steps: record the last one (`batch`).
        state = self._training_state
        state._ckpt_saved_batch.assign(batch)
        state.backup_if_preempted()
        if batch + 1 >= self._steps():
            return  # the epoch's end saves and stops
        self._batches_count += 1
        if signals.requested():
            where = f"at epoch {self._current_epoch + 1} step {batch + 1}"
            if not self._save_on_stop:
                raise signals.stop(where + " (multi-worker: from the last periodic backup)")
            self._backup(self._current_epoch, batch)
            raise signals.stop(where)
        if self._batches_count >= self.save_freq:
            self._batches_count = 0
            self._backup(self._current_epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        self._backup(epoch=epoch)
        if signals.requested():
            raise signals.stop(f"at epoch {epoch + 1} step {self._steps()} (its end)")
