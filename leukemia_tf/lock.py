"""One writer per folder: the lock file the trainer (`train.lock`) and the converter
(`convert.lock`) take before they change anything in their output dir.

A lock is a lease. The file (host, pid, token, start time, renewal time) is created
atomically; while the holder runs, a daemon thread renews it every `RENEW_SECONDS`
(rewriting the file through `io`, so gs:// works). A second writer refuses while the lock
is live. A lock is taken over, with a warning naming its holder, when
- it names this host and a pid that is not running (a killed writer): at once;
- it has not been renewed for `LEASE_SECONDS` (120 s), from any host: a writer that was
  preempted, or whose VM is gone, cannot renew it. A managed job restarted on another VM
  (a new hostname) therefore waits at most the lease, and never needs a person: a
  writer that finds the lock of another host watches it, refusing as soon as it is
  renewed (a live holder renews every `RENEW_SECONDS`) and taking it over once the
  lease ran out. On this host the holder's pid tells at once (a pid that is now this
  very process, in a restarted container, is not the holder).
Two live writers never share a folder: a live holder renews well within the lease. The
rule assumes the hosts' clocks agree within a fraction of the lease (NTP, as on cloud
VMs). A lock without a readable renewal or start time is never taken over: the message
names the file to delete by hand.
"""
from __future__ import annotations

import calendar
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional, Type

from leukemia_tf import io
from leukemia_tf.errors import UserError

log = logging.getLogger("leukemia_tf")

LEASE_SECONDS = 120.0   # not renewed for this long: taken over from any host
RENEW_SECONDS = 30.0    # the holder's renewal interval
_HELD: set = set()      # tokens of the locks this process holds


class LockError(UserError):
    """Another writer holds the folder; the message names the lock file."""


def hostname() -> str:
    """This host's name, as lock files record it."""
    return socket.gethostname()


class Lock:
    """`<folder>/<name>`: held by one `who` ("trainer", "converter") at a time."""

    def __init__(self, folder: str, name: str, who: str,
                 error: Type[Exception] = LockError):
        self.path = io.join(folder, name)
        self.who = who
        self.error = error
        self.token = uuid.uuid4().hex
        self._record: dict = {}
        self.held = False
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None

    def _info(self) -> dict:
        now = time.time()
        return {"host": hostname(), "pid": os.getpid(), "token": self.token,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "renewed": now}

    def acquire(self) -> None:
        """Take the lock or raise `error` naming its holder and the lock file."""
        self._record = self._info()
        for _ in range(3):
            if io.create_exclusive(self.path, json.dumps(self._record).encode()):
                if self._holder().get("token") != self.token:  # lost a race (gs://)
                    break
                self.held = True
                _HELD.add(self.token)
                self._start_renewing()
                return
            holder = self._holder()
            why = takeover_reason(holder)
            if why is None and self._wait_for_lease(holder):
                continue
            if why is None:
                break
            log.warning("%s %s: %s", "removing stale lock" if "not running" in why else
                        "taking over lock", self.path, why)
            if self._holder() == holder:
                io.remove(self.path)
        raise self.error(self._refusal(self._holder()))

    def _wait_for_lease(self, holder: dict) -> bool:
        """Watch the lock of a holder on another host (this host checks its pid instead):
        False as soon as it is renewed or replaced (a live holder), True once its lease
        ran out or it was removed (take over or retry)."""
        renewed = last_renewed(holder)
        if renewed is None or _alive_here(holder):
            return False
        log.warning("%s is held by host %s, pid %s, renewed %.0f s ago: waiting for a "
                    "renewal (then refusing) or for its lease to run out (then taking over)",
                    self.path, holder.get("host"), holder.get("pid"), time.time() - renewed)
        while time.time() - renewed <= LEASE_SECONDS:
            time.sleep(min(1.0, RENEW_SECONDS / 4))
            now = self._holder()
            if now != holder:
                return not now
        return True

    def _refusal(self, holder: dict) -> str:
        whom = (f"host {holder.get('host')}, pid {holder.get('pid')}, since "
                f"{holder.get('started')}") if holder else "unreadable lock"
        age = last_renewed(holder)
        lease = (f"; renewed {time.time() - age:.0f} s ago, taken over once not renewed "
                 f"for {LEASE_SECONDS:.0f} s" if age is not None else "")
        return (f"{io.dirname(self.path)} is in use by another {self.who} ({whom}{lease}), "
                f"lock file {self.path}: if no {self.who} runs there any more, delete that "
                "file and retry")

    def _holder(self) -> dict:
        return read_holder(self.path)

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, daemon=True,
                                         name=f"renew {self.path}")
        self._renewer.start()

    def _renew(self) -> None:
        """Rewrite the lock with a new renewal time until released (or taken over)."""
        while not self._stop.wait(RENEW_SECONDS):
            try:
                holder = self._holder()
                if holder.get("token") != self.token:
                    log.warning("lock %s is no longer this %s's (%s): not renewing it",
                                self.path, self.who,
                                f"taken over by host {holder.get('host')}, pid "
                                f"{holder.get('pid')}" if holder else "removed")
                    return
                io.write_json(self.path, {**self._record, "renewed": time.time()})
            except Exception as e:  # noqa: BLE001 - retried at the next renewal
                log.warning("could not renew lock %s (%s); retrying", self.path, e)

    def release(self) -> None:
        """Stop renewing; remove the lock file if this object still holds it."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=10)
        self._renewer = None
        if self.held and self._holder().get("token") == self.token:
            io.remove(self.path)
        self.held = False
        _HELD.discard(self.token)

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_holder(path: str) -> dict:
    """The lock file's content, {} when absent, torn or not a JSON object."""
    try:
        value = io.read_json(path)
    except Exception:  # noqa: BLE001 - gone, torn or foreign: no holder we can name
        return {}
    return value if isinstance(value, dict) else {}


def last_renewed(holder: dict) -> Optional[float]:
    """When the holder last renewed its lock (Unix time), else its start, else None."""
    renewed = holder.get("renewed")
    if isinstance(renewed, (int, float)) and not isinstance(renewed, bool):
        return float(renewed)
    try:
        return float(calendar.timegm(time.strptime(holder["started"], "%Y-%m-%dT%H:%M:%SZ")))
    except (KeyError, TypeError, ValueError):
        return None


def takeover_reason(holder: dict) -> Optional[str]:
    """Why the lock of `holder` may be taken over, or None while it is live."""
    if not holder:
        return None
    if holder.get("host") == hostname() and _pid_gone(holder.get("pid")):
        return f"pid {holder.get('pid')} on this host ({holder.get('host')}) is not running"
    if (holder.get("host") == hostname() and str(holder.get("pid")) == str(os.getpid())
            and holder.get("token") not in _HELD):
        return (f"pid {holder.get('pid')} on this host ({holder.get('host')}) is this "
                "process now (a restarted container), not the holder: it is not running")
    renewed = last_renewed(holder)
    if renewed is not None and time.time() - renewed > LEASE_SECONDS:
        return (f"host {holder.get('host')}, pid {holder.get('pid')} has not renewed it "
                f"for {time.time() - renewed:.0f} s (lease {LEASE_SECONDS:.0f} s)")
    return None


def stale(holder: dict) -> bool:
    """True when the lock of `holder` may be taken over (`takeover_reason`)."""
    return takeover_reason(holder) is not None


def live_holder(folder: str, name: str) -> Optional[dict]:
    """The holder of `<folder>/<name>` while its lock is live (a writer is at work, or
    may be: an unreadable lock counts), else None."""
    path = io.join(folder, name)
    if not io.exists(path):
        return None
    holder = read_holder(path)
    return None if stale(holder) else (holder or {"path": path})


def _alive_here(holder: dict) -> bool:
    """The holder runs on this host (its pid is running)."""
    return holder.get("host") == hostname() and not _pid_gone(holder.get("pid"))


def _pid_gone(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError):
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
