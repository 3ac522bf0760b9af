"""One writer per folder: the lock file the trainer (`train.lock`) and the converter
(`convert.lock`) take before they change anything in their output dir.

A lock file (host, pid, token, start time) is created atomically; a second writer refuses
while it exists. A lock is stale when it names this host and a pid that is no longer
running (a killed writer): it is then replaced, with a warning. Any other lock (another
host, a running pid, an unreadable file) is reported with the command to remove it by
hand: only a person can know that a writer on another machine is gone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Type

from leukemia_tf import io
from leukemia_tf.errors import UserError

log = logging.getLogger("leukemia_tf")


class LockError(UserError):
    """Another writer holds the folder; the message names the lock file."""


class Lock:
    """`<folder>/<name>`: held by one `who` ("trainer", "converter") at a time."""

    def __init__(self, folder: str, name: str, who: str,
                 error: Type[Exception] = LockError):
        self.path = io.join(folder, name)
        self.who = who
        self.error = error
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> None:
        """Take the lock or raise `error` naming its holder and the lock file."""
        info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(3):
            if io.create_exclusive(self.path, json.dumps(info).encode()):
                if self._holder().get("token") != self.token:  # lost a race (gs://)
                    break
                self.held = True
                return
            holder = self._holder()
            if not stale(holder):
                break
            log.warning("removing stale lock %s: pid %s on this host (%s) is not running",
                        self.path, holder.get("pid"), holder.get("host"))
            if self._holder() == holder:
                io.remove(self.path)
        holder = self._holder()
        whom = (f"host {holder.get('host')}, pid {holder.get('pid')}, since "
                f"{holder.get('started')}") if holder else "unreadable lock"
        raise self.error(
            f"{io.dirname(self.path)} is in use by another {self.who} ({whom}), lock file "
            f"{self.path}: if no {self.who} runs there any more, delete that file and retry")

    def _holder(self) -> dict:
        try:
            value = io.read_json(self.path)
        except Exception:  # noqa: BLE001 - gone, torn or foreign: no holder we can name
            return {}
        return value if isinstance(value, dict) else {}

    def release(self) -> None:
        """Remove the lock file if this object still holds it."""
        if self.held and self._holder().get("token") == self.token:
            io.remove(self.path)
        self.held = False

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def stale(holder: dict) -> bool:
    """Same host and a pid that is not running (a killed writer)."""
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


def is_held(folder: str, name: str) -> bool:
    """True when `<folder>/<name>` exists and is not stale: a live writer (or one on
    another host, or an unreadable lock file) holds the folder. For readers that must not
    read a folder while its writer changes it."""
    lock = Lock(folder, name, "")
    holder = lock._holder()
    return io.exists(lock.path) and not stale(holder)
