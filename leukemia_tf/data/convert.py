"""Convert a C-NMC tree into sharded TFRecords with a manifest.

The output dir is a record of one conversion, and the converter touches only what it owns:
1. Check every setting, the tree and the output dir before anything is removed: a typo'd
   flag or path leaves a finished records dir usable. A file this converter did not write
   (no manifest or progress record of ours names it) is never removed or overwritten.
2. Plan shards. A planned shard is reused only when its progress record was made from the
   same settings, entries, labels and input bytes (every input's sha256; the labels CSV's
   sha256 for validation shards) and the shard file still has the recorded checksum. Sizes
   prove nothing: every C-NMC training BMP has the same size.
3. Encode the rest in worker processes, streaming (see `_stream`), write each shard under
   a temporary name in .progress/, rename it, then write its progress record atomically.
4. Remove shards of an earlier plan that our own records name; examples.csv; the manifest
   last (temporary name + rename), so an interrupted run (even kill -9) never looks done.
One converter at a time: `convert.lock` in the output dir (the trainer's lock code,
`leukemia_tf/lock.py`), taken after the read-only checks and before the first change.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import config, io
from leukemia_tf import lock as lock_lib
from leukemia_tf import signals
from leukemia_tf.data import cnmc, images
from leukemia_tf.data.conversion import encode, output_dir, streaming
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data.manifest import PROGRESS_DIR
from leukemia_tf.progress import Progress
from leukemia_tf.wording import count

ConvertError = manifest_lib.ManifestError  # one error type for records dirs and conversions
# Bump when the same input and settings would give other stored bytes (e.g. another
# resize): progress records of an older layout are then not reused.
LAYOUT_VERSION = 3  # 3: records hold decoded originals or preprocess.py output
LOCK = "convert.lock"          # one converter per output dir (leukemia_tf/lock.py)
PROGRESS_INTERVAL = 30.0        # seconds between plain progress lines when not a terminal
_RECORD_OVERHEAD = 400  # bytes of proto fields and TFRecord framing per example
log = logging.getLogger(__name__)
ON_ERROR = ("raise", "skip")  # bad input: stop naming the file, or record it and go on


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    data_dir: str
    output_dir: str
    # png | raw | bmp | jpeg (see BUILD_NOTES.md for the choice)
    encoding: str = config.declared("png", choices=images.ENCODINGS)
    jpeg_quality: int = 95
    png_compression: int = 1       # zlib level; 1 measured ~20% larger than 6 and 5x faster
    canvas_size: int = 450         # crop/pad to this square without rescaling
    image_size: int = 0            # >0: store resized to image_size (else the canvas)
    shard_size_mb: float = 150.0
    num_shards: int = 0            # >0: exactly this many shards per split/fold group
    num_workers: int = 0           # 0 = all cores; 1 = in-process
    seed: int = 0
    on_error: str = config.declared("raise", choices=ON_ERROR)  # stop, or skip and record
    progress: bool = True

    def output_settings(self) -> dict:
        """The settings that change the bytes written (part of the reuse key)."""
        keys = ("encoding", "jpeg_quality", "png_compression", "canvas_size", "image_size",
                "seed", "on_error")
        # "pixels": what a record holds. "v2": decoded images at their own size (or
        # pre-resized by data/preprocess.py). Records of the earlier layout held a canvas
        # made in numpy, which differs from serving's, so they must never be reused.
        return {**{k: getattr(self, k) for k in keys}, "pixels": "v2"}

    def validate(self) -> None:
        """Raises ConvertError listing every invalid setting (nothing is touched before)."""
        bad = []
        if not self.data_dir:
            bad.append("--data_dir is required")
        if not self.output_dir:
            bad.append("--output_dir is required")
        if self.encoding not in images.ENCODINGS:
            bad.append(f"--encoding={self.encoding} (choose from {', '.join(images.ENCODINGS)})")
        if not 1 <= self.jpeg_quality <= 100:
            bad.append(f"--jpeg_quality={self.jpeg_quality} (1..100)")
        if not 0 <= self.png_compression <= 9:
            bad.append(f"--png_compression={self.png_compression} (0..9)")
        if self.canvas_size <= 0:
            bad.append(f"--canvas_size={self.canvas_size} (must be > 0)")
        if self.image_size < 0:
            bad.append(f"--image_size={self.image_size} (0 = the canvas, or > 0)")
        if not self.shard_size_mb > 0 or not math.isfinite(self.shard_size_mb):
            bad.append(f"--shard_size_mb={self.shard_size_mb} (must be > 0)")
        if self.num_shards < 0:
            bad.append(f"--num_shards={self.num_shards} (0 = by size, or > 0)")
        if self.num_workers < 0:
            bad.append(f"--num_workers={self.num_workers} (0 = all cores, or > 0)")
        if self.on_error not in ON_ERROR:
            bad.append(f"--on_error={self.on_error} ({' or '.join(ON_ERROR)})")
        if bad:
            raise ConvertError("invalid settings: " + "; ".join(bad))


def _plan(table: pd.DataFrame, cfg: ConvertConfig, avg_bytes: float) -> List[dict]:
    """Shuffle each split/fold group with the seed and cut it into shards."""
    from leukemia_tf.data import records  # lazy: loads TensorFlow; convert.py imports
    # without it (its workers are forked)
    shards = []
    prefixes = sorted({records.shard_prefix(s, f) for s, f in
                       zip(table["split"], table["fold"].fillna(-1))})
    for group_index, prefix in enumerate(prefixes):
        rows = table[[records.shard_prefix(s, f) == prefix for s, f in
                      zip(table["split"], table["fold"].fillna(-1))]]
        rows = rows.sort_values("rel_path")
        order = np.random.default_rng([cfg.seed, group_index]).permutation(len(rows))
        rows = rows.iloc[order]
        if cfg.num_shards > 0:
            count = min(cfg.num_shards, len(rows))
        else:
            count = max(1, math.ceil(len(rows) * avg_bytes / (cfg.shard_size_mb * 2 ** 20)))
        for i, part in enumerate(np.array_split(np.arange(len(rows)), count)):
            sub = rows.iloc[part]
            fold = sub["fold"].iloc[0]
            shards.append({"path": records.shard_name(prefix, i, count), "prefix": prefix,
                           "split": str(sub["split"].iloc[0]),
                           "fold": None if pd.isna(fold) else int(fold),
                           "entries": sub.to_dict("records")})
    return shards


def _estimate_bytes(table: pd.DataFrame, settings: dict) -> float:
    """Mean encoded bytes per example from a deterministic sample of up to 16 images."""
    sample = table.sort_values("rel_path").iloc[:: max(1, len(table) // 16)][:16]
    sizes = []
    for path in sample["path"]:
        try:
            data = io.read_bytes(path)
        except Exception:  # noqa: BLE001 - named later, when the file is encoded
            continue
        _, result, _ = encode.encode_one((0, path, data, settings))
        result = encode.finish_one(result, settings)
        if result is not None:
            sizes.append(len(result["encoded"]))
    return (float(np.mean(sizes)) if sizes else 600_000.0) + _RECORD_OVERHEAD


def _entry_meta(e: dict) -> list:
    def opt_int(v):
        return None if pd.isna(v) else int(v)
    return [e["rel_path"], e["split"], opt_int(e["fold"]), opt_int(e["label"]),
            e["patient_id"] if isinstance(e["patient_id"], str) else "",
            e.get("original_name") or ""]


def _plan_key(cfg: ConvertConfig, shard: dict, labels_sha: str) -> str:
    """What a shard is made of, except the input bytes: settings, entries, labels file."""
    payload = {"layout": LAYOUT_VERSION, "settings": cfg.output_settings(),
               "shard": shard["path"], "entries": [_entry_meta(e) for e in shard["entries"]],
               "labels_csv": labels_sha if shard["split"] == "validation" else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fingerprint(plan_key: str, input_shas: List[Optional[str]]) -> str:
    return hashlib.sha256(json.dumps([plan_key, input_shas]).encode()).hexdigest()


def _labels_sha(root: str) -> Optional[str]:
    path = io.join(root, cnmc.VAL_CSV)
    return streaming.file_sha256(path)[0] if io.exists(path) else None


def _reuse(cfg: ConvertConfig, out: output_dir.OutputDir, shards: List[dict], metas: dict,
           skipped: list) -> Tuple[List[dict], dict]:
    """Mark shards whose inputs are provably unchanged as reused; returns (todo, stats)."""
    candidates = []
    for shard in shards:
        record_path = output_dir.record_path(out.dir, shard["path"])
        if shard["path"] not in out.names or not io.exists(record_path):
            continue
        record = output_dir.read_record(record_path)
        if record is not None and record.get("plan_key") == shard["plan_key"]:
            candidates.append((shard, record))
    paths = [e["path"] for shard, _ in candidates for e in shard["entries"]]
    start = time.perf_counter()
    threads = max(4, cfg.num_workers or os.cpu_count() or 1)
    shas = streaming.hash_inputs(paths, threads, cfg.progress, PROGRESS_INTERVAL)
    stats = {"hashed_images": len(paths), "hash_seconds": round(time.perf_counter() - start, 2)}
    for shard, record in candidates:
        now = _fingerprint(shard["plan_key"], [shas[e["path"]] for e in shard["entries"]])
        if now != record.get("fingerprint"):
            continue
        sha, size = streaming.file_sha256(io.join(out.dir, shard["path"]))
        if sha != record.get("sha256") or size != record.get("bytes"):
            log.warning("%s: checksum differs from its progress record; rewriting",
                        io.join(out.dir, shard["path"]))
            continue
        shard.update(num_examples=record["num_examples"], bytes=size, sha256=sha,
                     reused=True)
        metas[shard["path"]] = record["examples"]
        skipped.extend(record["skipped"])
    todo = [s for s in shards if not s.get("reused")]
    if len(todo) < len(shards):
        log.info("%d of %d shards made from the same inputs and settings; reusing them",
                 len(shards) - len(todo), len(shards))
    return todo, stats


def _example_meta(entry: dict, result: dict) -> dict:
    return {"rel_path": entry["rel_path"], "split": entry["split"],
            "fold": None if pd.isna(entry["fold"]) else int(entry["fold"]),
            "label": None if pd.isna(entry["label"]) else int(entry["label"]),
            "patient_id": entry["patient_id"] if isinstance(entry["patient_id"], str) else "",
            "sha256": result["sha256"], "source_shape": result["source_shape"]}


def _write_shard(cfg: ConvertConfig, out: output_dir.OutputDir, shard: dict, results: Iterator,
                 bar: Progress) -> None:
    """Write one shard under a temporary name, rename it, then its progress record."""
    import tensorflow as tf
    from leukemia_tf.data import records  # lazy: TensorFlow, as above
    tmp = io.join(out.dir, PROGRESS_DIR, f"{shard['path']}.tmp-{os.getpid()}")
    settings = cfg.output_settings()
    examples, skipped, shas = [], [], []
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for entry in shard["entries"]:
                _, result, error, sha = next(results)
                result = encode.finish_one(result, settings)
                bar.update(1)
                shas.append(sha)
                if error is not None:
                    if cfg.on_error == "raise":
                        raise ConvertError(f"{error}, {entry['rel_path']} "
                                           "(use --on_error=skip to record and skip it)")
                    skipped.append({"path": entry["rel_path"], "reason": error})
                    continue
                meta = _example_meta(entry, result)
                writer.write(records.encode_example(
                    result["encoded"], cfg.encoding, result["height"], result["width"],
                    records.UNLABELED if meta["label"] is None else meta["label"],
                    meta["patient_id"],
                    records.NO_FOLD if meta["fold"] is None else meta["fold"],
                    meta["split"], meta["rel_path"], meta["sha256"]))
                examples.append(meta)
        sha, size = streaming.file_sha256(tmp)
    except BaseException:
        io.remove(tmp)
        raise
    # A signal waits until the shard and its record are both in place: a shard without
    # its record would be a file no record of ours names, refused by the next run.
    with signals.deferred():
        out.invalidate()
        io.rename(tmp, io.join(out.dir, shard["path"]), overwrite=True)
        shard.update(num_examples=len(examples), bytes=size, sha256=sha, reused=False,
                     examples=examples, skipped=skipped)
        io.write_json(output_dir.record_path(out.dir, shard["path"]), {
            "writer": manifest_lib.WRITER, "shard": shard["path"],
            "plan_key": shard["plan_key"], "fingerprint": _fingerprint(shard["plan_key"], shas),
            "num_examples": len(examples), "bytes": size, "sha256": sha,
            "examples": examples, "skipped": skipped})


def _encode_shards(cfg: ConvertConfig, out: output_dir.OutputDir, todo: List[dict], metas: dict,
                   skipped: list, bar: Progress) -> int:
    """Encode and write every shard of `todo`; returns the number of inputs read."""
    settings = cfg.output_settings()
    tasks = [(i, path, None, settings) for i, path in
             enumerate(e["path"] for s in todo for e in s["entries"])]
    workers = cfg.num_workers or os.cpu_count() or 1
    pool = None
    if workers > 1 and len(tasks) > 1:
        # fork: workers run numpy/Pillow only and never touch TensorFlow state (`encode.work`).
        pool = multiprocessing.get_context("fork").Pool(workers, _worker_signals)
    results = streaming.stream(encode.work, tasks, pool, max(8, 4 * workers))
    written = 0
    try:
        for shard in todo:
            _write_shard(cfg, out, shard, results, bar)
            metas[shard["path"]] = shard["examples"]
            skipped.extend(shard["skipped"])
            written += 1
    except signals.Stopped as e:
        e.where = f"with {written} of {len(todo)} shards written"
        e.hint = "the same command keeps them and converts the rest"
        raise
    finally:
        results.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return len(tasks)


def _worker_signals() -> None:
    """Pool workers leave signals to the converter: Ctrl-C (sent to the whole process
    group) is ignored, SIGTERM (`pool.terminate`) ends them quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def convert(cfg: ConvertConfig) -> dict:
    """Convert `cfg.data_dir` into shards under `cfg.output_dir`; returns the manifest.

    Raises:
      ConvertError / cnmc.CnmcError: invalid settings or output dir (raised before any
        file is touched), bad input with on_error="raise", or write failures.
    """
    cfg.validate()
    start = time.perf_counter()
    root = cnmc.find_root(cfg.data_dir)
    output_dir.inspect(cfg.output_dir, [cfg.data_dir, root])  # refuse before writing
    io.makedirs(cfg.output_dir)
    # SIGTERM/SIGINT (`leukemia_tf.signals`): written shards and their records stay, the
    # shard being written and the lock are removed, the pool is ended.
    with signals.handled(), lock_lib.Lock(cfg.output_dir, LOCK, "converter", ConvertError):
        # Again under the lock: another converter may have changed the dir meanwhile.
        out = output_dir.inspect(cfg.output_dir, [cfg.data_dir, root])
        return _convert(cfg, root, out, start)


def _convert(cfg: ConvertConfig, root: str, out: output_dir.OutputDir, start: float) -> dict:
    """`convert` once the output dir is checked and locked."""
    table, skipped = cnmc.discover(cfg.data_dir, on_error=cfg.on_error)
    avg_bytes = _estimate_bytes(table, cfg.output_settings()) if cfg.num_shards <= 0 else 0.0
    shards = _plan(table, cfg, avg_bytes)
    output_dir.refuse_foreign(out, [s["path"] for s in shards])
    output_dir.warn_replacing(out, root)
    labels_sha = _labels_sha(root)
    for shard in shards:
        shard["plan_key"] = _plan_key(cfg, shard, labels_sha)
    metas: Dict[str, List[dict]] = {}
    todo, stats = _reuse(cfg, out, shards, metas, skipped)

    io.makedirs(io.join(cfg.output_dir, PROGRESS_DIR))
    bar = Progress(sum(len(s["entries"]) for s in todo), "convert", enabled=cfg.progress,
                   interval=PROGRESS_INTERVAL)
    try:
        n_encoded = _encode_shards(cfg, out, todo, metas, skipped, bar)
    finally:
        bar.close()
    output_dir.remove_stale(out, {s["path"] for s in shards})
    seconds = time.perf_counter() - start
    stats.update(seconds=round(seconds, 2), encoded_images=n_encoded,
                 reused_shards=len(shards) - len(todo),
                 images_per_sec=round(n_encoded / seconds, 1) if seconds else None)
    # stored_size 0: every image stored at its own size, as decoded (the canvas rule and
    # the resize run when the records are read, by data/preprocess.py).
    from leukemia_tf.data import preprocess  # lazy: TensorFlow, as in _plan
    settings = {**cfg.output_settings(), "shard_size_mb": cfg.shard_size_mb,
                "num_shards": cfg.num_shards, "stored_size": cfg.image_size,
                "resize_method": preprocess.RESIZE_METHOD}
    manifest = manifest_lib.build(settings, root, shards, metas, skipped, stats)
    out.invalidate()
    manifest_lib.write_examples(cfg.output_dir, manifest_lib.examples_table(shards, metas))
    manifest_lib.write(cfg.output_dir, manifest)
    checked = (f"; {stats['hashed_images']} inputs re-read to prove them unchanged"
               if stats["hashed_images"] else "")
    bar.close(f"encoded {count(n_encoded, 'image')}, reused {stats['reused_shards']} of "
              f"{len(shards)} shards, in {seconds:.1f} s{checked}")
    return manifest


def verify(records_dir: str) -> dict:
    """Re-read every shard: size, sha256, record count and schema against the manifest.

    Returns a report dict; raises ConvertError listing every problem found.
    """
    import tensorflow as tf
    from leukemia_tf.data import records  # lazy: TensorFlow, as in _plan
    manifest = manifest_lib.load(records_dir)
    problems, counted = [], {}
    for shard in manifest["shards"]:
        path = io.join(records_dir, shard["path"])
        if not io.exists(path):
            problems.append(f"{shard['path']}: missing")
            continue
        sha, size = streaming.file_sha256(path)
        if size != shard["bytes"] or sha != shard["sha256"]:
            problems.append(f"{shard['path']}: checksum mismatch (sha256 {sha[:12]}…, "
                            f"{size} bytes; manifest {shard['sha256'][:12]}…, {shard['bytes']})")
            continue
        n = 0
        try:
            for raw in tf.data.TFRecordDataset(path):
                ex = records.parse_example(raw)
                if ex["image/split"].numpy().decode() != shard["split"]:
                    problems.append(f"{shard['path']}: record {n} has split "
                                    f"{ex['image/split'].numpy().decode()}")
                    break
                n += 1
        except tf.errors.DataLossError as e:
            problems.append(f"{shard['path']}: corrupt record after {n}: {e.message}")
            continue
        if n != shard["num_examples"]:
            problems.append(f"{shard['path']}: {n} records, manifest says {shard['num_examples']}")
        counted[shard["split"]] = counted.get(shard["split"], 0) + n
    if problems:
        raise ConvertError(f"verification failed ({len(problems)} problem(s): "
                           f"{problems[0]}), {records_dir}" +
                           "".join(f"\n  {p}" for p in problems[1:]))
    return {"shards": len(manifest["shards"]), "examples": sum(counted.values()),
            "by_split": counted}
