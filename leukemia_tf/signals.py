"""SIGTERM and SIGINT: stop at a safe point, say where, exit with the signal's status.

A cloud VM that is preempted (spot VMs, Vertex AI, GKE) gets SIGTERM and a grace period
(about 30 s on Compute Engine) before the kill; Ctrl-C is SIGINT. While `handled()` is
active (the trainer, the converter), the first signal is recorded:

- inside `deferred()` (the trainer's `fit`), nothing is interrupted: the code checks
  `requested()` at its safe points (the backup callback, at each step's end) and raises
  `Stopped` itself once its state is saved;
- anywhere else `Stopped` is raised at once (Python runs the handler between two
  bytecodes of the main thread), so a phase without safe points (export, scoring,
  preparation) stops where it is; what it finished stays, and the same command redoes
  the rest.

A second signal exits at once (`os._exit`) with the same status, leaving whatever is on
disk. Exit status: 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the shell's
convention. `Stopped` derives from BaseException (as KeyboardInterrupt), so no `except
Exception` on the way swallows it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)
RESUME_HINT = "the same command resumes from there"


def exit_code(signum: int) -> int:
    """The shell's status for a process ended by `signum` (143 SIGTERM, 130 SIGINT)."""
    return 128 + int(signum)


def name(signum: int) -> str:
    return signal.Signals(signum).name


class Stopped(BaseException):
    """The command stopped on a signal. `str()` is its one line; `code` the exit status."""

    def __init__(self, signum: int, where: str = "", hint: str = RESUME_HINT):
        super().__init__(signum, where)
        self.signum, self.where, self.hint = signum, where, hint
        self.code = exit_code(signum)

    def __str__(self) -> str:
        where = f" {self.where}" if self.where else ""
        return f"stopped by {name(self.signum)}{where}; {self.hint}"


class _State:
    signum: Optional[int] = None
    raised = False
    deferred = 0
    depth = 0


_state = _State()


def requested() -> Optional[int]:
    """The signal received (SIGTERM or SIGINT) since `handled()` began, else None."""
    return _state.signum


def stop(where: str = "", hint: str = RESUME_HINT) -> Stopped:
    """The `Stopped` to raise for the received signal (marks it raised)."""
    _state.raised = True
    return Stopped(_state.signum, where, hint)


def _handle(signum, frame) -> None:
    if _state.signum is not None:
        sys.stderr.write(f"\nsecond {name(signum)}: exiting at once\n")
        sys.stderr.flush()
        os._exit(exit_code(signum))
    _state.signum = signum
    if not _state.deferred:
        raise stop()


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGTERM/SIGINT handled as the module says while inside; the handlers before are put
    back after. Nested uses share the outer one. Outside the main thread (where Python
    cannot install handlers) it does nothing."""
    if _state.depth or threading.current_thread() is not threading.main_thread():
        _state.depth += 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    _state.signum, _state.raised, _state.deferred, _state.depth = None, False, 0, 1
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        _state.depth = 0
        _state.signum = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, a signal is only recorded: the code stops at its own safe points. A signal
    that no safe point honoured raises `Stopped` on the way out."""
    _state.deferred += 1
    try:
        yield
    finally:
        _state.deferred -= 1
    if _state.signum is not None and not _state.raised:
        raise stop()


def reinstall() -> None:
    """Install the handlers again inside `handled()`: TensorFlow's coordination service
    (multi-worker training) puts its own SIGTERM handler in place when it starts, which
    only records the signal and lets the process train on."""
    if _state.depth and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _handle)
