"""The converter's output dir: which files it owns, and removing only those.

A records dir is the record of one conversion, and it may share a folder with other
files (another dataset's `train-00000-of-00001.tfrecord` is a common name). The converter
owns exactly the shards named by its own manifest.json or by its progress records in
`.progress/` (a record's file name names its shard, even when the record is unreadable),
plus the temporaries in `.progress/`. Everything else is never removed or overwritten.
Every name read from a manifest or a progress record must stay inside the output dir
(no absolute path, no `..`, no link out: `manifest.inside`), or the command stops naming
the entry before it removes anything.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import List, Optional

from leukemia_tf import io
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data.manifest import EXAMPLES, MANIFEST, PROGRESS_DIR, ManifestError

ConvertError = ManifestError
log = logging.getLogger(__name__)


@dataclasses.dataclass
class OutputDir:
    """What the output dir holds, and which of it this converter wrote."""
    dir: str
    names: set           # entries of the output dir
    owned: set           # shard names our manifest or our progress records name
    has_manifest: bool
    invalidated: bool = False
    earlier: Optional[dict] = None  # source_root, created, examples of the manifest found

    def invalidate(self) -> None:
        """Remove the old manifest before the first change: it must not vouch for a
        half-new dir. Called lazily, so a run that fails before changing anything
        leaves a finished records dir usable."""
        if self.has_manifest and not self.invalidated:
            io.remove(io.join(self.dir, MANIFEST))
        self.invalidated = True


def inside(child: str, parent: str) -> bool:
    if io.is_url(child) != io.is_url(parent):
        return False
    if io.is_url(child):
        return (child.rstrip("/") + "/").startswith(parent.rstrip("/") + "/")
    return (os.path.realpath(child) + os.sep).startswith(os.path.realpath(parent) + os.sep)


def inspect(out: str, data_dirs: List[str]) -> OutputDir:
    """What `out` holds and owns; refuses an output dir inside a data dir or holding a
    manifest/examples.csv this converter did not write. Reads only."""
    for data in data_dirs:
        if inside(out, data):
            raise ConvertError(f"the output dir is inside the data dir {data}; choose "
                               f"another --output_dir, {out}")
    if io.exists(out) and not io.isdir(out):
        raise ConvertError(f"the output dir is a file, {out}")
    names = set(io.listdir(out)) if io.isdir(out) else set()
    owned, has_manifest, earlier = set(), MANIFEST in names, None
    if has_manifest:
        path = io.join(out, MANIFEST)
        try:
            old = io.read_json(path)
        except (ValueError, UnicodeDecodeError):
            old = None
        if not manifest_lib.is_ours(old):
            raise ConvertError("the output dir holds a manifest.json this converter did not "
                               f"write; move it or choose another --output_dir, {path}")
        for i, shard in enumerate(old.get("shards") or []):
            if isinstance(shard, dict) and "path" in shard:
                manifest_lib.inside(out, shard["path"], f"shard entry {i}", path)
                owned.add(shard["path"])
        earlier = {"source_root": str(old.get("source_root", "")),
                   "created": str(old.get("created", "")),
                   "examples": sum(s.get("num_examples") for s in old.get("shards") or []
                                   if isinstance(s, dict)
                                   and isinstance(s.get("num_examples"), int))}
    if PROGRESS_DIR in names and io.isdir(io.join(out, PROGRESS_DIR)):
        owned |= {n[:-len(".json")] for n in io.listdir(io.join(out, PROGRESS_DIR))
                  if n.endswith(".tfrecord.json")}
    elif EXAMPLES in names and not has_manifest:
        raise ConvertError("the output dir holds an examples.csv this converter did not "
                           f"write; move it or choose another --output_dir, "
                           f"{io.join(out, EXAMPLES)}")
    return OutputDir(out, names, owned, has_manifest, earlier=earlier)


def warn_replacing(out: OutputDir, root: str) -> None:
    """Say so when the records found are another tree's: this conversion replaces them
    (unless the new records are the same, evaluate and resume then refuse a run trained
    on them: provenance.py)."""
    old = out.earlier
    if not old or not old["source_root"]:
        return
    if not (inside(root, old["source_root"]) and inside(old["source_root"], root)):
        log.warning("replacing the records of %s (%d images, converted %s) in %s with "
                    "the records of %s", old["source_root"], old["examples"],
                    old["created"] or "at an unknown time", out.dir, root)


def refuse_foreign(out: OutputDir, shard_names: List[str]) -> None:
    """Refuse to overwrite a file of a planned name that our records do not name."""
    foreign = [n for n in shard_names if n in out.names and n not in out.owned]
    if foreign:
        raise ConvertError(
            f"{len(foreign)} shard name(s) this conversion needs exist in the output dir but "
            "no manifest or progress record of this converter names them (another "
            "dataset's?); move them or choose another --output_dir, "
            f"{io.join(out.dir, foreign[0])}")


def remove_stale(out: OutputDir, keep: set) -> None:
    """Delete only what our own records name: shards of an earlier plan, their progress
    records, and dead temporaries in our .progress folder. Foreign files stay."""
    progress = io.join(out.dir, PROGRESS_DIR)
    stale = sorted(n for n in out.owned - keep)
    legacy_tmp = [n for n in out.names if n.partition(".tmp-")[1] and
                  n.partition(".tmp-")[2].isdigit() and n.partition(".tmp-")[0] in
                  out.owned | keep]
    if stale or legacy_tmp:
        out.invalidate()
    for name in stale:
        if name in out.names:
            log.info("removing %s (a shard of an earlier conversion)", name)
            io.remove(io.join(out.dir, name))
        io.remove(record_path(out.dir, name))
    for name in legacy_tmp:
        io.remove(io.join(out.dir, name))
    for name in io.listdir(progress):
        if ".tfrecord.tmp-" in name:
            io.remove(io.join(progress, name))
    from leukemia_tf.data import records  # lazy: loads TensorFlow, which this module does not
    foreign = sorted(n for n in out.names if records.parse_shard_name(n) and
                     n not in out.owned and n not in keep)
    if foreign:
        log.warning("left %d shard-like file(s) this converter did not write in %s: %s",
                    len(foreign), out.dir, ", ".join(foreign[:5]))


def record_path(output_dir: str, shard_path: str) -> str:
    """The progress record of a shard: `.progress/<shard>.json`, inside `output_dir`."""
    return manifest_lib.inside(output_dir, f"{PROGRESS_DIR}/{shard_path}.json",
                               "progress record of shard", io.join(output_dir, PROGRESS_DIR))


_RECORD_KEYS = ("plan_key", "fingerprint", "num_examples", "bytes", "sha256", "examples",
                "skipped")


def read_record(path: str) -> Optional[dict]:
    """A progress record, or None (with a warning naming it) when it cannot be read or
    lacks a field (truncated, hand-edited, or from an older converter): "not done"."""
    try:
        record = io.read_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("unreadable progress record, shard will be rewritten: %s (%s)", path, e)
        return None
    if not isinstance(record, dict) or not all(k in record for k in _RECORD_KEYS):
        log.warning("incomplete progress record, shard will be rewritten: %s", path)
        return None
    return record
