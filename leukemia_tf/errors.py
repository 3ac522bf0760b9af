"""The one base class of expected failures: bad flags, bad input, a refused run.

Entry points print such an error as one line, `error: <what>, <which file>`, and exit 1;
any other exception is a bug and keeps its traceback. `file_error` is the one format of a
disk failure (full, read-only, forbidden) for every command. Library modules subclass this for
their own errors (ConvertError, CnmcError, …) so every entry point treats them alike.
"""
import errno
import os
import re
import sys
from typing import Optional


class UserError(Exception):
    """An expected failure the user can act on; the message names the file or flag."""


class JsonFileError(ValueError, UserError):
    """A JSON file (or variable) that does not parse; the message names it.

    `path` is the file (or variable), `detail` the parser's one-line complaint.
    """

    def __init__(self, path: str, detail: str):
        super().__init__(f"{path} is not valid JSON ({detail})")
        self.path, self.detail = path, detail


# A full, read-only or forbidden disk: the user frees space or fixes permissions.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                         errno.EDQUOT})
# A path that is missing or of the wrong kind (a file where a folder is needed).
PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR})
_DISK_WORDS = ("No space left", "Read-only file system", "Permission denied",
               "Disk quota exceeded")
_TF_PATH_ERRORS = ("NotFoundError",)
# io.py's temporaries: `<file>.tmp-<pid>` and create_exclusive's `.<pid>-<hex>.tmp`.
_TEMPORARY = re.compile(r"(\.tmp-\d+|(^|/)\.\d+-[0-9a-f]+\.tmp)$")
_TF_DISK_ERRORS = ("PermissionDeniedError", "ResourceExhaustedError")


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split())


def file_error(exc: BaseException, paths: bool = False) -> Optional[str]:
    """The one line `<what>, <which file>` for a disk failure, or None (a bug).

    Args:
      exc: an OSError, or a TensorFlow file-system error (gs://, ram://).
      paths: also count a missing file or folder, or a file where a folder is needed
        (commands whose paths come straight from flags).
    """
    if isinstance(exc, OSError):
        if exc.errno in DISK_ERRNOS or (paths and exc.errno in PATH_ERRNOS):
            name = str(exc.filename or "the output directory")
            if _TEMPORARY.search(name):  # a write's temporary: the folder is what to fix
                name = os.path.dirname(name) or "."
            return f"{exc.strerror or exc}, {name}"
        return None
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(exc, tf.errors.OpError):
        return None
    message = re.sub(r"/[^/\s]+\.tmp-\d+\b", "", one_line(exc.message or str(exc)))
    kind = type(exc).__name__
    if (kind in _TF_DISK_ERRORS or (paths and kind in _TF_PATH_ERRORS)
            or any(w in message for w in _DISK_WORDS)):
        return message
    return None
