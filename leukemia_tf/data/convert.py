"""Convert a C-NMC tree into sharded TFRecords with a manifest.

Plan -> encode in worker processes -> write shards under temporary names -> rename ->
manifest last. A shard counts as done only when its final name exists and its progress
record (settings fingerprint, sha256) matches, so a re-run skips verified shards and an
interrupted run (even kill -9) leaves no manifest and no complete-looking shard.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.data import cnmc, images

MANIFEST = "manifest.json"
EXAMPLES = "examples.csv"
PROGRESS_DIR = ".progress"
_RECORD_OVERHEAD = 400  # bytes of proto fields and TFRecord framing per example
log = logging.getLogger(__name__)


class ConvertError(RuntimeError):
    """Conversion or verification failed; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    data_dir: str
    output_dir: str
    encoding: str = "png"          # png | raw | bmp | jpeg (see BUILD_NOTES.md for the choice)
    jpeg_quality: int = 95
    png_compression: int = 1       # zlib level; 1 measured ~20% larger than 6 and 5x faster
    canvas_size: int = 450         # crop/pad to this square without rescaling
    image_size: int = 0            # >0: store resized to image_size (else the canvas)
    shard_size_mb: float = 150.0
    num_shards: int = 0            # >0: exactly this many shards per split/fold group
    num_workers: int = 0           # 0 = all cores; 1 = in-process
    seed: int = 0
    on_error: str = "raise"        # raise | skip
    progress: bool = True

    def output_settings(self) -> dict:
        """The settings that change the bytes written (the resume fingerprint)."""
        keys = ("encoding", "jpeg_quality", "png_compression", "canvas_size", "image_size",
                "seed", "on_error")
        # "pixels": what a record holds. v2 stores decoded images at their own size (or
        # pre-resized by data/preprocess.py); v1 records held a numpy-made canvas.
        return {**{k: getattr(self, k) for k in keys}, "pixels": "v2"}


# ---------------------------------------------------------------- worker side (no TF)
def _encode_one(task: Tuple[int, str, Optional[bytes], dict]):
    """Read, hash, check and encode one source file (worker process: no TensorFlow).

    Without pre-resizing the image is stored as decoded, at its own size: the canvas rule
    and the resize are applied by `preprocess.to_model_input` when the records are read,
    the one implementation serving uses too. With pre-resizing (`image_size` > 0) the
    decoded pixels go back to the parent, which runs that same function (TensorFlow
    cannot run in these forked workers) and encodes the result (`finish_one`).

    Returns (index, result dict or None, error reason or None).
    """
    index, path, data, s = task
    try:
        if data is None:
            data = io.read_bytes(path)
        sha = hashlib.sha256(data).hexdigest()
        pixels = images.decode(data)
        result = {"sha256": sha, "source_shape": list(pixels.shape[:2]),
                  "height": int(pixels.shape[0]), "width": int(pixels.shape[1])}
        if s["image_size"]:
            result["pixels"] = pixels
            return index, result, None
        # "bmp" keeps the source file's bytes: they are exactly the decoded pixels.
        result["encoded"] = images.encode(pixels, s["encoding"], s["jpeg_quality"],
                                          s["png_compression"],
                                          original=data if data[:2] == b"BM" else None)
        return index, result, None
    except images.ImageError as e:
        return index, None, str(e)
    except OSError as e:
        return index, None, f"cannot read file: {e}"


def finish_one(result: Optional[dict], s: dict) -> Optional[dict]:
    """Parent side of pre-resizing: the model-input pixels via `preprocess`, encoded."""
    if result is None or "pixels" not in result:
        return result
    from leukemia_tf.data import preprocess
    spec = preprocess.Spec(canvas_size=s["canvas_size"], image_size=s["image_size"])
    out = preprocess.function_for(spec)(result.pop("pixels")).numpy()
    result["encoded"] = images.encode(out, s["encoding"], s["jpeg_quality"],
                                      s["png_compression"])
    result["height"] = result["width"] = s["image_size"]
    return result


# ---------------------------------------------------------------- parent side
def _gfile():
    import tensorflow as tf
    return tf.io.gfile


def _join(a: str, b: str) -> str:
    return a.rstrip("/") + "/" + b


def file_sha256(path: str) -> Tuple[str, int]:
    """(sha256 hex, size) of a file read through tf.io.gfile."""
    h, n = hashlib.sha256(), 0
    with _gfile().GFile(path, "rb") as f:
        while True:
            chunk = f.read(8 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _plan(table: pd.DataFrame, cfg: ConvertConfig, avg_bytes: float) -> List[dict]:
    """Shuffle each split/fold group with the seed and cut it into shards."""
    from leukemia_tf.data import records
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
            shards.append({"path": records.shard_name(prefix, i, count), "prefix": prefix,
                           "split": str(sub["split"].iloc[0]),
                           "fold": None if pd.isna(sub["fold"].iloc[0]) else int(sub["fold"].iloc[0]),
                           "entries": sub.to_dict("records")})
    return shards


def _estimate_bytes(table: pd.DataFrame, cfg: ConvertConfig, settings: dict) -> float:
    """Mean encoded bytes per example from a deterministic sample of up to 16 images."""
    sample = table.sort_values("rel_path").iloc[:: max(1, len(table) // 16)][:16]
    sizes = []
    for path in sample["path"]:
        data = None if "://" not in path else _gfile().GFile(path, "rb").read()
        _, result, _ = _encode_one((0, path, data, settings))
        result = finish_one(result, settings)
        if result is not None:
            sizes.append(len(result["encoded"]))
    return (float(np.mean(sizes)) if sizes else 600_000.0) + _RECORD_OVERHEAD


def _fingerprint(cfg: ConvertConfig, shard: dict) -> str:
    payload = {"settings": cfg.output_settings(), "shard": shard["path"],
               "entries": [(e["rel_path"], None if pd.isna(e["size"]) else int(e["size"]))
                           for e in shard["entries"]]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_done(cfg: ConvertConfig, shard: dict, fingerprint: str) -> Optional[dict]:
    """The progress record of a shard that is complete and verifies, else None."""
    gf = _gfile()
    final = _join(cfg.output_dir, shard["path"])
    record = _join(cfg.output_dir, f"{PROGRESS_DIR}/{shard['path']}.json")
    if not (gf.exists(final) and gf.exists(record)):
        return None
    with gf.GFile(record, "r") as f:
        done = json.load(f)
    if done.get("fingerprint") != fingerprint:
        return None
    sha, size = file_sha256(final)
    if sha != done["sha256"] or size != done["bytes"]:
        log.warning("%s: checksum differs from its progress record; rewriting", final)
        return None
    return done


def _example_meta(entry: dict, result: dict) -> dict:
    return {"rel_path": entry["rel_path"], "split": entry["split"],
            "fold": None if pd.isna(entry["fold"]) else int(entry["fold"]),
            "label": None if pd.isna(entry["label"]) else int(entry["label"]),
            "patient_id": entry["patient_id"] if isinstance(entry["patient_id"], str) else "",
            "sha256": result["sha256"], "source_shape": result["source_shape"]}


def convert(cfg: ConvertConfig) -> dict:
    """Convert `cfg.data_dir` into shards under `cfg.output_dir`; returns the manifest.

    Raises:
      ConvertError / cnmc.CnmcError: bad input with on_error="raise", or write failures.
    """
    import tensorflow as tf
    from leukemia_tf.data import records
    from tqdm import tqdm

    if cfg.encoding not in images.ENCODINGS:
        raise ConvertError(f"unknown encoding {cfg.encoding!r}; choose from {images.ENCODINGS}")
    start = time.perf_counter()
    gf = tf.io.gfile
    gf.makedirs(_join(cfg.output_dir, PROGRESS_DIR))
    manifest_path = _join(cfg.output_dir, MANIFEST)
    if gf.exists(manifest_path):  # an old manifest must not vouch for a half-new output
        gf.remove(manifest_path)

    table, skipped = cnmc.discover(cfg.data_dir, on_error=cfg.on_error)
    root = cnmc.find_root(cfg.data_dir)
    settings = cfg.output_settings()
    avg_bytes = _estimate_bytes(table, cfg, settings) if cfg.num_shards <= 0 else 0.0
    shards = _plan(table, cfg, avg_bytes)

    todo, metas = [], {}
    for shard in shards:
        shard["fingerprint"] = _fingerprint(cfg, shard)
        done = _load_done(cfg, shard, shard["fingerprint"])
        if done is not None:
            shard.update(num_examples=done["num_examples"], bytes=done["bytes"],
                         sha256=done["sha256"], reused=True)
            metas[shard["path"]] = done["examples"]
            skipped.extend(done["skipped"])
        else:
            todo.append(shard)
    n_reused = len(shards) - len(todo)
    if n_reused:
        log.info("%d of %d shards already complete and verified; skipping them",
                 n_reused, len(shards))

    tasks = []
    for shard in todo:
        for entry in shard["entries"]:
            path = entry["path"]
            data = gf.GFile(path, "rb").read() if "://" in path else None
            tasks.append((len(tasks), path, data, settings))
    workers = cfg.num_workers or os.cpu_count() or 1
    pool = None
    if workers > 1 and len(tasks) > 1:
        # fork: workers run numpy/Pillow only and never touch TensorFlow state.
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap(_encode_one, tasks, chunksize=4)
    else:
        results = map(_encode_one, tasks)
    bar = tqdm(total=len(tasks), unit="img", desc="convert", disable=not cfg.progress,
               smoothing=0.1)
    try:
        for shard in todo:
            shard["skipped"] = []
            final = _join(cfg.output_dir, shard["path"])
            tmp = f"{final}.tmp-{os.getpid()}"
            examples = []
            with tf.io.TFRecordWriter(tmp) as writer:
                for entry in shard["entries"]:
                    _, result, error = next(results)
                    result = finish_one(result, settings)
                    bar.update(1)
                    if error is not None:
                        if cfg.on_error == "raise":
                            raise ConvertError(f"{entry['rel_path']}: {error} "
                                               "(use --on_error=skip to record and skip it)")
                        shard["skipped"].append({"path": entry["rel_path"], "reason": error})
                        continue
                    meta = _example_meta(entry, result)
                    writer.write(records.encode_example(
                        result["encoded"], cfg.encoding, result["height"], result["width"],
                        records.UNLABELED if meta["label"] is None else meta["label"],
                        meta["patient_id"],
                        records.NO_FOLD if meta["fold"] is None else meta["fold"],
                        meta["split"], meta["rel_path"], meta["sha256"]))
                    examples.append(meta)
            sha, size = file_sha256(tmp)
            gf.rename(tmp, final, overwrite=True)
            shard.update(num_examples=len(examples), bytes=size, sha256=sha, reused=False)
            with gf.GFile(_join(cfg.output_dir, f"{PROGRESS_DIR}/{shard['path']}.json"),
                          "w") as f:
                json.dump({"fingerprint": shard["fingerprint"], "num_examples": len(examples),
                           "bytes": size, "sha256": sha, "examples": examples,
                           "skipped": shard["skipped"]}, f)
            metas[shard["path"]] = examples
            skipped.extend(shard["skipped"])
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    _remove_stale(cfg.output_dir, {s["path"] for s in shards})
    seconds = time.perf_counter() - start
    manifest = _manifest(cfg, root, shards, metas, skipped, seconds, len(tasks))
    with gf.GFile(_join(cfg.output_dir, EXAMPLES), "w") as f:
        f.write(examples_table(manifest, metas).to_csv(index=False))
    with gf.GFile(manifest_path + f".tmp-{os.getpid()}", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
    gf.rename(manifest_path + f".tmp-{os.getpid()}", manifest_path, overwrite=True)
    return manifest


def _remove_stale(output_dir: str, keep: set) -> None:
    """Shards from an earlier plan (other counts) or dead temporaries would confuse a glob."""
    from leukemia_tf.data import records
    gf = _gfile()
    for name in gf.listdir(output_dir):
        if name in keep:
            continue
        if records.parse_shard_name(name) or ".tfrecord.tmp-" in name:
            log.warning("removing stale %s", name)
            gf.remove(_join(output_dir, name))


def examples_table(manifest: dict, metas: Dict[str, List[dict]]) -> pd.DataFrame:
    rows = []
    for shard in manifest["shards"]:
        for m in metas[shard["path"]]:
            rows.append({"shard": shard["path"], **{k: v for k, v in m.items()
                                                    if k != "source_shape"}})
    return pd.DataFrame(rows, columns=["shard", "rel_path", "split", "fold", "label",
                                       "patient_id", "sha256"])


def _manifest(cfg, root, shards, metas, skipped, seconds, n_encoded) -> dict:
    from leukemia_tf.data import records
    all_meta = pd.DataFrame([m for s in shards for m in metas[s["path"]]],
                            columns=["rel_path", "split", "fold", "label", "patient_id",
                                     "sha256", "source_shape"])
    splits = {}
    for split in ("train", "validation", "test"):
        part = all_meta[all_meta["split"] == split]
        sh = [s for s in shards if s["split"] == split]
        labels = part["label"].dropna().astype(int)
        splits[split] = {
            "num_examples": int(len(part)),
            "by_label": {"all": int((labels == 1).sum()), "hem": int((labels == 0).sum()),
                         "unlabeled": int(part["label"].isna().sum())},
            "by_fold": {str(int(k)): int(v) for k, v in
                        part["fold"].dropna().astype(int).value_counts().sort_index().items()},
            "num_patients": int(part["patient_id"].replace("", np.nan).nunique()),
            "by_patient": {str(k): int(v) for k, v in
                           part[part["patient_id"] != ""]["patient_id"].value_counts()
                           .sort_index().items()},
            "num_shards": len(sh), "bytes": int(sum(s["bytes"] for s in sh)),
        }
        splits[split]["bytes_per_example"] = (
            round(splits[split]["bytes"] / len(part)) if len(part) else 0)
    dup_table = all_meta.rename(columns={}).assign(fold=all_meta["fold"].astype("Int64"))
    groups = cnmc.duplicate_groups(dup_table)
    warnings = []
    cross_fold = [g for g in groups if g["cross_fold"]]
    cross_split = [g for g in groups if g["cross_split"]]
    if cross_fold:
        warnings.append(f"{len(cross_fold)} groups of byte-identical images cross training "
                        "folds: holding out one fold leaks these images into training")
    if cross_split:
        warnings.append(f"{len(cross_split)} groups of byte-identical images cross splits")
    if skipped:
        warnings.append(f"{len(skipped)} files skipped (see 'skipped')")
    return {
        "schema_version": records.SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_root": root,
        "settings": {**cfg.output_settings(), "shard_size_mb": cfg.shard_size_mb,
                     "num_shards": cfg.num_shards,
                     # 0: every image stored at its own size, as decoded (the canvas
                     # rule and the resize run when the records are read).
                     "stored_size": cfg.image_size,
                     "resize_method": _resize_method()},
        "splits": splits,
        "shards": [{"path": s["path"], "split": s["split"], "fold": s["fold"],
                    "num_examples": s["num_examples"], "bytes": s["bytes"],
                    "sha256": s["sha256"]} for s in shards],
        "duplicates": [g["paths"] for g in groups],
        "duplicate_groups": groups,
        "skipped": skipped,
        "warnings": warnings,
        "stats": {"seconds": round(seconds, 2), "encoded_images": n_encoded,
                  "reused_shards": sum(1 for s in shards if s.get("reused")),
                  "images_per_sec": round(n_encoded / seconds, 1) if seconds else None},
    }


def _resize_method() -> str:
    from leukemia_tf.data import preprocess
    return preprocess.RESIZE_METHOD


def load_manifest(records_dir: str) -> dict:
    path = _join(records_dir, MANIFEST)
    if not _gfile().exists(path):
        raise ConvertError(f"{path} not found: no complete conversion in {records_dir} "
                           "(run tools/convert_to_tfrecords.py)")
    with _gfile().GFile(path, "r") as f:
        return json.load(f)


def verify(records_dir: str) -> dict:
    """Re-read every shard: size, sha256, record count and schema against the manifest.

    Returns a report dict; raises ConvertError listing every problem found.
    """
    import tensorflow as tf
    from leukemia_tf.data import records
    manifest = load_manifest(records_dir)
    problems, counted = [], {}
    for shard in manifest["shards"]:
        path = _join(records_dir, shard["path"])
        if not tf.io.gfile.exists(path):
            problems.append(f"{shard['path']}: missing")
            continue
        sha, size = file_sha256(path)
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
    for split, info in manifest["splits"].items():
        if counted.get(split, 0) != info["num_examples"] and not problems:
            problems.append(f"split {split}: {counted.get(split, 0)} records, manifest says "
                            f"{info['num_examples']}")
    if problems:
        raise ConvertError("verification failed:\n  " + "\n  ".join(problems))
    return {"shards": len(manifest["shards"]), "examples": sum(counted.values()),
            "by_split": counted}


def summarize(manifest: dict) -> str:
    """A human-readable summary table of a manifest."""
    lines = [f"{'split':<11}{'examples':>9}{'ALL':>7}{'hem':>7}{'unlab':>7}{'patients':>9}"
             f"{'shards':>7}{'MB':>9}{'B/img':>9}  folds"]
    for split, s in manifest["splits"].items():
        b = s["by_label"]
        lines.append(f"{split:<11}{s['num_examples']:>9}{b['all']:>7}{b['hem']:>7}"
                     f"{b['unlabeled']:>7}{s['num_patients']:>9}{s['num_shards']:>7}"
                     f"{s['bytes'] / 2**20:>9.1f}{s['bytes_per_example']:>9}  "
                     f"{s['by_fold'] or '-'}")
    st = manifest.get("stats", {})
    lines.append(f"encoding={manifest['settings']['encoding']} "
                 f"stored_size={manifest['settings']['stored_size']} "
                 f"encoded {st.get('encoded_images')} images in {st.get('seconds')} s "
                 f"({st.get('images_per_sec')} img/s), reused shards: {st.get('reused_shards')}")
    lines.append(f"duplicate groups: {len(manifest['duplicates'])}; "
                 f"skipped files: {len(manifest['skipped'])}")
    for s in manifest["skipped"][:20]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    for w in manifest["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)
