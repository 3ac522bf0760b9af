"""Where evaluate and predict write, checked before TensorFlow loads.

A read-only model dir, file system or working directory would otherwise surface as
`OSError: [Errno 30] … <file>.tmp-<pid>` after the scoring. `check` writes and removes a
probe file in the destination folder (or, when it does not exist yet, in the nearest
folder above it, where it would be created) and refuses in one line naming the folder and
the flag that picks another one; `refusal` gives the same line for a disk failure met
while writing. URLs are not probed (their errors name the object already).
"""
from __future__ import annotations

import os
from typing import Optional

from leukemia_tf import io
from leukemia_tf.errors import DISK_ERRNOS, UserError
from leukemia_tf.provenance import run_dir


def eval_root(model_dir: str, out_dir: str) -> str:
    """The folder evaluate writes its evaluation folders into."""
    return out_dir or io.join(run_dir(model_dir), "eval")


def check_not_serving(model_dir: str, out_dir: str) -> None:
    """UserError when evaluations would go into a serving dir by default: a folder with
    the SavedModel at its root (`train --serving_dir`, $AIP_MODEL_DIR) and no run of its
    own (config.json) is what serving uploads, and evaluate writes nothing into it."""
    folder = run_dir(model_dir)
    if (not out_dir and io.exists(io.join(folder, "saved_model.pb"))
            and not io.exists(io.join(folder, "config.json"))):
        raise UserError(f"--model_dir={model_dir} is a serving dir (saved_model.pb at its "
                        "root, no run's config.json): evaluations are not written into "
                        "it; give --out_dir=<folder>, or evaluate the run's own model dir")


def _existing(folder: str) -> str:
    folder = os.path.abspath(folder or ".")
    while not io.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def message(folder: str, reason: str, hint: str) -> str:
    return f"cannot write in {folder} ({reason}): {hint}"


def check(folder: str, hint: str) -> None:
    """UserError naming `folder` (or the existing folder above it) when a file cannot be
    created there; `hint` says which flag picks another folder."""
    if io.is_url(folder):
        return
    where = _existing(folder)
    probe = os.path.join(where, f".write-test-{os.getpid()}")
    try:
        io.write_bytes(probe, b"", atomic=False)
        io.remove(probe)
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise UserError(message(where, e.strerror or str(e), hint)) from None


def refusal(exc: BaseException, folder: str, hint: str) -> Optional[UserError]:
    """The UserError for a full, read-only or forbidden disk met while writing into
    `folder`, or None (any other failure keeps its traceback)."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return UserError(message(folder, exc.strerror or str(exc), hint))
    return None


EVALUATE_HINT = ("give --out_dir=<a folder you can write> (evaluations go to "
                 "<model_dir>/eval by default)")
PREDICT_HINT = "give another --output, in a folder you can write"
