"""tf.data: shards -> records -> decoded uint8, cached, shuffled, batched tensors.

The CPU path is copy-only after the first pass: decode and resize happen once, the
uint8 result is cached (in memory when it fits the RAM budget), and augmentation runs
inside the model on the accelerator. Evaluation data is never augmented, never dropped
and never repeated: every image is scored exactly once.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from leukemia_tf import io
from leukemia_tf.config import Config, DataConfig
from leukemia_tf.data import manifest as manifest_file, preprocess, records

AUTOTUNE = tf.data.AUTOTUNE
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which records a dataset reads: a split and, for training data, some folds."""
    split: str                          # train | validation | test
    folds: Optional[Tuple[int, ...]] = None

    @property
    def name(self) -> str:
        return self.split if self.folds is None else \
            f"{self.split}-fold{''.join(str(f) for f in self.folds)}"


def parse_val_split(val_split: str, train_folds: Optional[Sequence[int]] = None) -> Selection:
    """`validation` -> the labeled validation set; `fold<k>` -> training fold k;
    `cv` -> the training folds, whose held-out CV part `make_dataset` keeps (see
    DataConfig.cv_assignment)."""
    if val_split == "cv":
        if not train_folds:
            raise ValueError("val_split 'cv' needs the training folds")
        return Selection("train", tuple(train_folds))
    if val_split == "validation":
        return Selection("validation")
    if val_split.startswith("fold") and val_split[4:].isdigit():
        return Selection("train", (int(val_split[4:]),))
    raise ValueError(f"val_split must be 'validation' or 'fold<k>', not {val_split!r}")


def shards_for(manifest: dict, records_dir: str, sel: Selection) -> List[dict]:
    """Manifest shard entries (with full paths) for a selection; never a glob."""
    out = []
    for shard in manifest["shards"]:
        if shard["split"] != sel.split:
            continue
        if sel.folds is not None and shard.get("fold") not in sel.folds:
            continue
        out.append({**shard, "full_path": records_dir.rstrip("/") + "/" + shard["path"]})
    if not out:
        have = sorted(k for k, v in manifest["splits"].items() if v.get("num_examples"))
        raise ValueError(f"no shards for {sel.name} in {records_dir} (splits with images: "
                         f"{have})")
    return out


def count_examples(manifest: dict, sel: Selection, data: Optional[DataConfig] = None,
                   training: bool = True) -> int:
    """Records in `sel`; with data.cv_assignment, only those the CV filter keeps."""
    if data is not None and data.cv_assignment:
        return len(_cv_examples(manifest, data, sel, training))
    return sum(s["num_examples"] for s in shards_for(manifest, "", sel))


def _cv_examples(manifest: dict, data: DataConfig, sel: Selection, training: bool):
    """examples.csv rows of `sel` that the CV filter keeps (see `cv_filter`)."""
    from leukemia_tf.data import grouping
    from leukemia_tf import io
    table = io.read_csv(io.join(data.records_dir, manifest_file.EXAMPLES))
    names = {s["path"] for s in shards_for(manifest, "", sel)}
    table = table[table["shard"].isin(names)]
    folds = grouping.read_assignment(data.cv_assignment).set_index("source_path")["cv_fold"]
    fold = table["rel_path"].map(folds).fillna(-1).astype(int)
    held_out = fold == data.cv_fold
    return table[(fold == -1) | (held_out != training)]


def cv_filter(data: DataConfig, training: bool):
    """A predicate on serialized records, or None without data.cv_assignment.

    Training keeps records not assigned to fold data.cv_fold; evaluation keeps the ones
    assigned to it. Unlisted records pass both. It reads only image/source_path, so it
    runs before decoding and before the cache (a cache must never hold the other side).
    """
    if not data.cv_assignment:
        return None
    from leukemia_tf.data import grouping
    if data.cv_fold < 0:
        raise ValueError("cv_assignment is set but cv_fold is not (>= 0)")
    table = grouping.read_assignment(data.cv_assignment)
    if data.cv_fold not in set(table["cv_fold"]):
        raise ValueError(f"cv_fold {data.cv_fold} is not in {data.cv_assignment}")
    lookup = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(table["source_path"].astype(str).tolist()),
        tf.constant(table["cv_fold"].astype("int64").tolist())), default_value=-1)
    spec = {"image/source_path": records.FEATURES["image/source_path"]}

    def keep(serialized):
        fold = lookup.lookup(tf.io.parse_single_example(serialized, spec)["image/source_path"])
        held_out = tf.equal(fold, data.cv_fold)
        return tf.logical_or(tf.equal(fold, -1), tf.not_equal(held_out, training))
    return keep


def label_counts(manifest: dict, records_dir: str, sel: Selection,
                 data: Optional[DataConfig] = None) -> Dict[int, int]:
    """{1: ALL count, 0: hem count} from examples.csv (falls back to split totals)."""
    path = records_dir.rstrip("/") + "/" + manifest_file.EXAMPLES
    if data is not None and data.cv_assignment:
        labels = _cv_examples(manifest, data, sel, True)["label"].dropna().astype(int)
        return {1: int((labels == 1).sum()), 0: int((labels == 0).sum())}
    if io.exists(path):
        table = io.read_csv(path)
        names = {s["path"] for s in shards_for(manifest, "", sel)}
        labels = table[table["shard"].isin(names)]["label"].dropna().astype(int)
        return {1: int((labels == 1).sum()), 0: int((labels == 0).sum())}
    by = manifest["splits"][sel.split]["by_label"]
    return {1: by["all"], 0: by["hem"]}


def class_weights(counts: Dict[int, int]) -> Dict[int, float]:
    """Balanced weights n / (2 n_c): each class contributes equally to the loss."""
    total = sum(counts.values())
    return {c: (total / (2.0 * n) if n else 0.0) for c, n in counts.items()}


def available_ram_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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


def _options(cfg: DataConfig, sharded_by_us: bool) -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = cfg.deterministic
    opts.autotune.enabled = True
    budget = int(cfg.cache_budget_gb * 2 ** 30) if cfg.cache_budget_gb > 0 else 0
    if budget:
        opts.autotune.ram_budget = budget
    if cfg.private_threadpool_size:
        opts.threading.private_threadpool_size = cfg.private_threadpool_size
    # We shard explicitly (or not at all): tell tf.distribute so it neither re-shards nor
    # warns that it cannot shard by file.
    opts.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if sharded_by_us
        else tf.data.experimental.AutoShardPolicy.DATA)
    return opts


def records_spec(manifest: dict, image_size: int) -> preprocess.Spec:
    """The preprocessing a model trained on these records at `image_size` gets."""
    settings = manifest["settings"]
    spec = preprocess.Spec(canvas_size=int(settings.get("canvas_size",
                                                        preprocess.DEFAULT_CANVAS)),
                           image_size=int(image_size))
    preprocess.check_records(spec, settings)
    return spec


def make_dataset(cfg: Config, sel: Selection, training: bool, *, manifest: dict,
                 cache: str = "none", batch_size: Optional[int] = None,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 weights: Optional[Dict[int, float]] = None,
                 with_metadata: bool = False) -> tf.data.Dataset:
    """The input pipeline for one selection of records.

    Args:
      cfg: the run config (data section: records dir, image size, shuffling, options).
      sel: split and folds to read.
      training: shuffle files and examples, repeat forever, drop the last partial batch,
        attach per-example class weights (or resample). Otherwise one ordered pass.
      manifest: the records dir's manifest (shards and counts).
      cache: "memory", "none" or "disk:<dir>" (see `cache_plan`).
      batch_size: global batch (default cfg.train.batch_size); per-replica when an
        input_context is given.
      input_context: from `distribute_datasets_from_function`: shard per input pipeline.
      weights: class weights {label: weight} (training, class_balance="weights").
      with_metadata: yield dicts with image, label, patient_id, source_path (evaluation).

    Returns:
      Training: (uint8 images [B,S,S,3], float32 labels [B,1], float32 weights [B]).
      Evaluation: (images, labels) or, with metadata, a dict per batch.
    """
    data = cfg.data
    size = data.image_size
    spec = records_spec(manifest, size)
    stored = int(manifest["settings"]["stored_size"] or 0)
    fmt = manifest["settings"]["encoding"]
    shards = shards_for(manifest, data.records_dir, sel)
    files = [s["full_path"] for s in shards]
    batch = batch_size or cfg.train.batch_size
    sharded_by_us = False

    ds = tf.data.Dataset.from_tensor_slices(files)
    by_file = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        batch = input_context.get_per_replica_batch_size(batch)
        by_file = len(files) >= input_context.num_input_pipelines
        if by_file:  # enough shards: each pipeline reads its own files
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        sharded_by_us = True
    elif input_context is not None:
        batch = input_context.get_per_replica_batch_size(batch)
    if training:
        ds = ds.shuffle(len(files), seed=data.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 16)),
                       block_length=1, num_parallel_calls=AUTOTUNE,
                       deterministic=data.deterministic or not training)
    if sharded_by_us and not by_file:  # too few shards: every pipeline keeps its n-th record
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    keep = cv_filter(data, training)
    if keep is not None:  # before parse and cache: the held-out side is never decoded
        ds = ds.filter(keep)
    decode = records.decoder(fmt, stored)
    # Pre-resized records already hold `to_model_input`'s output (made by the converter
    # with the same function); it is not idempotent, so it must not run twice.
    prepared = stored == size and stored != spec.canvas_size

    def parse(serialized):
        ex = records.parse_example(serialized)
        image = decode(ex)
        if not prepared:  # the one canvas + resize that serving uses too
            image = preprocess.to_model_input(image, spec)
        out = {"image": image, "label": ex["image/class/label"]}
        if with_metadata:
            out["patient_id"] = ex["image/patient_id"]
            out["source_path"] = ex["image/source_path"]
        return out

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE,
                deterministic=data.deterministic or not training)
    if cache == "memory":
        ds = ds.cache()
    elif cache.startswith("disk:"):
        path = cache[5:].rstrip("/") + f"/{sel.name}-{size}px"
        if input_context is not None:
            path += f"-pipeline{input_context.input_pipeline_id}"
        io.makedirs(cache[5:])
        ds = ds.cache(path)
    if training:
        if data.class_balance == "resample":
            ds = _resample(ds, data.seed)
        else:
            ds = ds.shuffle(data.shuffle_buffer, seed=data.seed, reshuffle_each_iteration=True)
            ds = ds.repeat()
        table = weights if (data.class_balance == "weights" and weights) else {0: 1.0, 1: 1.0}
        w = tf.constant([table.get(0, 1.0), table.get(1, 1.0)], tf.float32)
        ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)

        def to_training(b):
            label = tf.cast(b["label"], tf.float32)
            return b["image"], label[:, None], tf.gather(w, tf.cast(b["label"], tf.int32))
        ds = ds.map(to_training, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.batch(batch, drop_remainder=False, num_parallel_calls=AUTOTUNE)
        if not with_metadata:
            ds = ds.map(lambda b: (b["image"], tf.cast(b["label"], tf.float32)[:, None]),
                        num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(data, sharded_by_us))


def _resample(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Balanced classes by sampling each half of the batch from one class."""
    pos = ds.filter(lambda e: tf.equal(e["label"], 1)).shuffle(1024, seed=seed).repeat()
    neg = ds.filter(lambda e: tf.equal(e["label"], 0)).shuffle(1024, seed=seed + 1).repeat()
    return tf.data.Dataset.sample_from_datasets([pos, neg], [0.5, 0.5], seed=seed)


def load(records_dir: str) -> dict:
    """The manifest of a records dir (raises if the conversion is not complete)."""
    return manifest_file.load(records_dir)
