"""Batch-level cached training input (DataConfig.cache_layout = "batch"; under measurement).

The per-element pipeline (data/pipeline.py) moves every cached image through tf.data one
element at a time: cache, shuffle buffer, batch. Here the decoded training set is one
uint8 tensor in host memory; each epoch is a seeded permutation of its indices and each
batch is one gather. Same output as the element pipeline's training side: (uint8 images
[B, S, S, 3], float32 labels [B, 1], float32 class weights [B]).

Guarantees (tests/data/test_batch_cache.py): every image exactly once per epoch of the
index stream (batches may straddle epochs, as with repeat-then-batch); the same seed gives
the same batches; under tf.distribute each input pipeline (one per worker) holds a
disjoint strided shard of the set and batches of the per-replica size, so a global batch
is split across replicas as `distribute_datasets_from_function` expects.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from leukemia_tf.config import Config
from leukemia_tf.data import pipeline, preprocess, records

AUTOTUNE = tf.data.AUTOTUNE
LAYOUTS = ("element", "batch")


@dataclasses.dataclass(frozen=True)
class Cached:
    """A decoded set: uint8 images [N, S, S, 3] and int64 labels [N] (1 ALL, 0 hem)."""
    images: np.ndarray
    labels: np.ndarray

    def shard(self, count: int, index: int) -> "Cached":
        """Every `count`-th example from `index`: disjoint for distinct indices."""
        return Cached(self.images[index::count], self.labels[index::count])


def decode_all(cfg: Config, sel: pipeline.Selection, manifest: dict) -> Cached:
    """Read and decode every record of `sel` once (training side of the CV filter), in
    record order, preprocessed to cfg.data.image_size as the element pipeline does."""
    data = cfg.data
    spec = pipeline.records_spec(manifest, data.image_size)
    stored = int(manifest["settings"]["stored_size"] or 0)
    decode = records.decoder(manifest["settings"]["encoding"], stored)
    prepared = stored == data.image_size and stored != spec.canvas_size
    files = [s["full_path"] for s in pipeline.shards_for(manifest, data.records_dir, sel)]
    ds = tf.data.TFRecordDataset(files)
    keep = pipeline.cv_filter(data, True)
    if keep is not None:
        ds = ds.filter(keep)

    def parse(serialized):
        ex = records.parse_example(serialized)
        image = decode(ex)
        if not prepared:
            image = preprocess.to_model_input(image, spec)
        return image, ex["image/class/label"]
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True).batch(256)
    xs, ys = [], []
    for x, y in ds.prefetch(AUTOTUNE):
        xs.append(x.numpy())
        ys.append(y.numpy())
    if not xs:
        raise ValueError(f"no records for {sel.name} in {data.records_dir}")
    return Cached(np.concatenate(xs), np.concatenate(ys).astype(np.int64))


def epoch_permutation(n: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The order of epoch `epoch`: a permutation of range(n), a function of (seed, epoch)."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.argsort(tf.random.stateless_uniform([n], seed=key), stable=True)


def batched_dataset(cached: Cached, batch: int, seed: int = 0,
                    weights: Optional[Dict[int, float]] = None,
                    input_context: Optional[tf.distribute.InputContext] = None
                    ) -> tf.data.Dataset:
    """Endless training batches from `cached`: per epoch one permutation, per batch one
    gather.

    Args:
      batch: the global batch; per-replica when an input_context is given.
      weights: class weights {label: weight}; None: 1.0 for both classes.
      input_context: from `distribute_datasets_from_function`; with several input
        pipelines (workers) each takes its own strided shard.
    """
    if input_context is not None:
        if input_context.num_input_pipelines > 1:
            cached = cached.shard(input_context.num_input_pipelines,
                                  input_context.input_pipeline_id)
        batch = input_context.get_per_replica_batch_size(batch)
    n = len(cached.labels)
    if n < batch:
        raise ValueError(f"{n} cached examples cannot fill a batch of {batch}")
    images = tf.constant(cached.images)
    labels = tf.constant(cached.labels)
    table = weights or {0: 1.0, 1: 1.0}
    w = tf.constant([table.get(0, 1.0), table.get(1, 1.0)], tf.float32)

    def gather(idx):
        y = tf.gather(labels, idx)
        return (tf.gather(images, idx), tf.cast(y, tf.float32)[:, None],
                tf.gather(w, tf.cast(y, tf.int32)))
    ds = tf.data.Dataset.counter().map(lambda e: epoch_permutation(n, seed, e))
    ds = ds.unbatch().batch(batch, drop_remainder=True)
    ds = ds.map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(opts)


def dataset_fn(cfg: Config, sel: pipeline.Selection, manifest: dict,
               weights: Optional[Dict[int, float]] = None) -> Callable:
    """input_context -> training dataset, for `distribute_datasets_from_function` (or
    keras' DatasetCreator). The set is decoded once, on the first call."""
    if cfg.data.class_balance == "resample":
        raise ValueError("cache_layout 'batch' balances classes by weights only "
                         "(class_balance weights or none), not by resampling")
    state = {}

    def fn(input_context=None):
        if "cached" not in state:
            state["cached"] = decode_all(cfg, sel, manifest)
        use = weights if cfg.data.class_balance == "weights" else None
        return batched_dataset(state["cached"], cfg.train.batch_size, cfg.data.seed, use,
                               input_context)
    return fn
