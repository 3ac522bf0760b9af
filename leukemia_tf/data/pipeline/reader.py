"""Layer 3 of the pipeline: files, sharding, interleave, CV filter, cache, shuffle, batching.

The CPU path is copy-only after the first pass: decode and resize happen once, the uint8
result is cached (in memory when it fits the RAM budget, see `cache_plan`). Evaluation
data is never shuffled, dropped or repeated: every image is read exactly once.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import psutil
import tensorflow as tf

from leukemia_tf import io
from leukemia_tf.config import DataConfig
from leukemia_tf.data import grouping, records

AUTOTUNE = tf.data.AUTOTUNE


def available_ram_bytes() -> int:
    """Free RAM now, in bytes."""
    return int(psutil.virtual_memory().available)


def cache_bytes(num_examples: int, image_size: int) -> int:
    """Memory a decoded uint8 cache needs (10% for tensors' bookkeeping)."""
    return int(num_examples * image_size * image_size * 3 * 1.1)


def cache_plan(cfg: DataConfig, needs: Sequence[Tuple[str, int]],
               available: Optional[int] = None) -> Dict[str, Tuple[str, str]]:
    """Decide the cache of each dataset, in order, against one RAM budget.

    Args:
      needs: (name, num_examples) per dataset, most important first (training data).
      available: free RAM in bytes (default: measured now).

    Returns:
      name -> (mode, reason) with mode "memory", "none" or "disk:<path>".
    """
    if cfg.cache != "auto":
        if cfg.cache not in ("memory", "none") and not cfg.cache.startswith("disk:"):
            raise ValueError(f"cache must be auto, memory, none or disk:<path>, not {cfg.cache!r}")
        return {name: (cfg.cache, "set by --cache") for name, _ in needs}
    budget = int(cfg.cache_budget_gb * 2 ** 30) if cfg.cache_budget_gb > 0 else \
        int(0.5 * (available if available is not None else available_ram_bytes()))
    plan, used = {}, 0
    for name, n in needs:
        need = cache_bytes(n, cfg.image_size)
        mb = 2 ** 20
        if used + need <= budget:
            used += need
            plan[name] = ("memory", f"{need / mb:.0f} MB fits the budget "
                                    f"({(budget - used) / mb:.0f} MB left of {budget / mb:.0f})")
        else:
            plan[name] = ("none", f"{need / mb:.0f} MB exceeds the {(budget - used) / mb:.0f} "
                                  "MB left of the RAM budget: decoding every epoch")
    return plan


def read_records(data: DataConfig, files: List[str], *, training: bool,
                 input_context: Optional[tf.distribute.InputContext] = None
                 ) -> tf.data.Dataset:
    """Serialized records of `files`: this input pipeline's share, files shuffled when
    training, interleaved, then the CV filter (before decoding and before the cache, so a
    cache never holds the other side and the held-out side is never decoded)."""
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    by_file = pipelines > 1 and len(files) >= pipelines
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_file:  # enough shards: each pipeline reads its own files
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if training:
        ds = ds.shuffle(len(files), seed=data.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 16)),
                       block_length=1, num_parallel_calls=AUTOTUNE,
                       deterministic=data.deterministic or not training)
    if pipelines > 1 and not by_file:  # too few shards: every pipeline keeps its n-th record
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    keep = cv_filter(data, training)
    if keep is not None:
        ds = ds.filter(keep)
    return ds


def cv_filter(data: DataConfig, training: bool) -> Optional[Callable[[tf.Tensor], tf.Tensor]]:
    """A predicate on serialized records applying `grouping.keeps`, or None without
    data.cv_assignment. It parses only image/source_path."""
    if not data.cv_assignment:
        return None
    table = grouping.checked_assignment(data)
    lookup = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(table["source_path"].astype(str).tolist()),
        tf.constant(table["cv_fold"].astype("int64").tolist())), default_value=-1)
    spec = {"image/source_path": records.FEATURES["image/source_path"]}

    def keep(serialized):
        path = tf.io.parse_single_example(serialized, spec)["image/source_path"]
        return grouping.keeps(lookup.lookup(path), data.cv_fold, training)
    return keep


def cache(ds: tf.data.Dataset, mode: str, name: str,
          input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
    """`mode` "memory", "none" or "disk:<dir>" (one file set per name and input pipeline)."""
    if mode == "memory":
        return ds.cache()
    if mode.startswith("disk:"):
        path = io.join(mode[5:], name)
        if input_context is not None:
            path += f"-pipeline{input_context.input_pipeline_id}"
        io.makedirs(mode[5:])
        return ds.cache(path)
    return ds


def training_order(ds: tf.data.Dataset, data: DataConfig) -> tf.data.Dataset:
    """Shuffled and repeated forever, or class-balanced by resampling."""
    if data.class_balance == "resample":
        return _resample(ds, data.seed)
    ds = ds.shuffle(data.shuffle_buffer, seed=data.seed, reshuffle_each_iteration=True)
    return ds.repeat()


def _resample(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Balanced classes by sampling each half of the batch from one class."""
    pos = ds.filter(lambda e: tf.equal(e["label"], 1)).shuffle(1024, seed=seed).repeat()
    neg = ds.filter(lambda e: tf.equal(e["label"], 0)).shuffle(1024, seed=seed + 1).repeat()
    return tf.data.Dataset.sample_from_datasets([pos, neg], [0.5, 0.5], seed=seed)


def options(data: DataConfig, sharded_by_us: bool, training: bool = True) -> tf.data.Options:
    """Determinism, autotune RAM budget, thread pool and the distribute shard policy.

    Evaluation is always deterministic: the dataset-wide option governs every parallel
    op that names no order of its own (the parallel batch among them), so leaving it off
    would let batches of one evaluation pass arrive out of order.
    """
    opts = tf.data.Options()
    opts.deterministic = data.deterministic or not training
    opts.autotune.enabled = True
    budget = int(data.cache_budget_gb * 2 ** 30) if data.cache_budget_gb > 0 else 0
    if budget:
        opts.autotune.ram_budget = budget
    if data.private_threadpool_size:
        opts.threading.private_threadpool_size = data.private_threadpool_size
    # We shard explicitly (or not at all): tell tf.distribute so it neither re-shards nor
    # warns that it cannot shard by file.
    opts.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if sharded_by_us
        else tf.data.experimental.AutoShardPolicy.DATA)
    return opts
