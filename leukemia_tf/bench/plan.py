"""Throughput benchmarks: each project figure beside the limit it is held against, both
measured in the same run (absolute rates measure the machine; the ratios the project).

Four measurements, each a dict with `images_per_sec` and `peak_rss_mb` keyed by
pipeline name, plus ratios and pass/miss of ratio targets (report.py):

  input    the project's pipeline: first pass (decoding every pass from the shards, no
           cache) against the in-memory decode ceiling of the stored bytes; steady state
           (after the in-memory cache) against a bare cached-tensor tf.data pipeline of
           the same N, size and batch; the steady state with per-example CPU augmentation in tf.data
  peers    keras image_dataset_from_directory over the BMP folders, the seed notebook's
           read-everything-into-numpy, and the decode ceilings of other stored encodings
  train    the train step fed by the real pipeline vs by a device-resident synthetic
           batch, with the model's FLOPs per image and the machine's dense FLOP/s (FLOP
           utilisation); optionally a sweep of the step settings (bench/train.py)
  convert  converter images/s and bytes/image per encoding vs just reading the files, and
           the first pass per stored encoding vs image_dataset_from_directory

Each measurement runs in its own spawned process when `isolate` is on, so its peak RSS
(ru_maxrss) is its own. Absolute numbers drift with other load on the machine: each rate
runs `repeats` times interleaved with the rates it is compared to and the fastest run
counts; training alternates pipeline and synthetic steps and compares median step times.
Each measurement records the load average at its start.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
from typing import Dict, List

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from leukemia_tf import config as C
from leukemia_tf import io
# CPU_WORK, REFERENCE and the result helpers stay importable from here (the CLI uses them).
from leukemia_tf.bench import encodings as stored_encodings
from leukemia_tf.bench import limits
from leukemia_tf.bench import train as train_bench
from leukemia_tf.bench.rates import (CPU_WORK,  # noqa: F401
                                     ceiling_rates, convert_rate, idfd_rate, measure,
                                     measure_all, parse_encoding, pipeline_rate, read_rate,
                                     seed_numpy_rate)
from leukemia_tf.bench.settings import COMMANDS, BenchConfig  # noqa: F401
from leukemia_tf.bench.report import (attach_limits, format_table,  # noqa: F401
                                      machine_info, ratios, targets)
from leukemia_tf.data import cnmc, convert, synthetic
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.model import registry

_SYNTHETIC_DEFAULT_TOTAL = 510  # images in a default SyntheticConfig tree


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


def _absolute(path: str) -> str:
    return path if io.is_url(path) else os.path.abspath(path)


def prepare(cfg: BenchConfig) -> Data:
    """The tree and records to benchmark: given, or generated/converted under work_dir."""
    io.makedirs(cfg.work_dir)
    cfg = dataclasses.replace(cfg, work_dir=_absolute(cfg.work_dir))
    tree = cnmc.find_root(cfg.data_dir) if cfg.data_dir else ""
    if not tree and not cfg.records_dir:
        tree = _synthetic_tree(cfg)
    records_dir = cfg.records_dir
    if not records_dir:
        key = hashlib.sha1(_absolute(tree).encode()).hexdigest()[:8]
        records_dir = io.join(io.dirname(tree), f"records-{cfg.encoding}-{key}")
        if not io.exists(manifest_lib.manifest_path(records_dir)):
            convert.convert(convert.ConvertConfig(tree, records_dir, encoding=cfg.encoding,
                                                  num_workers=cfg.convert_workers,
                                                  progress=False))
    manifest = manifest_lib.load(records_dir)
    source = manifest.get("source_root", "")
    if not tree and source and io.isdir(source):
        tree = source
    return Data(tree, records_dir, manifest)


def _synthetic_tree(cfg: BenchConfig) -> str:
    """work_dir/synthetic-<n>-s<seed>/C-NMC_Leukemia, reused when its config matches."""
    scfg = synthetic_config(cfg.num_images, cfg.full, cfg.synthetic_seed)
    name = "full" if cfg.full else str(cfg.num_images or _SYNTHETIC_DEFAULT_TOTAL)
    out = io.join(cfg.work_dir, f"synthetic-{name}-s{cfg.synthetic_seed}")
    summary = io.join(out, synthetic.SUMMARY_JSON)
    want = json.loads(json.dumps(dataclasses.asdict(scfg)))
    if io.exists(summary):
        have = io.read_json(summary)
        if have.get("config") == want and "training" in have:  # complete and the same
            return have["root"]
        io.rmtree(out)  # ours (it has the summary): its records are stale too
    return synthetic.make_tree(out, scfg)["root"]


def training_files(tree: str) -> List[str]:
    """The training images of a tree (the set every peer reads), in path order."""
    table, _ = cnmc.discover(tree)
    return sorted(table[table["split"] == "train"]["path"])


def input_jobs(cfg: BenchConfig, data: Data) -> Dict[str, tuple]:
    common = (data.records_dir, cfg.image_size, cfg.batch_size)
    timing = (cfg.min_batches, cfg.min_seconds)
    n = manifest_lib.count_examples(data.manifest, manifest_lib.Selection("train"))
    jobs = {"pipeline_first_pass": (pipeline_rate, *common, "none", *timing),
            "pipeline_steady_state": (pipeline_rate, *common, "memory", *timing),
            "decode_ceiling": (ceiling_rates, *common, *timing, (), 0),
            "bare_pipeline": (limits.bare_rate, n, cfg.image_size, cfg.batch_size,
                              C.DataConfig().shuffle_buffer, *timing)}
    for kind in cfg.cpu_work:
        jobs[f"pipeline_steady_state_cpu_{kind}"] = (pipeline_rate, *common, "memory",
                                                     *timing, kind)
    return jobs


def run_input(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    return measure_all(input_jobs(cfg, data), cfg.isolate, cfg.repeats)


# ------------------------------------------------------------------ peers
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
    jobs = {k: v for k, v in input_jobs(dataclasses.replace(cfg, cpu_work=()), data).items()
            if k.startswith("pipeline_") or k == "bare_pipeline"}
    return measure_all({**jobs, **peer_jobs(cfg, data)}, cfg.isolate, cfg.repeats)


# ------------------------------------------------------------------ train
def train_rows(cfg: BenchConfig) -> List[train_bench.StepSettings]:
    """The default rows (each model and precision, the configured step settings), then
    the sweep's rows when asked for."""
    rows = [train_bench.StepSettings(m, p, cfg.jit_compile, cfg.steps_per_execution)
            for m in cfg.models for p in cfg.precisions]
    if cfg.sweep:
        rows += [r for r in train_bench.sweep_rows(
            cfg.models, cfg.sweep_precisions, cfg.sweep_jit, cfg.sweep_steps_per_execution,
            cfg.sweep_threads) if r not in rows]
    return rows


def run_train(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    """Each row in its own process when isolated (thread pools are set at start-up)."""
    m = {}
    defaults = len(cfg.models) * len(cfg.precisions)
    for i, row in enumerate(train_rows(cfg)):
        sweep = i >= defaults
        trace = (io.join(cfg.profile_dir, row.name.replace("/", "_"))
                 if cfg.profile_dir else "")
        m[row.name + ("/sweep" if sweep else "")] = measure(
            train_bench.train_rates, data.records_dir, row, cfg.image_size,
            cfg.train_batch_size, cfg.train_steps, cfg.train_rounds, cfg.train_augment,
            sweep, cfg.flops_seconds, trace, isolate=cfg.isolate)
    return m


# ------------------------------------------------------------------ convert
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
                                  io.join(cfg.work_dir, f"convert-{enc}"), enc,
                                  cfg.convert_workers, cfg.cold_cache)
    m = measure_all(jobs, cfg.isolate, cfg.repeats)
    m.update(run_first_pass(cfg, data))
    return m


def run_first_pass(cfg: BenchConfig, data: Data) -> Dict[str, dict]:
    """The first pass per stored encoding, interleaved with image_dataset_from_directory
    on the same images (its first pass too: it never caches)."""
    if not cfg.first_pass_encodings:
        return {}
    timing = (cfg.min_batches, cfg.min_seconds)
    jobs = stored_encodings.first_pass_jobs(
        data.tree, cfg.work_dir, cfg.first_pass_encodings, cfg.image_size, cfg.batch_size,
        *timing, cfg.convert_workers)
    jobs["first_pass/image_dataset_from_directory"] = (
        idfd_rate, data.tree, cfg.image_size, cfg.batch_size, *timing)
    return measure_all(jobs, cfg.isolate, cfg.repeats)


# ------------------------------------------------------------------ report
def run(command: str, cfg: BenchConfig) -> dict:
    """Run one subcommand (input, peers, train, convert) or "all"; returns the results
    dict that the CLI prints and writes as JSON."""
    if command not in COMMANDS + ("all",):
        raise ValueError(f"unknown benchmark {command!r}; choose from {COMMANDS + ('all',)}")
    unknown = [m for m in cfg.models if m not in registry.MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; registered: {sorted(registry.MODELS)}")
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
    attach_limits(m)
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
                     "num_train_images": manifest_lib.count_examples(
                         data.manifest, manifest_lib.Selection("train"))},
        "images_per_sec": {k: v["images_per_sec"] for k, v in m.items()},
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in m.items()},
        "ratios": r, "targets": targets(m, r), "measurements": m,
    }


def save(result: dict, path: str) -> None:
    """Write a `run` result as JSON through leukemia_tf.io (local, gs://, ram://)."""
    io.write_json(path, result)
