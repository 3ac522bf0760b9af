"""The trainer's expected failures, and the one line its entry point prints for them.

`leukemia_tf.errors` holds what every command shares (UserError, the disk-error line);
this module adds the trainer's own: a model dir it may not use, records it cannot read,
a worker lost under multi-worker training.

Expected failures (a bad flag, a missing or corrupt record, a model dir that belongs to
another run or is in use, a full or read-only disk) end a command with
`error: <what>, <which file or shard>` and exit status 1. Anything else is a bug and
keeps its traceback: `expected_error` returns None for it.
"""
from __future__ import annotations

import re
import sys
from typing import List, Optional, Sequence, Tuple

from leukemia_tf import cluster
from leukemia_tf.errors import UserError, file_error, one_line


class TrainingError(UserError):
    """An expected failure; the message is one line that names the file or flag."""


class RunDirError(TrainingError):
    """The model dir belongs to another run configuration, or another trainer uses it."""


class InputError(TrainingError):
    """The records dir, its manifest or one of its shards cannot be used."""


def expected_error(exc: BaseException) -> Optional[str]:
    """The one-line message for an expected failure, or None (keep the traceback).

    ValueError and FloatingPointError count as expected: the library raises them for
    invalid settings and a diverging loss, each with a message that says what to change.
    A full or read-only disk is `errors.file_error`'s line; a worker that stopped
    answering under multi-worker training is named (`lost_worker`).
    """
    if isinstance(exc, (UserError, ValueError, FloatingPointError)):
        return one_line(str(exc))
    return file_error(exc) or lost_worker(exc)


_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def lost_worker(exc: BaseException) -> Optional[str]:
    """One line for a peer that died under multi-worker training, else None.

    TensorFlow reports it as UnavailableError (or a collective aborted with it) with a
    screen of gRPC detail; the first `/job:<name>/.../task:<i>` in it that is not this
    process's own task (TF_CONFIG) is the lost peer.
    Re-running every worker with the same flags resumes from the chief's backup/.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(exc, (tf.errors.UnavailableError,
                                          tf.errors.CancelledError, tf.errors.AbortedError)):
        return None
    message = exc.message or str(exc)
    if isinstance(exc, tf.errors.CancelledError) and "ollective" not in message:
        return None
    return lost_peer_line(message, *_own_task())


def _own_task() -> Tuple[Optional[Tuple[str, int]], List[Tuple[str, int]]]:
    """((job, index) of this process, [(job, index) of every other task]) from
    TF_CONFIG; (None, []) when it does not say."""
    try:
        tf_config = cluster.parse()
        task = tf_config.get("task") or {}
        own = (str(task["type"]), int(task["index"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, []
    others = [(job, i) for job, addresses in tf_config.get("cluster", {}).items()
              for i in range(len(addresses)) if (job, i) != own]
    return own, others


def lost_peer_line(message: str, own: Optional[Tuple[str, int]] = None,
                   others: Sequence[Tuple[str, int]] = ()) -> str:
    """The one line for TensorFlow's lost-peer `message`: the first task it names that
    is not this process's own `own` (TensorFlow names the local device first), else the
    one other task of a two-task cluster (`others`)."""
    tasks = [(job, int(i)) for job, i in _TASK.findall(message)]
    lost = next((t for t in tasks if t != own), None)
    if lost is None and len(others) == 1:
        lost = others[0]
    who = f"{lost[0]} {lost[1]}" if lost else "a worker (not named by TensorFlow)"
    first = one_line((message.splitlines() or [""])[0])[:120]
    return (f"lost contact with {who} during multi-worker training ({first}): re-run all "
            "workers with the same flags to resume from the last backup")
