"""The model dir a run owns: one configuration, one trainer at a time, no foreign state.

Rules (README "The trainer owns its model_dir"):
- A model dir belongs to the configuration in its `config.json`. Started again with the
  same settings it resumes an unfinished run (from `backup/`) or, when `summary.json`
  says the run finished, reports that and trains nothing. Started with other settings it
  refuses before writing anything and names the keys that differ. `overwrite=True`
  (`--overwrite`) deletes the files this trainer writes (`OWNED`) and starts fresh;
  anything else in the directory is left alone.
- Settings that do not change the model (`IGNORED`: where the dir is, logging, caching,
  backup frequency) may differ between a run and its resumption.
- Raising `epochs`, and changing nothing else, extends a run, finished or not: training
  continues from the last state in `backup/` up to the new count (see `EXTENDABLE`).
- `backup/` holds the last training state from the first backup on and is kept after the
  run finished (so it can be extended). Any interruption after the last epoch (export,
  final scoring, a full disk) therefore resumes there: the next run with the same flags
  restores the last epoch, trains nothing and finishes the export from `best/`.
- An unfinished run without a backup (killed before its first backup) starts over: its
  partial history, best weights and evaluations are replaced, so no earlier attempt's
  weights can be exported as this run's. A dir that holds an exported model
  (`model.keras`, `export/`) is never cleaned that way: it is refused, naming the file.
- A state file that does not parse is never read as "absent" (which would license a
  deletion): a torn `summary.json`, `config.json` or `history.csv` stops the run with one
  line naming the file. A torn `best/state.json` is rebuilt from history.csv (the best
  epoch's monitored value; the weights in best/ are that epoch's), or named when it cannot.
- A lock file `train.lock` (`leukemia_tf/lock.py`, shared with the converter) keeps a
  second trainer out. Under multi-worker training the chief takes the lock; other workers
  write nothing.
- `config.json` is written only after the config was validated and the model built.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import List, Optional

from leukemia_tf import io
from leukemia_tf import lock as lock_lib
from leukemia_tf import provenance
from leukemia_tf.config import Config, from_dict
from leukemia_tf.config import upgrade as config_upgrade
from leukemia_tf.training.trainer_errors import RunDirError, lost_worker

log = logging.getLogger("leukemia_tf.training")

CONFIG = "config.json"
SUMMARY = "summary.json"
LOCK = "train.lock"
BACKUP = "backup"
BEST = "best"
# Every name this trainer writes in a model dir. eval/ is written by `evaluate` from
# these weights: a report of deleted weights next to new ones would be wrong, so
# --overwrite removes it too.
OWNED = (CONFIG, "history.csv", SUMMARY, "model.keras", "preprocessing.json", BEST, BACKUP,
         "logs", "export", "eval", "calibration.json", provenance.TRAINED_ON)
# Fresh start of an unfinished run that has no backup: everything but its config (an
# exported model stops it first: `_start_over`).
PARTIAL = ("history.csv", SUMMARY, BEST, "logs", "eval", "calibration.json",
           provenance.TRAINED_ON)
EXPORTED = ("model.keras", "export")
# The one setting that may grow between a run and its continuation.
EXTENDABLE = "train.epochs"
HISTORY = "history.csv"
# `train.monitor` -> (the Keras log / history.csv column it reads, "max" or "min").
# `last` reads the epoch number (BestCheckpoint adds it to the logs as `last_epoch`;
# history.csv's `epoch`), so the final epoch is always the best one.
MONITOR_KEYS = {"val_auc": ("val_auc_approx", "max"), "val_loss": ("val_loss", "min"),
                "val_weighted_f1": ("val_weighted_f1", "max"),
                "last": ("last_epoch", "max")}
IGNORED = {"train.model_dir", "train.verbose", "train.tensorboard", "train.overwrite",
           "train.backup_every_steps", "data.cache", "data.cache_budget_gb",
           "data.private_threadpool_size", "train.keras_progress", "train.jit_compile",
           "train.steps_per_execution", "train.inter_op_threads", "train.intra_op_threads",
           "train.serving_dir", "train.tensorboard_dir", "train.from_environment"}


@dataclasses.dataclass
class State:
    """What a model dir holds for this config: `new`, `resume` or `finished`."""
    status: str
    clean: tuple = ()               # owned names to delete before training
    summary: Optional[dict] = None  # summary.json of a finished run
    extend: int = 0                 # config.json's epochs, when --epochs is larger


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_differences(old: dict, new: dict) -> List[str]:
    """`key: old -> new` for every setting (but IGNORED) that differs."""
    a, b = _flatten(old), _flatten(json.loads(json.dumps(new)))
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        if key in IGNORED:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{key}: {show(va)} in {CONFIG}, {show(vb)} now")
    return out


def has_backup(model_dir: str) -> bool:
    """True if BackupAndRestore left a checkpoint to resume from."""
    return io.exists(io.join(model_dir, BACKUP, "chief", "checkpoint"))


def backup_steps(model_dir: str) -> int:
    """Training steps the backup holds (0 without one): where a resumed run reads on."""
    import tensorflow as tf
    path = tf.train.latest_checkpoint(io.join(model_dir, BACKUP, "chief"))
    if not path:
        return 0
    try:
        return int(tf.train.load_checkpoint(path).get_tensor(
            "train_counter/.ATTRIBUTES/VARIABLE_VALUE"))
    except Exception:  # noqa: BLE001 - unreadable: the backup callback names it
        return 0


def inspect(cfg: Config) -> State:
    """Decide what to do with cfg.train.model_dir; reads only, raises RunDirError."""
    model_dir, overwrite = cfg.train.model_dir, cfg.train.overwrite
    if not io.isdir(model_dir):
        if io.exists(model_dir):
            raise RunDirError(f"model_dir {model_dir} is a file, not a directory")
        return State("new")
    owned = tuple(n for n in OWNED if io.exists(io.join(model_dir, n)))
    if overwrite:
        return State("new", clean=owned)
    path = io.join(model_dir, CONFIG)
    if not io.exists(path):
        if owned:
            raise RunDirError(
                f"{model_dir} holds training output ({', '.join(owned)}) but no {CONFIG}, "
                "so it cannot be resumed: pass --overwrite to replace it or choose another "
                "--model_dir")
        return State("new")
    extend = _compare(path, cfg)
    summary = read_summary(model_dir)
    if summary is not None and summary.get("status") == "ok" and not extend:
        return State("finished", summary=summary)
    if not has_backup(model_dir):
        if extend:
            raise RunDirError(
                f"{model_dir} kept no training state to continue from ({BACKUP}/ is "
                f"missing): train with the {CONFIG} epochs, or --overwrite to train "
                f"{cfg.train.epochs} epochs from the start")
        return _start_over(model_dir, owned)
    _check_history(model_dir)
    best_state(model_dir)  # unreadable and not recoverable: named before anything runs
    clean = (SUMMARY, "eval") if summary is not None else ()
    return State("resume", clean=tuple(n for n in clean if n in owned), extend=extend)


def _compare(path: str, cfg: Config) -> int:
    """Refuse other settings; config.json's epochs when only the epochs grew (an
    extension), else 0."""
    try:
        old = io.read_json(path)
    except ValueError as e:
        raise RunDirError(f"{e}: pass --overwrite to start fresh or choose another "
                          "--model_dir") from None
    if not isinstance(old, dict):
        raise RunDirError(f"{path} is not a run configuration (a JSON object expected): "
                          "pass --overwrite to start fresh or choose another --model_dir")
    old = config_upgrade(old)
    diffs = config_differences(old, cfg.to_dict())
    if not diffs:
        return 0
    before = _flatten(old).get(EXTENDABLE)
    if (len(diffs) == 1 and diffs[0].startswith(EXTENDABLE + ":")
            and isinstance(before, int) and cfg.train.epochs > before):
        return before
    raise RunDirError(
        f"{cfg.train.model_dir} holds a run with other settings ({'; '.join(diffs)}): "
        "use the same flags to resume or reuse it (or only a larger --epochs to extend it), "
        "--overwrite to replace it, or another --model_dir")


def _start_over(model_dir: str, owned: tuple) -> State:
    """An unfinished run without a backup: start again, unless a model was exported."""
    exported = [n for n in EXPORTED if n in owned]
    if exported:
        raise RunDirError(
            f"{io.join(model_dir, exported[0])} is an exported model, but the run has no "
            f"{SUMMARY} and no {BACKUP}/ to finish from: keep it (evaluate and predict can "
            "use it) and train in another --model_dir, or pass --overwrite to replace it")
    return State("resume", clean=tuple(n for n in PARTIAL if n in owned))


def _check_history(model_dir: str) -> None:
    path = io.join(model_dir, HISTORY)
    if not io.exists(path):
        return
    try:
        table = io.read_csv(path)
        if len(table) and "epoch" not in table.columns:
            raise ValueError("no epoch column")
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a garbled file
        raise RunDirError(
            f"{path} cannot be read ({' '.join(str(e).split())[:100]}): restore it, or "
            f"delete it to resume from {BACKUP}/ without the earlier epochs' rows, or "
            "--overwrite") from None


def read_summary(model_dir: str) -> Optional[dict]:
    """summary.json, None when absent; RunDirError naming it when it does not parse (a
    torn summary says nothing about the run, and must not license a retrain)."""
    path = io.join(model_dir, SUMMARY)
    if not io.exists(path):
        return None
    try:
        value = io.read_json(path)
    except ValueError as e:
        raise RunDirError(
            f"{e}: the run's weights are kept; delete it to finish the run again from "
            f"{BACKUP}/ and {BEST}/ (no retraining), or --overwrite to train again") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path} is not a run summary: delete it to finish the run again")
    return value


class Lock(lock_lib.Lock):
    """`<model_dir>/train.lock`: one trainer per model dir (`leukemia_tf/lock.py`)."""

    def __init__(self, model_dir: str):
        super().__init__(model_dir, LOCK, "trainer", RunDirError)


def take(cfg: Config, lock: Lock, records: Optional[dict] = None) -> State:
    """Chief only: lock the model dir, re-check it, clean what must go, write config.json
    and (given `records`, `provenance.records_record`) trained_on.json.

    Call after the model is built. Raises RunDirError (nothing written but the lock,
    which the caller releases), also when a resumed run's records were converted again.
    """
    model_dir = cfg.train.model_dir
    io.makedirs(model_dir)
    lock.acquire()
    state = inspect(cfg)  # again, under the lock: another run may have finished meanwhile
    if state.status == "finished":
        return state
    if records is not None and provenance.TRAINED_ON not in state.clean:
        provenance.check_records(
            model_dir, cfg.data.records_dir, now=records["manifest_sha256"], error=RunDirError,
            remedy="its earlier epochs were trained on other records; resume with those "
                   "records, or train on these with --overwrite or another --model_dir")
    if state.extend:
        log.info("extending the run in %s from %d to %d epochs", model_dir, state.extend,
                 cfg.train.epochs)
    why = ("--overwrite" if cfg.train.overwrite else
           "the run is extended: they describe the shorter run" if state.extend else
           "left by an attempt that has no backup to resume from")
    for name in state.clean:
        path = io.join(model_dir, name)
        log.info("removing %s (%s)", path, why)
        if io.isdir(path):
            io.rmtree(path)
        else:
            io.remove(path)
    _repair_best_state(model_dir)
    remove_temporaries(model_dir)
    io.write_json(io.join(model_dir, CONFIG), cfg.to_dict())
    if records is not None:
        provenance.write_trained_on(model_dir, records)
    return state


def remove_temporaries(model_dir: str) -> None:
    """Remove what a failed checkpoint save leaves (TensorFlow writes `<prefix>_temp/`
    and renames it; a full disk leaves it, often empty). Only while holding the lock."""
    for folder in (io.join(model_dir, BEST), io.join(model_dir, BACKUP, "chief")):
        if not io.isdir(folder):
            continue
        for name in io.listdir(folder):
            if name.endswith("_temp") and io.isdir(io.join(folder, name)):
                io.rmtree(io.join(folder, name))


def _repair_best_state(model_dir: str) -> None:
    """Write back a best/state.json that `best_state` had to rebuild from history.csv."""
    path = io.join(model_dir, BEST, "state.json")
    if not io.exists(path):
        return
    try:
        io.read_json(path)
    except ValueError:
        io.write_json(path, best_state(model_dir))


def best_state(model_dir: str) -> Optional[dict]:
    """best/state.json ({best, epoch, monitor}) or None when there is none.

    A torn file is rebuilt from history.csv: best/ holds the weights of the epoch with
    the highest monitored value so far, which is that row. RunDirError naming the file
    when neither can be read.
    """
    path = io.join(model_dir, BEST, "state.json")
    if not io.exists(path):
        return None
    try:
        state = io.read_json(path)
        if isinstance(state, dict) and {"best", "epoch", "monitor"} <= set(state):
            return state
        problem = "lacks best, epoch or monitor"
    except ValueError as e:
        problem = e.detail if hasattr(e, "detail") else str(e)
    recovered = _best_from_history(model_dir)
    if recovered is None:
        raise RunDirError(
            f"{path} cannot be read ({problem}) and {HISTORY} does not say which epoch is "
            f"best: delete {io.join(model_dir, BEST)} to drop the best weights (training "
            f"resumes from {BACKUP}/), or --overwrite")
    log.warning("%s cannot be read (%s): best epoch %d (%s %.4f) taken from %s", path,
                problem, recovered["epoch"], recovered["monitor"], recovered["best"], HISTORY)
    return recovered


def _best_from_history(model_dir: str) -> Optional[dict]:
    try:
        monitor = from_dict(io.read_json(io.join(model_dir, CONFIG))).train.monitor
        key, mode = MONITOR_KEYS[monitor]
        table = io.read_csv(io.join(model_dir, HISTORY))
        values = table["epoch" if monitor == "last" else key].astype(float)
        finite = values[values.map(math.isfinite)]
        row = table.loc[finite.idxmax() if mode == "max" else finite.idxmin()]
        return {"best": float(values[row.name]), "epoch": int(row["epoch"]), "monitor": key}
    except Exception:  # noqa: BLE001 - missing, empty or garbled: nothing to recover
        return None


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(text.splitlines()[0].split())[:160] if text.strip() else type(exc).__name__


def unreadable_backup(backup_dir: str, exc: BaseException) -> BaseException:
    """The error for a backup that cannot be restored (torn or garbled checkpoint)."""
    if lost_worker(exc) is not None:
        return exc
    return RunDirError(
        f"the backup {backup_dir} cannot be read ({_first_line(exc)}): best/ and history.csv "
        f"are kept; delete {backup_dir} to train again from epoch 1 (a finished export then "
        "needs --overwrite), or --overwrite")


def load_best(model, model_dir: str) -> bool:
    """Load best/weights into `model`; False when there are none. RunDirError naming the
    files when they are torn or garbled."""
    prefix = io.join(model_dir, BEST, "weights")
    if best_state(model_dir) is None or not io.exists(prefix + ".index"):
        return False
    try:
        model.load_weights(prefix)
    except Exception as e:  # noqa: BLE001 - tf raises many types for a broken checkpoint
        raise RunDirError(
            f"the best weights {prefix} (.index, .data-*) cannot be read ({_first_line(e)}): "
            f"the last state in {io.join(model_dir, BACKUP)} is kept; delete "
            f"{io.join(model_dir, BEST)} to export the last epoch's weights instead, or "
            "--overwrite") from None
    return True
