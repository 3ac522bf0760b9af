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
- An unfinished run without a backup (killed before its first backup, or crashed after
  training) starts over: its partial history, best weights and exports are replaced, so
  no earlier attempt's weights can be exported as this run's.
- A lock file `train.lock` (host, pid, start time) is created atomically; a second trainer
  refuses while it exists. A lock is stale when it names this host and a pid that is no
  longer running: it is then replaced, with a warning. Any other lock (another host, a
  running pid, an unreadable file) is reported with the command to remove it by hand.
  Under multi-worker training the chief takes the lock; other workers write nothing.
- `config.json` is written only after the config was validated and the model built.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from typing import List, Optional

from leukemia_tf import io
from leukemia_tf.config import Config
from leukemia_tf.config import upgrade as config_upgrade
from leukemia_tf.training.errors import RunDirError

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
         "logs", "export", "eval", "calibration.json")
# Fresh start of an unfinished run that has no backup: everything but its config.
PARTIAL = ("history.csv", SUMMARY, "model.keras", BEST, "logs", "export", "calibration.json")
IGNORED = {"train.model_dir", "train.verbose", "train.tensorboard", "train.overwrite",
           "train.backup_every_steps", "data.cache", "data.cache_budget_gb",
           "data.private_threadpool_size", "train.keras_progress", "train.jit_compile",
           "train.steps_per_execution", "train.inter_op_threads", "train.intra_op_threads",
           "data.cache_layout"}


@dataclasses.dataclass
class State:
    """What a model dir holds for this config: `new`, `resume` or `finished`."""
    status: str
    clean: tuple = ()               # owned names to delete before training
    summary: Optional[dict] = None  # summary.json of a finished run


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
    try:
        old = io.read_json(path)
    except ValueError as e:
        raise RunDirError(f"{path} is not valid JSON ({e}): pass --overwrite to start "
                          "fresh or choose another --model_dir") from e
    diffs = config_differences(config_upgrade(old), cfg.to_dict())
    if diffs:
        raise RunDirError(
            f"{model_dir} holds a run with other settings ({'; '.join(diffs)}): use the "
            "same flags to resume or reuse it, --overwrite to replace it, or another "
            "--model_dir")
    summary = read_summary(model_dir)
    if summary is not None and summary.get("status") == "ok":
        return State("finished", summary=summary)
    if has_backup(model_dir):
        return State("resume")
    return State("resume", clean=tuple(n for n in PARTIAL if n in owned))


def read_summary(model_dir: str) -> Optional[dict]:
    path = io.join(model_dir, SUMMARY)
    if not io.exists(path):
        return None
    try:
        return io.read_json(path)
    except ValueError:
        return None  # a torn summary is not a finished run


class Lock:
    """`<model_dir>/train.lock`: one trainer per model dir (see module docstring)."""

    def __init__(self, model_dir: str):
        self.path = io.join(model_dir, LOCK)
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> None:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(3):
            if io.create_exclusive(self.path, json.dumps(info).encode()):
                if self._holder().get("token") != self.token:  # lost a race (gs://)
                    break
                self.held = True
                return
            holder = self._holder()
            if not _stale(holder):
                break
            log.warning("removing stale lock %s: pid %s on this host (%s) is not running",
                        self.path, holder.get("pid"), holder.get("host"))
            if self._holder() == holder:
                io.remove(self.path)
        holder = self._holder()
        who = (f"host {holder.get('host')}, pid {holder.get('pid')}, since "
               f"{holder.get('started')}") if holder else "unreadable lock"
        raise RunDirError(
            f"{io.dirname(self.path)} is in use by another trainer ({who}), lock file "
            f"{self.path}: if no trainer runs there any more, delete that file and retry")

    def _holder(self) -> dict:
        try:
            value = io.read_json(self.path)
        except Exception:  # noqa: BLE001 - gone, torn or foreign: no holder we can name
            return {}
        return value if isinstance(value, dict) else {}

    def release(self) -> None:
        if self.held and self._holder().get("token") == self.token:
            io.remove(self.path)
        self.held = False


def _stale(holder: dict) -> bool:
    """Same host and a pid that is not running (a killed trainer)."""
    if not holder or holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def take(cfg: Config, lock: Lock) -> State:
    """Chief only: lock the model dir, re-check it, clean what must go, write config.json.

    Call after the model is built. Raises RunDirError (nothing written but the lock,
    which the caller releases).
    """
    model_dir = cfg.train.model_dir
    io.makedirs(model_dir)
    lock.acquire()
    state = inspect(cfg)  # again, under the lock: another run may have finished meanwhile
    if state.status == "finished":
        return state
    for name in state.clean:
        path = io.join(model_dir, name)
        log.info("removing %s (%s)", path, "--overwrite" if cfg.train.overwrite else
                 "left by an attempt that has no backup to resume from")
        if io.isdir(path):
            io.rmtree(path)
        else:
            io.remove(path)
    io.write_json(io.join(model_dir, CONFIG), cfg.to_dict())
    return state


def best_state(model_dir: str) -> Optional[dict]:
    """best/state.json ({best, epoch, monitor}) or None."""
    path = io.join(model_dir, BEST, "state.json")
    if not io.exists(path):
        return None
    try:
        return io.read_json(path)
    except ValueError:
        return None
