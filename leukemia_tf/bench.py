"""Throughput benchmarks: the input pipeline side by side with what users would use instead.

Four measurements (issue 5), each a dict with `images_per_sec` and `peak_rss_mb` keyed by
pipeline name, plus ratios and pass/miss against the project's targets:

  input    the project's pipeline: first pass (decoding every pass from the shards, no
           cache), steady state (after the in-memory cache), and the steady state with
           per-example CPU augmentation in tf.data (why augmentation lives in the model)
  peers    keras image_dataset_from_directory over the BMP folders, the seed notebook's
           read-everything-into-numpy, and the in-memory decode ceiling of the stored bytes
  train    training steps/s fed by the real pipeline vs by in-memory synthetic tensors
  convert  converter images/s and bytes/image per encoding vs just reading the files

Each measurement runs in its own spawned process when `isolate` is on, so its peak RSS
(ru_maxrss) is its own. Absolute numbers drift with other load on the machine: each rate
runs `repeats` times interleaved with the rates it is compared to and the fastest run
counts; training alternates pipeline and synthetic steps and compares median step times.
Each measurement records the load average at its start.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf.data import cnmc, convert, images, pipeline, records, synthetic

AUTOTUNE = tf.data.AUTOTUNE
COMMANDS = ("input", "peers", "train", "convert")
CPU_WORK = ("flip_rot90", "rotate")
# Reference points of issue 5 (2-core, 24 GB machine, 224 px output).
REFERENCE = {"image_dataset_from_directory": 942.0, "seed_numpy": 158.0,
             "seed_numpy_gb_per_1000": 1.2, "h100_seed_cnn_bf16": 13000.0,
             "decode_ceiling": {"bmp": 3100.0, "png": 890.0, "jpeg": 2600.0}}
_SYNTHETIC_DEFAULT_TOTAL = 510  # images in a default SyntheticConfig tree


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how long; the CLI fills it from flags."""
    work_dir: str = "bench_out/work"   # synthetic trees, records and conversions go here
    data_dir: str = ""                 # C-NMC tree; empty: a synthetic one in work_dir
    records_dir: str = ""              # records of data_dir; empty: converted into work_dir
    num_images: int = 0                # synthetic tree size, all splits (0: the default 510)
    full: bool = False                 # synthetic tree with the real counts (~15,000 images)
    synthetic_seed: int = 0
    encoding: str = "png"              # stored encoding when converting for the records
    image_size: int = 224              # output size of every pipeline compared
    batch_size: int = 256
    min_seconds: float = 10.0          # each rate is timed at least this long ...
    min_batches: int = 20              # ... and over at least this many batches
    isolate: bool = True               # one process per measurement (own peak RSS)
    repeats: int = 2                   # runs of each rate, interleaved; the fastest counts
    cpu_work: Tuple[str, ...] = CPU_WORK
    ceiling_encodings: Tuple[str, ...] = ("bmp", "png", "jpeg", "raw", "png@224")
    ceiling_sample: int = 256          # images re-encoded for the per-encoding ceilings
    seed_numpy_limit: int = 2000       # at most this many images for the seed approach
    models: Tuple[str, ...] = ("seed_cnn", "resnet_small")
    precisions: Tuple[str, ...] = ("float32", "mixed_bfloat16")
    train_batch_size: int = 32
    train_steps: int = 20              # timed steps per input, in train_rounds blocks
    train_rounds: int = 20             # blocks alternate pipeline/synthetic (A B B A ...)
    train_augment: bool = True
    encodings: Tuple[str, ...] = ("png", "raw", "bmp", "jpeg")
    convert_workers: int = 0           # 0 = all cores, as the converter's default
    cold_cache: bool = True            # convert: read the sources from disk (page cache evicted)


# ------------------------------------------------------------------ data to benchmark
def synthetic_config(num_images: int = 0, full: bool = False,
                     seed: int = 0) -> synthetic.SyntheticConfig:
    """A synthetic tree of about `num_images` images (all splits) in the default's shape."""
    if full:
        return synthetic.full_config(seed=seed)
    base = synthetic.SyntheticConfig(seed=seed)
    if num_images <= 0:
        return base
    s = num_images / _SYNTHETIC_DEFAULT_TOTAL
    n_all, n_hem = max(1, round(80 * s)), max(1, round(40 * s))
    p_all = min(16, n_all, max(1, round(4 * math.sqrt(s))))
    p_hem = min(9, n_hem, max(1, round(3 * math.sqrt(s))))
    return dataclasses.replace(
        base, train_all=(n_all,) * 3, train_hem=(n_hem,) * 3, patients_all=(p_all,) * 3,
        patients_hem=(p_hem,) * 3, num_validation=max(2, round(90 * s)),
        num_test=max(1, round(60 * s)), num_duplicates=min(4, n_all // 2))


@dataclasses.dataclass(frozen=True)
class Data:
    tree: str         # C-NMC_Leukemia root ("" if only records were given)
    records_dir: str
    manifest: dict


def prepare(cfg: BenchConfig) -> Data:
    """The tree and records to benchmark: given, or generated/converted under work_dir."""
    os.makedirs(cfg.work_dir, exist_ok=True)
    cfg = dataclasses.replace(cfg, work_dir=os.path.abspath(cfg.work_dir))
    tree = cnmc.find_root(cfg.data_dir) if cfg.data_dir else ""
    if not tree and not cfg.records_dir:
        tree = _synthetic_tree(cfg)
    records_dir = cfg.records_dir
    if not records_dir:
        key = hashlib.sha1(os.path.abspath(tree).encode()).hexdigest()[:8]
        records_dir = os.path.join(os.path.dirname(tree), f"records-{cfg.encoding}-{key}")
        if not tf.io.gfile.exists(os.path.join(records_dir, convert.MANIFEST)):
            convert.convert(convert.ConvertConfig(tree, records_dir, encoding=cfg.encoding,
                                                  num_workers=cfg.convert_workers,
                                                  progress=False))
    manifest = pipeline.load(records_dir)
    if not tree and os.path.isdir(manifest.get("source_root", "")):
        tree = manifest["source_root"]
    return Data(tree, records_dir, manifest)


def _synthetic_tree(cfg: BenchConfig) -> str:
    """work_dir/synthetic-<n>-s<seed>/C-NMC_Leukemia, reused when its config matches."""
    scfg = synthetic_config(cfg.num_images, cfg.full, cfg.synthetic_seed)
    name = "full" if cfg.full else str(cfg.num_images or _SYNTHETIC_DEFAULT_TOTAL)
    out = os.path.join(cfg.work_dir, f"synthetic-{name}-s{cfg.synthetic_seed}")
    summary = os.path.join(out, synthetic.SUMMARY_JSON)
    want = json.loads(json.dumps(dataclasses.asdict(scfg)))
    if os.path.exists(summary):
        with open(summary) as f:
            have = json.load(f)
        if have.get("config") == want and "training" in have:  # complete and the same
            return have["root"]
        shutil.rmtree(out)  # ours (it has the summary): its records are stale too
    return synthetic.make_tree(out, scfg)["root"]


def training_files(tree: str) -> List[str]:
    """The training images of a tree (the set every peer reads), in path order."""
    table, _ = cnmc.discover(tree)
    return sorted(table[table["split"] == "train"]["path"])


# ------------------------------------------------------------------ measuring
def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2 ** 20


def _child(fn: Callable[..., dict], args: tuple) -> dict:
    rss0 = current_rss_mb()
    out = fn(*args)
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


def _run_config(records_dir: str, image_size: int, batch_size: int) -> C.Config:
    return C.Config(data=C.DataConfig(records_dir=records_dir, image_size=image_size),
                    model=C.ModelConfig(image_size=image_size),
                    train=C.TrainConfig(batch_size=batch_size))


# ------------------------------------------------------------------ input
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
        from leukemia_tf import augment

        def fn(image):
            x = tf.cast(image, tf.float32)[None]
            x = augment.random_geometry(x, flip=True, rot90=True, rotate_degrees=15.0,
                                        zoom=0.0)
            return tf.cast(tf.clip_by_value(tf.round(x[0]), 0, 255), tf.uint8)
        return fn
    raise ValueError(f"unknown cpu work {kind!r}; choose from {CPU_WORK}")


def cpu_work_dataset(cfg: C.Config, manifest: dict, batch: int, kind: str) -> tf.data.Dataset:
    """The training pipeline of `pipeline.make_dataset` (cached), with per-example CPU
    augmentation mapped after the cache, as a tf.data-side augmentation would be."""
    size, stored = cfg.data.image_size, int(manifest["settings"]["stored_size"])
    files = [s["full_path"] for s in pipeline.shards_for(manifest, cfg.data.records_dir,
                                                         pipeline.Selection("train"))]
    decode = records.decoder(manifest["settings"]["encoding"], stored)
    work = cpu_augment_fn(kind)

    def parse(serialized):
        ex = records.parse_example(serialized)
        return {"image": pipeline.resize_uint8(decode(ex), size),
                "label": ex["image/class/label"]}

    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 16)),
                       num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.cache()
    ds = ds.shuffle(cfg.data.shuffle_buffer).repeat()
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
    manifest = pipeline.load(records_dir)
    cfg = _run_config(records_dir, image_size, batch)
    sel = pipeline.Selection("train")
    n = pipeline.count_examples(manifest, sel)
    if cpu_work:
        ds = cpu_work_dataset(cfg, manifest, batch, cpu_work)
    else:
        ds = pipeline.make_dataset(cfg, sel, True, manifest=manifest, cache=cache,
                                   batch_size=batch)
    # Cached: one epoch fills the cache, the shuffle buffer holds up to 2048 more.
    warmup = (math.ceil((n + cfg.data.shuffle_buffer) / batch) + 2
              if cache == "memory" else 2)
    out = time_batches(iter(ds), warmup, min_batches, min_seconds)
    out.update(num_examples=n, cache=cache, cpu_work=cpu_work or None,
               stored=f"{manifest['settings']['encoding']}@{manifest['settings']['stored_size']}",
               cache_mb=(pipeline.cache_bytes(n, image_size) / 1.1 / 2 ** 20
                         if cache == "memory" else 0.0))
    return out


def input_jobs(cfg: BenchConfig, data: Data) -> Dict[str, tuple]:
    common = (data.records_dir, cfg.image_size, cfg.batch_size)
    timing = (cfg.min_batches, cfg.min_seconds)
    jobs = {"pipeline_first_pass": (pipeline_rate, *common, "none", *timing),
            "pipeline_steady_state": (pipeline_rate, *common, "memory", *timing)}
    for kind in cfg.cpu_work:
        jobs[f"pipeline_steady_state_cpu_{kind}"] = (pipeline_rate, *common, "memory",
                                                     *timing, kind)
    return jobs


def run_input(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    return measure_all(input_jobs(cfg, data), cfg.isolate, cfg.repeats)


# ------------------------------------------------------------------ peers
def idfd_rate(tree: str, image_size: int, batch: int, min_batches: int,
              min_seconds: float) -> dict:
    """tf_keras image_dataset_from_directory over training_data/fold_k/{all,hem}."""
    import tf_keras as keras
    folds = sorted(tf.io.gfile.glob(f"{tree}/{cnmc.TRAIN_DIR}/fold_*"))
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
        with Image.open(path) as im:
            xs.append(np.asarray(im.convert("RGB").resize((image_size, image_size))))
    x = np.array(xs, dtype=np.float32) / 255.0
    seconds = time.perf_counter() - start
    n = len(paths)
    held = sum(a.nbytes for a in xs) + x.nbytes
    return {"images_per_sec": n / seconds, "images": n, "seconds": seconds,
            "rss_growth_mb_per_1000": (peak_rss_mb() - rss0) / n * 1000,
            "held_mb_per_1000": held / 2 ** 20 / n * 1000}


def _encoded_training_images(records_dir: str) -> Tuple[List[bytes], dict]:
    manifest = pipeline.load(records_dir)
    files = [s["full_path"] for s in
             pipeline.shards_for(manifest, records_dir, pipeline.Selection("train"))]
    encoded = []
    for batch in tf.data.TFRecordDataset(files).batch(256):
        encoded += list(records.parse_batch(batch)["image/encoded"].numpy())
    return encoded, manifest


def decode_rate(encoded: List[bytes], fmt: str, stored: int, image_size: int, batch: int,
                min_batches: int, min_seconds: float) -> dict:
    """In-memory decode + resize (as the pipeline does) of encoded bytes, AUTOTUNE."""
    decode = records.decoder(fmt, stored)

    def fn(data):
        return pipeline.resize_uint8(decode({"image/encoded": data}), image_size)
    opts = tf.data.Options()
    opts.deterministic = False
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(encoded, tf.string)).repeat()
    ds = ds.map(fn, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE).with_options(opts)
    out = time_batches(iter(ds), 2, min_batches, min_seconds, count=lambda b: int(b.shape[0]))
    out.update(encoding=fmt, stored_size=stored,
               bytes_per_image=float(np.mean([len(e) for e in encoded])))
    return out


def ceiling_rates(records_dir: str, image_size: int, batch: int, min_batches: int,
                  min_seconds: float, extra: Sequence[str], sample: int) -> dict:
    """The decode ceiling of the stored records, and of other encodings (`enc` or
    `enc@size`, re-encoded in memory from `sample` stored images) for comparison."""
    encoded, manifest = _encoded_training_images(records_dir)
    fmt, stored = manifest["settings"]["encoding"], int(manifest["settings"]["stored_size"])
    out = decode_rate(encoded, fmt, stored, image_size, batch, min_batches, min_seconds)
    out["by_encoding"] = {}
    if extra:
        decode = records.decoder(fmt, stored)
        pixels = [decode({"image/encoded": e}).numpy() for e in encoded[:sample]]
        for spec in extra:
            enc, _, at = spec.partition("@")
            size = int(at) if at else stored
            coded = [images.encode(images.resize(p, size), enc) for p in pixels]
            r = decode_rate(coded, enc, size, image_size, batch, min_batches, min_seconds)
            out["by_encoding"][spec] = {k: r[k] for k in ("images_per_sec", "bytes_per_image")}
    return out


def peer_jobs(cfg: BenchConfig, data: Data) -> Dict[str, tuple]:
    if not data.tree:
        raise ValueError("peers needs the image tree (--data_dir) beside the records")
    timing = (cfg.min_batches, cfg.min_seconds)
    paths = training_files(data.tree)
    if cfg.seed_numpy_limit:
        paths = paths[:cfg.seed_numpy_limit]
    return {"image_dataset_from_directory": (idfd_rate, data.tree, cfg.image_size,
                                             cfg.batch_size, *timing),
            "seed_numpy": (seed_numpy_rate, tuple(paths), cfg.image_size),
            "decode_ceiling": (ceiling_rates, data.records_dir, cfg.image_size,
                               cfg.batch_size, *timing, tuple(cfg.ceiling_encodings),
                               cfg.ceiling_sample)}


def run_peers(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    """The peers with the project's own first pass and steady state, interleaved."""
    jobs = input_jobs(dataclasses.replace(cfg, cpu_work=()), data)
    return measure_all({**jobs, **peer_jobs(cfg, data)}, cfg.isolate, cfg.repeats)


# ------------------------------------------------------------------ train
def train_rates(records_dir: str, model_name: str, precision: str, image_size: int,
                batch: int, steps: int, rounds: int, augment: bool) -> dict:
    """Training steps/s fed by the real pipeline (as train.run builds it) vs by a cached,
    repeated random uint8 dataset, after the cache is filled. Blocks of steps alternate
    A B B A ... so drift cancels; rates are from the median step time of each input."""
    import tf_keras as keras
    from leukemia_tf import models, training
    keras.mixed_precision.set_global_policy(precision)
    try:
        cfg = C.Config(
            data=C.DataConfig(records_dir=records_dir, image_size=image_size),
            model=C.ModelConfig(name=model_name, image_size=image_size,
                                augment=C.AugmentConfig(enabled=augment)),
            train=C.TrainConfig(batch_size=batch, mixed_precision=precision))
        manifest = pipeline.load(records_dir)
        sel = pipeline.Selection("train")
        n = pipeline.count_examples(manifest, sel)
        plan = pipeline.cache_plan(cfg.data, [("train", n)])
        weights = pipeline.class_weights(pipeline.label_counts(manifest, records_dir, sel))
        real = pipeline.make_dataset(cfg, sel, True, manifest=manifest,
                                     cache=plan["train"][0], batch_size=batch, weights=weights)
        rng = np.random.default_rng(0)
        k = 4 * batch
        fake = tf.data.Dataset.from_tensor_slices((
            rng.integers(0, 256, (k, image_size, image_size, 3), dtype=np.uint8),
            rng.integers(0, 2, (k, 1)).astype(np.float32), np.ones(k, np.float32)))
        fake = fake.batch(batch, drop_remainder=True).cache().repeat().prefetch(AUTOTUNE)
        model = models.build_model(cfg.model)
        model.compile(optimizer=training.make_optimizer(cfg, max(1, n // batch), precision),
                      loss=training.make_loss(cfg), metrics=training.make_metrics())
        step = model.make_train_function()
        its = {"pipeline": iter(real), "synthetic": iter(fake)}
        for _ in range(math.ceil(n / batch) + 1):  # the first epoch fills the cache
            next(its["pipeline"])
        for it in its.values():  # trace and warm up on both inputs
            for _ in range(2):
                step(it)["loss"].numpy()
        block = max(1, steps // rounds)
        times: Dict[str, List[float]] = {"pipeline": [], "synthetic": []}
        per_round = []
        for r in range(rounds):
            order = ("pipeline", "synthetic") if r % 2 == 0 else ("synthetic", "pipeline")
            for name in order:
                for _ in range(block):
                    start = time.perf_counter()
                    step(its[name])["loss"].numpy()
                    times[name].append(time.perf_counter() - start)
            per_round.append(sum(times["synthetic"][-block:]) / sum(times["pipeline"][-block:]))
        out = {}
        for name, t in times.items():
            med = float(np.median(t))  # robust to bursts of other load on the machine
            out[name] = {"steps_per_sec": 1 / med, "images_per_sec": batch / med,
                         "mean_steps_per_sec": len(t) / sum(t)}
        out["ratio"] = out["pipeline"]["images_per_sec"] / out["synthetic"]["images_per_sec"]
        out["ratio_of_means"] = (out["pipeline"]["mean_steps_per_sec"]
                                 / out["synthetic"]["mean_steps_per_sec"])
        out.update(round_ratios=per_round, steps=rounds * block, batch=batch,
                   cache=plan["train"][0], model=model_name, precision=precision,
                   images_per_sec=out["pipeline"]["images_per_sec"])
        return out
    finally:
        keras.mixed_precision.set_global_policy("float32")


def run_train(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    m = {}
    for model in cfg.models:
        for precision in cfg.precisions:
            m[f"train/{model}/{precision}"] = measure(
                train_rates, data.records_dir, model, precision, cfg.image_size,
                cfg.train_batch_size, cfg.train_steps, cfg.train_rounds, cfg.train_augment,
                isolate=cfg.isolate)
    return m


# ------------------------------------------------------------------ convert
def evict(paths: Sequence[str]) -> bool:
    """Drop local files from the page cache (no root needed: clean pages only)."""
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
        with open(path, "rb") as f:
            data = f.read()
        hashlib.sha256(data).hexdigest()
        total += len(data)
    seconds = time.perf_counter() - start
    return {"images_per_sec": len(paths) / seconds, "images": len(paths), "seconds": seconds,
            "bytes_per_image": total / len(paths), "cold_cache": cold}


def convert_rate(tree: str, output_dir: str, encoding: str, workers: int,
                 cold: bool = False) -> dict:
    """One conversion from scratch (nothing to resume) and its bytes per image."""
    shutil.rmtree(output_dir, ignore_errors=True)
    if cold:
        table, _ = cnmc.discover(tree)
        cold = evict(list(table["path"]))
    start = time.perf_counter()
    manifest = convert.convert(convert.ConvertConfig(tree, output_dir, encoding=encoding,
                                                     num_workers=workers, progress=False))
    seconds = time.perf_counter() - start
    n = manifest["stats"]["encoded_images"]
    total = sum(s["bytes"] for s in manifest["shards"])
    shutil.rmtree(output_dir, ignore_errors=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"images_per_sec": n / seconds, "images": n, "seconds": seconds,
            "bytes_per_image": total / n, "peak_rss_children_mb": children, "cold_cache": cold}


def run_convert(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    if not data.tree:
        raise ValueError("convert needs the image tree (--data_dir)")
    table, _ = cnmc.discover(data.tree)
    paths = tuple(sorted(table["path"]))
    jobs = {"read_files": (read_rate, paths, cfg.cold_cache)}
    if cfg.cold_cache:
        jobs["read_files_warm"] = (read_rate, paths, False)
    for enc in cfg.encodings:
        jobs[f"convert_{enc}"] = (convert_rate, data.tree,
                                  os.path.join(cfg.work_dir, f"convert-{enc}"), enc,
                                  cfg.convert_workers, cfg.cold_cache)
    return measure_all(jobs, cfg.isolate, cfg.repeats)


# ------------------------------------------------------------------ report
def machine_info() -> dict:
    import psutil
    import tf_keras
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": model, "ram_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "tf_version": tf.__version__, "tf_keras_version": tf_keras.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def _rate(m: dict, name: str) -> Optional[float]:
    return m[name]["images_per_sec"] if name in m else None


def ratios(m: Dict[str, dict]) -> Dict[str, float]:
    """The project's pipeline against each peer and reference, where both were measured."""
    out = {}
    ss, fp = _rate(m, "pipeline_steady_state"), _rate(m, "pipeline_first_pass")
    for peer in ("image_dataset_from_directory", "seed_numpy", "decode_ceiling"):
        if _rate(m, peer):
            for name, mine in (("steady_state", ss), ("first_pass", fp)):
                if mine:
                    out[f"{name}_vs_{peer}"] = mine / _rate(m, peer)
    if ss:
        out["steady_state_vs_reference_image_dataset_from_directory"] = (
            ss / REFERENCE["image_dataset_from_directory"])
        out["steady_state_vs_h100_seed_cnn"] = ss / REFERENCE["h100_seed_cnn_bf16"]
        for kind in CPU_WORK:
            work = _rate(m, f"pipeline_steady_state_cpu_{kind}")
            if work:
                out[f"cpu_{kind}_vs_steady_state"] = work / ss
    for name, r in m.items():
        if name.startswith("train/"):
            out[f"{name}/pipeline_vs_synthetic"] = r["ratio"]
        for read in ("read_files", "read_files_warm"):
            if name.startswith("convert_") and _rate(m, read):
                out[f"{name}_vs_{read}"] = r["images_per_sec"] / _rate(m, read)
    return out


def targets(m: Dict[str, dict], r: Dict[str, float]) -> List[dict]:
    """The issue's targets that these measurements can decide: target, measured, pass."""
    rows = []

    def add(name, op, target, measured):
        if measured is not None:
            ok = measured >= target if op == ">=" else measured < target
            rows.append({"name": name, "target": f"{op} {target:g}",
                         "measured": round(measured, 3), "pass": bool(ok)})
    add("steady state img/s", ">=", 40000, _rate(m, "pipeline_steady_state"))
    add("steady state / image_dataset_from_directory", ">=", 40,
        r.get("steady_state_vs_image_dataset_from_directory"))
    add("steady state / one H100 on seed CNN (13,000)", ">=", 3,
        r.get("steady_state_vs_h100_seed_cnn"))
    add("first pass / decode ceiling (stored encoding)", ">=", 0.9,
        r.get("first_pass_vs_decode_ceiling"))
    for name, x in m.items():
        if name.startswith("train/"):
            add(f"{name}: pipeline / synthetic input", ">=", 0.95, x["ratio"])
    if "pipeline_first_pass" in m:
        add("peak RSS streaming, no cache (MB)", "<", 3072, m["pipeline_first_pass"]["peak_rss_mb"])
    if "pipeline_steady_state" in m:
        s = m["pipeline_steady_state"]
        add("peak RSS cached - cached bytes (MB)", "<", 1536, s["peak_rss_mb"] - s["cache_mb"])
    for name, x in r.items():
        if name.startswith("convert_"):
            enc, _, read = name.partition("_vs_")
            cache = "warm page cache" if read.endswith("warm") else (
                "from disk" if m[read].get("cold_cache") else "page cache")
            add(f"{enc} / read files ({cache})", ">=", 0.8, x)
    return rows


def run(command: str, cfg: BenchConfig) -> dict:
    """Run one subcommand (input, peers, train, convert) or "all"; returns the results
    dict that the CLI prints and writes as JSON."""
    if command not in COMMANDS + ("all",):
        raise ValueError(f"unknown benchmark {command!r}; choose from {COMMANDS + ('all',)}")
    started = datetime.datetime.now(datetime.timezone.utc)
    data = prepare(cfg)
    m: Dict[str, dict] = {}
    todo = COMMANDS if command == "all" else (command,)
    if "input" in todo and "peers" in todo:  # one interleaved set: the ratios are fair
        m.update(measure_all({**input_jobs(cfg, data), **peer_jobs(cfg, data)},
                             cfg.isolate, cfg.repeats))
    elif "input" in todo:
        m.update(run_input(cfg, data))
    elif "peers" in todo:
        m.update(run_peers(cfg, data))
    if "train" in todo:
        m.update(run_train(cfg, data))
    if "convert" in todo:
        m.update(run_convert(cfg, data))
    r = ratios(m)
    s = data.manifest["settings"]
    return {
        "command": command, "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started)
                         .total_seconds(), 1),
        "machine": machine_info(),
        "settings": {**dataclasses.asdict(cfg), "tree": data.tree,
                     "records_dir": data.records_dir, "stored_encoding": s["encoding"],
                     "stored_size": s["stored_size"],
                     "num_train_images": pipeline.count_examples(
                         data.manifest, pipeline.Selection("train"))},
        "images_per_sec": {k: v["images_per_sec"] for k, v in m.items()},
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in m.items()},
        "ratios": r, "targets": targets(m, r), "reference": REFERENCE, "measurements": m,
    }


def format_table(result: dict) -> str:
    """The printed report: measurements, ratios, targets."""
    m = result["measurements"]
    st = result["settings"]
    mc = result["machine"]
    lines = [f"leukemia-bench {result['command']}  {result['date']}  {mc['cpu_model']} "
             f"x{mc['cpus_usable']}, {mc['ram_gb']} GB, TF {mc['tf_version']}",
             f"{st['num_train_images']} training images, stored {st['stored_encoding']}"
             f"@{st['stored_size']}, output {st['image_size']}px, batch {st['batch_size']}",
             "", f"{'measurement':<44}{'img/s':>11}{'peak RSS MB':>13}{'load':>6}  notes"]
    for name, x in m.items():
        notes = []
        if "bytes_per_image" in x:
            notes.append(f"{x['bytes_per_image'] / 1024:.0f} KiB/img")
        if "rss_growth_mb_per_1000" in x:
            notes.append(f"RAM/1000 img: {x['rss_growth_mb_per_1000']:.0f} MB RSS growth, "
                         f"{x['held_mb_per_1000']:.0f} MB held")
        if x.get("cache_mb"):
            notes.append(f"cache {x['cache_mb']:.0f} MB")
        if len(x.get("runs_images_per_sec", ())) > 1:
            notes.append("runs " + "/".join(f"{v:.0f}" for v in x["runs_images_per_sec"]))
        if "ratio" in x:
            notes.append(f"{x['pipeline']['steps_per_sec']:.2f} vs "
                         f"{x['synthetic']['steps_per_sec']:.2f} steps/s synthetic (median "
                         f"step); ratio of means {x['ratio_of_means']:.3f}")
        for enc, e in x.get("by_encoding", {}).items():
            notes.append(f"{enc}: {e['images_per_sec']:.0f}")
        lines.append(f"{name:<44}{x['images_per_sec']:>11.1f}{x['peak_rss_mb']:>13.0f}"
                     f"{x['load_1m']:>6.1f}  {'; '.join(notes)}")
    if result["ratios"]:
        lines += ["", f"{'ratio':<56}{'value':>10}"]
        lines += [f"{k:<56}{v:>10.3f}" for k, v in result["ratios"].items()]
    if result["targets"]:
        lines += ["", f"{'target':<56}{'target':>10}{'measured':>12}  pass"]
        lines += [f"{t['name']:<56}{t['target']:>10}{t['measured']:>12g}  "
                  f"{'PASS' if t['pass'] else 'MISS'}" for t in result["targets"]]
    return "\n".join(lines)
