"""Benchmark machinery: per-measurement processes, batch timing, and the rates of the
project's training pipeline, of its peers (keras, seed approach, decode ceiling) and of
conversion.

leukemia_tf.bench.plan plans the runs; this module, limits.py, train.py and encodings.py
measure; report.py compares.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import math
import multiprocessing
import os
import resource
import time
from io import BytesIO
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf import io
from leukemia_tf.bench.settings import CPU_WORK  # noqa: F401  (its home)
from leukemia_tf.data import cnmc, convert, images, pipeline, preprocess, records
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data.pipeline import decoder, parser, reader
from leukemia_tf.model import augment


AUTOTUNE = tf.data.AUTOTUNE


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2 ** 20


class MeasurementError(RuntimeError):
    """A measurement failed; the message is the original error's, with its traceback."""


def _child(fn: Callable[..., dict], args: tuple) -> dict:
    """fn(*args) with RSS figures; an error comes back as text. TensorFlow's errors do
    not survive pickling (their __init__ takes other arguments), which a process pool
    reports only as BrokenProcessPool: the text keeps the original message."""
    rss0 = current_rss_mb()
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001 - re-raised by `measure` with its message
        import traceback
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    out.setdefault("peak_rss_mb", peak_rss_mb())
    out.setdefault("rss_before_mb", rss0)
    return out


def measure(fn: Callable[..., dict], *args, isolate: bool = True) -> dict:
    """fn(*args) -> dict, with `peak_rss_mb` and the load average at the start.

    isolate: in a fresh spawned process, so the peak RSS is this measurement's alone
    (in-process, ru_maxrss is the process's peak so far and says little).
    """
    load = os.getloadavg()[0]
    if not isolate:
        out = _child(fn, args)
    else:
        ctx = multiprocessing.get_context("spawn")  # fork would inherit TF threads
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
            out = ex.submit(_child, fn, args).result()
    if "error" in out:
        raise MeasurementError(f"{getattr(fn, '__name__', fn)} failed: {out['error']}\n"
                               f"{out['traceback']}")
    out["load_1m"] = round(load, 2)
    out["isolated"] = isolate
    return out


def measure_all(jobs: Dict[str, tuple], isolate: bool, repeats: int) -> Dict[str, dict]:
    """Run each job {name: (fn, *args)} `repeats` times, interleaved (A B C A B C), and
    keep each one's fastest run: other load on the machine only ever slows a run down,
    and interleaving exposes the compared measurements to the same conditions."""
    runs: Dict[str, List[dict]] = {name: [] for name in jobs}
    for _ in range(max(1, repeats)):
        for name, (fn, *args) in jobs.items():
            runs[name].append(measure(fn, *args, isolate=isolate))
    out = {}
    for name, rs in runs.items():
        best = dict(max(rs, key=lambda r: r["images_per_sec"]))
        best["runs_images_per_sec"] = [round(r["images_per_sec"], 1) for r in rs]
        best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
        out[name] = best
    return out


def time_batches(it, warmup: int, min_batches: int, min_seconds: float,
                 count: Callable = lambda b: int(b[0].shape[0])) -> dict:
    """Pull `warmup` batches, then time at least `min_batches` and `min_seconds`.

    Batches are touched only by counting their rows (a static shape): copying them to
    numpy would measure memcpy, not the pipeline.
    """
    for _ in range(warmup):
        next(it)
    n = b = 0
    start = time.perf_counter()
    while b < min_batches or time.perf_counter() - start < min_seconds:
        n += count(next(it))
        b += 1
    seconds = time.perf_counter() - start
    return {"images_per_sec": n / seconds, "images": n, "batches": b, "seconds": seconds}


# ------------------------------------------------------------------ input


def idfd_rate(tree: str, image_size: int, batch: int, min_batches: int,
              min_seconds: float) -> dict:
    """tf_keras image_dataset_from_directory over training_data/fold_k/{all,hem}."""
    import tf_keras as keras
    folds = io.glob(io.join(tree, cnmc.TRAIN_DIR, "fold_*"))
    ds = None
    for fold in folds:  # one call per fold: labels come from its all/ and hem/ folders
        part = keras.utils.image_dataset_from_directory(
            fold, labels="inferred", label_mode="binary", class_names=["hem", "all"],
            image_size=(image_size, image_size), batch_size=batch, shuffle=True, seed=0)
        ds = part if ds is None else ds.concatenate(part)
    out = time_batches(iter(ds.repeat()), 1, min_batches, min_seconds)
    out["folders"] = len(folds)
    return out


def seed_numpy_rate(paths: Sequence[str], image_size: int) -> dict:
    """The seed notebook: every image read into a list, resized, one float array."""
    from PIL import Image
    rss0 = current_rss_mb()
    start = time.perf_counter()
    xs = []
    for path in paths:
        with Image.open(BytesIO(io.read_bytes(path))) as im:
            xs.append(np.asarray(im.convert("RGB").resize((image_size, image_size))))
    x = np.array(xs, dtype=np.float32) / 255.0
    seconds = time.perf_counter() - start
    n = len(paths)
    held = sum(a.nbytes for a in xs) + x.nbytes
    return {"images_per_sec": n / seconds, "images": n, "seconds": seconds,
            "rss_growth_mb_per_1000": (peak_rss_mb() - rss0) / n * 1000,
            "held_mb_per_1000": held / 2 ** 20 / n * 1000}


def _encoded_training_images(records_dir: str) -> Tuple[List[bytes], List[Tuple[int, int]],
                                                        dict]:
    """The stored bytes of every training record, each image's (height, width), manifest."""
    manifest = manifest_lib.load(records_dir)
    files = [s["full_path"] for s in
             manifest_lib.shards_for(manifest, records_dir, manifest_lib.Selection("train"))]
    encoded, shapes = [], []
    for batch in tf.data.TFRecordDataset(files).batch(256):
        ex = records.parse_batch(batch)
        encoded += list(ex["image/encoded"].numpy())
        shapes += list(zip(ex["image/height"].numpy().tolist(),
                           ex["image/width"].numpy().tolist()))
    return encoded, shapes, manifest


def decode_rate(encoded: List[bytes], fmt: str, stored: int, spec: preprocess.Spec,
                batch: int, min_batches: int, min_seconds: float,
                shapes: Sequence[Tuple[int, int]] = ()) -> dict:
    """In-memory decode + preprocessing (as the pipeline does) of encoded bytes, AUTOTUNE.

    stored: the side of every stored image (0: originals of any size, whose (height,
    width) `shapes` gives: raw bytes need them, as the records carry them); images stored
    at spec.image_size are already model input and are not resized again.
    """
    decode = records.decoder(fmt, stored)
    prepared = stored == spec.image_size and stored != spec.canvas_size
    if not shapes:
        if fmt == "raw" and not stored:
            raise ValueError("raw images of their own sizes need their shapes")
        shapes = [(stored, stored)] * len(encoded)

    def fn(ex):
        image = decode(ex)
        return image if prepared else preprocess.to_model_input(image, spec)
    opts = tf.data.Options()
    opts.deterministic = False
    ds = tf.data.Dataset.from_tensor_slices({
        "image/encoded": tf.constant(encoded, tf.string),
        "image/height": tf.constant([h for h, _ in shapes], tf.int64),
        "image/width": tf.constant([w for _, w in shapes], tf.int64)}).repeat()
    ds = ds.map(fn, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE).with_options(opts)
    out = time_batches(iter(ds), 2, min_batches, min_seconds, count=lambda b: int(b.shape[0]))
    out.update(encoding=fmt, stored_size=stored,
               bytes_per_image=float(np.mean([len(e) for e in encoded])))
    return out


# ------------------------------------------------------------------ the training pipeline
def cpu_augment_fn(kind: str) -> Callable:
    """Per-example augmentation on uint8 [S, S, 3] as a tf.data map would run it.

    flip_rot90: random flips and quarter turns (exact, copies only); rotate: the model's
    flips, quarter turns and +-15 degree bilinear rotation (`augment.random_geometry`).
    """
    if kind == "flip_rot90":
        def fn(image):
            image = tf.image.random_flip_left_right(image)
            image = tf.image.random_flip_up_down(image)
            return tf.image.rot90(image, tf.random.uniform([], 0, 4, tf.int32))
        return fn
    if kind == "rotate":
        def fn(image):
            x = tf.cast(image, tf.float32)[None]
            x = augment.random_geometry(x, flip=True, rot90=True, rotate_degrees=15.0,
                                        zoom=0.0)
            return tf.cast(tf.clip_by_value(tf.round(x[0]), 0, 255), tf.uint8)
        return fn
    raise ValueError(f"unknown cpu work {kind!r}; choose from {CPU_WORK}")


def cpu_work_dataset(data: C.DataConfig, manifest: dict, batch: int,
                     kind: str) -> tf.data.Dataset:
    """The training pipeline of `pipeline.make_dataset` (cached), with per-example CPU
    augmentation mapped after the cache, as a tf.data-side augmentation would be."""
    spec = parser.records_spec(manifest, data.image_size)
    files = [s["full_path"] for s in manifest_lib.shards_for(manifest, data.records_dir,
                                                             manifest_lib.Selection("train"))]
    decode = decoder.make_decoder(manifest["settings"])
    to_input = parser.example_parser(spec, int(manifest["settings"]["stored_size"] or 0))
    work = cpu_augment_fn(kind)

    def parse(serialized):
        return to_input(decode(serialized))

    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 16)),
                       num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.cache()
    ds = ds.shuffle(data.shuffle_buffer).repeat()
    ds = ds.map(lambda e: {"image": work(e["image"]), "label": e["label"]},
                num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda b: (b["image"], tf.cast(b["label"], tf.float32)[:, None]),
                num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def pipeline_rate(records_dir: str, image_size: int, batch: int, cache: str,
                  min_batches: int, min_seconds: float, cpu_work: str = "") -> dict:
    """Images/s of the training pipeline: cache "none" decodes every pass (the first-pass
    rate); "memory" is timed after a warm-up that fills the cache (the steady state)."""
    manifest = manifest_lib.load(records_dir)
    data = C.DataConfig(records_dir=records_dir, image_size=image_size)
    sel = manifest_lib.Selection("train")
    n = manifest_lib.count_examples(manifest, sel)
    if cpu_work:
        ds = cpu_work_dataset(data, manifest, batch, cpu_work)
    else:
        ds = pipeline.make_dataset(data, sel, training=True, batch_size=batch,
                                   manifest=manifest, cache=cache)
    # Cached: one epoch fills the cache, the shuffle buffer holds up to 2048 more.
    warmup = (math.ceil((n + data.shuffle_buffer) / batch) + 2
              if cache == "memory" else 2)
    out = time_batches(iter(ds), warmup, min_batches, min_seconds)
    out.update(num_examples=n, cache=cache, cpu_work=cpu_work or None,
               stored=f"{manifest['settings']['encoding']}@{manifest['settings']['stored_size']}",
               cache_mb=(reader.cache_bytes(n, image_size) / 1.1 / 2 ** 20
                         if cache == "memory" else 0.0))
    return out


def parse_encoding(text: str, image_size: int) -> Tuple[str, int, int]:
    """`enc[level][@size|@out]` -> (encoding, png level, stored size; 0 = originals).

    png0/png1/png6: zlib level (plain `png` is the converter's default level 1); `@out`
    stores pre-resized to the benchmark's output size, `@224` to 224 px.
    """
    name, _, at = text.partition("@")
    level = 1
    if name.startswith("png") and name[3:].isdigit():
        name, level = "png", int(name[3:])
    if name not in images.ENCODINGS or not 0 <= level <= 9:
        raise ValueError(f"unknown stored encoding {text!r}: enc[level][@size|@out] with enc "
                         f"one of {', '.join(images.ENCODINGS)} (png0..png9)")
    size = image_size if at == "out" else int(at) if at else 0
    return name, level, size


def ceiling_rates(records_dir: str, image_size: int, batch: int, min_batches: int,
                  min_seconds: float, extra: Sequence[str], sample: int) -> dict:
    """The decode ceiling of the stored records, and of other stored encodings
    (`parse_encoding`: re-encoded in memory from `sample` stored images; pre-resized by
    `preprocess` as the converter's --image_size does) for comparison."""
    encoded, shapes, manifest = _encoded_training_images(records_dir)
    fmt, stored = manifest["settings"]["encoding"], int(manifest["settings"]["stored_size"] or 0)
    spec = parser.records_spec(manifest, image_size)
    out = decode_rate(encoded, fmt, stored, spec, batch, min_batches, min_seconds, shapes)
    out["by_encoding"] = {}
    if extra:
        decode = records.decoder(fmt, stored)
        pixels = [decode({"image/encoded": e, "image/height": h, "image/width": w}).numpy()
                  for e, (h, w) in zip(encoded[:sample], shapes[:sample])]
        for text in extra:
            enc, level, size = parse_encoding(text, image_size)
            if size:
                make = preprocess.function_for(dataclasses.replace(spec, image_size=size))
                made = [make(p).numpy() for p in pixels]
            else:
                made = pixels
            coded = [images.encode(p, enc, png_compression=level) for p in made]
            r = decode_rate(coded, enc, size, spec, batch, min_batches, min_seconds,
                            [p.shape[:2] for p in made])
            out["by_encoding"][text] = {k: r[k] for k in ("images_per_sec",
                                                          "bytes_per_image")}
    return out


def evict(paths: Sequence[str]) -> bool:
    """Drop local files from the page cache (no root needed: clean pages only)."""
    if any(io.is_url(p) for p in paths):
        return False
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def read_rate(paths: Sequence[str], cold: bool = False) -> dict:
    """Just reading the source files: all bytes and their sha256, one after another."""
    cold = cold and evict(paths)
    start, total = time.perf_counter(), 0
    for path in paths:
        data = io.read_bytes(path)
        hashlib.sha256(data).hexdigest()
        total += len(data)
    seconds = time.perf_counter() - start
    return {"images_per_sec": len(paths) / seconds, "images": len(paths), "seconds": seconds,
            "bytes_per_image": total / len(paths), "cold_cache": cold}


def convert_rate(tree: str, output_dir: str, encoding: str, workers: int,
                 cold: bool = False) -> dict:
    """One conversion from scratch (nothing to resume) and its bytes per image."""
    io.rmtree(output_dir)
    if cold:
        table, _ = cnmc.discover(tree)
        cold = evict(list(table["path"]))
    start = time.perf_counter()
    manifest = convert.convert(convert.ConvertConfig(tree, output_dir, encoding=encoding,
                                                     num_workers=workers, progress=False))
    seconds = time.perf_counter() - start
    n = manifest["stats"]["encoded_images"]
    total = sum(s["bytes"] for s in manifest["shards"])
    io.rmtree(output_dir)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"images_per_sec": n / seconds, "images": n, "seconds": seconds,
            "bytes_per_image": total / n, "peak_rss_children_mb": children, "cold_cache": cold}
