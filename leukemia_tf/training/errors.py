"""Failures a user can act on, and the one line an entry point prints for them.

Expected failures (a bad flag, a missing or corrupt record, a model dir that belongs to
another run or is in use, a full or read-only disk) end a command with
`error: <what>, <which file or shard>` and exit status 1. Anything else is a bug and
keeps its traceback: `expected_error` returns None for it.
"""
from __future__ import annotations

import errno
from typing import Optional

from leukemia_tf.errors import UserError


class TrainingError(UserError):
    """An expected failure; the message is one line that names the file or flag."""


class RunDirError(TrainingError):
    """The model dir belongs to another run configuration, or another trainer uses it."""


class InputError(TrainingError):
    """The records dir, its manifest or one of its shards cannot be used."""


_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_DISK_WORDS = ("No space left", "Read-only file system", "Permission denied",
               "Disk quota exceeded")


def expected_error(exc: BaseException) -> Optional[str]:
    """The one-line message for an expected failure, or None (keep the traceback).

    ValueError and FloatingPointError count as expected: the library raises them for
    invalid settings and a diverging loss, each with a message that says what to change.
    """
    if isinstance(exc, (TrainingError, ValueError, FloatingPointError)):
        return _one_line(str(exc))
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        where = exc.filename or "the output directory"
        return f"cannot write {where}: {exc.strerror or exc}"
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        return None
    if isinstance(exc, tf.errors.OpError):
        message = exc.message or str(exc)
        if any(w in message for w in _DISK_WORDS):
            return "cannot write: " + _one_line(message)
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
