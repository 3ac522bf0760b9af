"""tf.data: shards -> records -> decoded uint8, cached, shuffled, batched tensors.

Three layers, read in the order data flows: `decoder` (serialized Example -> tensors as
stored), `parser` (tensors -> model input, train or eval), `reader` (files, sharding,
interleave, CV filter, cache, shuffling, batching options). `make_dataset` stacks them for
one selection of records; which records a selection holds is the manifest's business
(`data.manifest.Selection`, `shards_for`, `count_examples`).
"""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf

from leukemia_tf.config import DataConfig
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data.pipeline import decoder, parser, reader

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(data: DataConfig, sel: manifest_lib.Selection, *, training: bool,
                 batch_size: int, manifest: dict, cache: str = "none",
                 input_context: Optional[tf.distribute.InputContext] = None,
                 weights: Optional[Dict[int, float]] = None,
                 with_metadata: bool = False, skip: int = 0) -> tf.data.Dataset:
    """The input pipeline for one selection of records.

    Args:
      data: the data section (records dir, image size, shuffling, CV filter, options).
      sel: split and folds to read.
      training: shuffle files and examples, repeat forever, drop the last partial batch,
        attach per-example class weights (or resample). Otherwise one ordered pass.
      batch_size: global batch; per-replica when an input_context is given.
      manifest: the records dir's manifest (shards and counts).
      cache: "memory", "none" or "disk:<dir>" (see `reader.cache_plan`).
      input_context: from `distribute_datasets_from_function`: shard per input pipeline.
      weights: class weights {label: weight} (training, class_balance="weights").
      with_metadata: yield dicts with image, label, patient_id, source_path (evaluation).
      skip: training: examples of this pipeline's stream to drop first, so a resumed
        --deterministic run reads on where its backup was taken (skipped images are
        read and decoded, or taken from the cache once it is filled).

    Returns:
      Training: (uint8 images [B,S,S,3], float32 labels [B,1], float32 weights [B]).
      Evaluation: (images, labels) or, with metadata, a dict per batch.
    """
    spec = parser.records_spec(manifest, data.image_size)
    files = [s["full_path"] for s in manifest_lib.shards_for(manifest, data.records_dir, sel)]
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = reader.read_records(data, files, training=training, input_context=input_context)
    decode = decoder.make_decoder(manifest["settings"], with_metadata)
    to_input = parser.example_parser(spec, int(manifest["settings"]["stored_size"] or 0))
    ds = ds.map(lambda serialized: to_input(decode(serialized)), num_parallel_calls=AUTOTUNE,
                deterministic=data.deterministic or not training)
    ds = reader.cache(ds, cache, f"{sel.name}-{data.image_size}px", input_context)
    if training:
        ds = reader.training_order(ds, data)
        if skip:
            ds = ds.skip(skip)
        ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
        use = weights if data.class_balance == "weights" else None
        ds = ds.map(parser.training_batch(use), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.batch(batch_size, drop_remainder=False, num_parallel_calls=AUTOTUNE)
        if not with_metadata:
            ds = ds.map(parser.eval_batch, num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    sharded_by_us = input_context is not None and input_context.num_input_pipelines > 1
    return ds.with_options(reader.options(data, sharded_by_us, training))
