"""The one door to files: every user path (local, gs://, ram://, …) goes through here.

Why one module: the first version mixed `open`/`os` with `tf.io.gfile`, and a
`--model_dir=gs://b/m` quietly wrote a local `./gs:/b/m` folder. Library code calls these
functions and nothing else for any path a user gave (records, model dirs, outputs).

URLs (anything with `://`) go through `tf.io.gfile`, imported lazily. Plain local paths go
through `os`, with the same semantics: the modules that must not load TensorFlow (data
discovery, image checks, the converter's forked workers) can use this module too, and a
forked worker never touches TensorFlow state.

Writes are atomic where the file system allows: `write_bytes`/`write_text`/`write_json`/
`write_csv` write `<path>.tmp-<pid>` and rename it over `path`, so a reader (or a killed
run) never sees half a file; the temporary is removed when the write fails (a full disk).
`read_json` names the file when it does not parse.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
from typing import Any, Iterator, List, Sequence, Tuple

from leukemia_tf.errors import JsonFileError, one_line


def is_url(path: str) -> bool:
    """True for `scheme://…` paths (gs://, ram://, s3://, hdfs://)."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # lazy: local paths never load TensorFlow
    return tf.io.gfile


def join(path: str, *parts: str) -> str:
    """`os.path.join` for local paths, '/'-joining for URLs."""
    if is_url(path):
        return posixpath.join(path, *parts)
    return os.path.join(path, *parts)


def dirname(path: str) -> str:
    path = str(path).rstrip("/") if is_url(path) else str(path)
    return posixpath.dirname(path) if is_url(path) else os.path.dirname(path)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def resolves_inside(path: str, folder: str) -> bool:
    """True when `path`, its symlinks resolved, is `folder` or below it. URLs have no
    links: compared as written (callers refuse `..` components themselves)."""
    if is_url(path) or is_url(folder):
        return (str(path).rstrip("/") + "/").startswith(str(folder).rstrip("/") + "/")
    return (os.path.realpath(path) + os.sep).startswith(os.path.realpath(folder) + os.sep)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """Create `path` and its parents; no error if it exists."""
    if not path:
        return
    if is_url(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> List[str]:
    """Entry names (no trailing '/'), sorted."""
    if is_url(path):
        return sorted(n.rstrip("/") for n in _gfile().listdir(path))
    return sorted(os.listdir(path))


def walk(root: str) -> Iterator[Tuple[str, List[str], List[str]]]:
    """Like `os.walk`, top-down."""
    if is_url(root):
        yield from _gfile().walk(root)
    else:
        yield from os.walk(root)


def glob(pattern: str) -> List[str]:
    if is_url(pattern):
        return sorted(_gfile().glob(pattern))
    import glob as _glob
    return sorted(_glob.glob(pattern))


def size(path: str) -> int:
    """Size in bytes."""
    return _gfile().stat(path).length if is_url(path) else os.path.getsize(path)


@contextlib.contextmanager
def open_file(path: str, mode: str = "r", encoding: str = "utf-8"):
    """A file object for `path` (for pandas, csv, matplotlib and streaming reads)."""
    if is_url(path):
        with _gfile().GFile(path, mode) as f:
            yield f
    elif "b" in mode:
        with open(path, mode) as f:
            yield f
    else:
        with open(path, mode, encoding=encoding, newline="" if "w" in mode else None) as f:
            yield f


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def sha256(path: str) -> str:
    """sha256 hex digest of a file's bytes, read in 8 MB chunks (any file system)."""
    import hashlib
    digest = hashlib.sha256()
    with open_file(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_text(path: str) -> str:
    data = read_bytes(path)
    return data.decode("utf-8-sig")


def read_json(path: str) -> Any:
    """The parsed JSON of `path`; a file that does not parse (torn, garbled, not UTF-8)
    raises `errors.JsonFileError` (a ValueError) whose one-line message names it."""
    return parse_json(read_bytes(path), path)


def parse_json(data: bytes, path: str) -> Any:
    """`data` (the bytes of `path`) parsed as JSON; `errors.JsonFileError` naming `path`
    when it does not parse."""
    try:
        return json.loads(data.decode("utf-8-sig"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise JsonFileError(path, one_line(e)) from None


def _tmp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def write_bytes(path: str, data: bytes, atomic: bool = True) -> None:
    """Write `data` to `path` (parents created), via a temporary name unless not atomic."""
    makedirs(dirname(path))
    target = _tmp_name(path) if atomic else path
    try:
        with open_file(target, "wb") as f:
            f.write(data)
        if atomic:
            rename(target, path, overwrite=True)
    except BaseException:  # a full disk or a kill signal: no temporary stays behind
        if atomic:
            _remove_quietly(target)
        raise


def _remove_quietly(path: str) -> None:
    try:
        remove(path)
    except Exception:  # noqa: BLE001 - the original failure is the one to report
        pass


def write_text(path: str, text: str, atomic: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), atomic=atomic)


def write_json(path: str, value: Any, atomic: bool = True) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n",
               atomic=atomic)


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_csv(path: str, **kwargs):
    """`pandas.read_csv` through this module (works for gs:// and ram://)."""
    import pandas as pd
    with open_file(path, "r") as f:
        return pd.read_csv(f, **kwargs)


def write_csv(path: str, frame, index: bool = False, **kwargs) -> None:
    """`DataFrame.to_csv` through this module, atomically."""
    write_text(path, frame.to_csv(index=index, **kwargs))


def write_figure(path: str, fig, **kwargs) -> None:
    """Render a matplotlib figure to PNG bytes, then write them (any file system)."""
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    write_bytes(path, buf.getvalue())


def remove(path: str) -> None:
    """Remove one file; no error if it is already gone."""
    if not exists(path):
        return
    if is_url(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    """Remove a directory tree; no error if it is already gone. Callers must own it."""
    if not exists(path):
        return
    if is_url(path):
        _gfile().rmtree(path)
    else:
        shutil.rmtree(path)


def rename(src: str, dst: str, overwrite: bool = False) -> None:
    if is_url(src) or is_url(dst):
        _gfile().rename(src, dst, overwrite=overwrite)
    elif overwrite:
        os.replace(src, dst)
    else:
        if os.path.exists(dst):
            raise FileExistsError(dst)
        os.rename(src, dst)


def copy(src: str, dst: str, overwrite: bool = False) -> None:
    if is_url(src) or is_url(dst):
        _gfile().copy(src, dst, overwrite=overwrite)
    else:
        if not overwrite and os.path.exists(dst):
            raise FileExistsError(dst)
        shutil.copyfile(src, dst)


def copytree(src: str, dst: str) -> None:
    """Copy a directory tree file by file (local ↔ remote in any direction)."""
    for d, _, names in walk(src):
        rel = os.path.relpath(d, src) if not is_url(src) else d[len(src.rstrip("/")):].lstrip("/")
        target = join(dst, rel) if rel not in ("", ".") else dst
        makedirs(target)
        for name in names:
            copy(join(d, name), join(target, name), overwrite=True)


def create_exclusive(path: str, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists; True if this call created it.

    For lock files. The bytes go to a temporary name first, so no reader ever sees a
    half-written file. Locally the temporary file is hard-linked to `path`, which fails
    atomically when `path` exists. For URLs it is `tf.io.gfile.rename(overwrite=False)`:
    atomic where the file system is (ram://), check-then-write on object stores (gs://),
    so callers should read the file back to confirm they own it.
    """
    makedirs(dirname(path))
    # Not `<path>.tmp-…`: ram:// answers exists(path) for any name that path prefixes.
    tmp = join(dirname(path), f".{os.getpid()}-{os.urandom(4).hex()}.tmp")
    with open_file(tmp, "wb") as f:
        f.write(data)
    try:
        if is_url(path):
            import tensorflow as tf
            try:
                _gfile().rename(tmp, path, overwrite=False)
            except tf.errors.AlreadyExistsError:
                return False
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        remove(tmp)


def rejoin_commas(items: Sequence[str]) -> List[str]:
    """`--input=a,b.bmp` arrives split at the comma: pieces that only exist joined
    (`a,b.bmp`) are joined again, shortest existing name first."""
    items, out, i = list(items), [], 0
    while i < len(items):
        j = i
        while not exists(items[i]) and j + 1 < len(items):
            j += 1
            joined = ",".join(items[i:j + 1])
            if exists(joined):
                items[i:j + 1] = [joined]
                break
        out.append(items[i])
        i += 1
    return out
