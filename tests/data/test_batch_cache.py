"""Batch-level cached input: exactly once per epoch, seeded order, sharding under
MirroredStrategy (2 logical CPUs) and across workers, and a training run that uses it."""
import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.data import batch_cache, pipeline
from tests.helpers import tiny_config

N = 20


def _cached(n=N):
    """Image i holds i in every pixel; its label is i % 2."""
    ids = np.arange(n)
    images = np.broadcast_to(ids[:, None, None, None], (n, 4, 4, 3)).astype(np.uint8)
    return batch_cache.Cached(np.ascontiguousarray(images), (ids % 2).astype(np.int64))


def _ids(images):
    return [int(v) for v in np.asarray(images)[:, 0, 0, 0]]


def _stream(ds, batches):
    out = []
    for x, y, w in ds.take(batches):
        ids = _ids(x)
        assert list(np.asarray(y)[:, 0]) == [i % 2 for i in ids]  # labels travel with images
        assert list(np.asarray(w)) == [3.0 if i % 2 else 5.0 for i in ids]
        out += ids
    return out


def test_every_image_exactly_once_per_epoch_and_seeded():
    ds = batch_cache.batched_dataset(_cached(), 8, seed=3, weights={0: 5.0, 1: 3.0})
    ids = _stream(ds, 5)  # 40 ids: two epochs, the third batch straddles them
    assert sorted(ids[:N]) == list(range(N)) and sorted(ids[N:]) == list(range(N))
    assert ids[:N] != ids[N:]  # a new permutation each epoch
    again = _stream(batch_cache.batched_dataset(_cached(), 8, seed=3,
                                                weights={0: 5.0, 1: 3.0}), 5)
    assert again == ids
    other = _stream(batch_cache.batched_dataset(_cached(), 8, seed=4,
                                                weights={0: 5.0, 1: 3.0}), 5)
    assert other != ids


def test_workers_hold_disjoint_shards():
    per_worker = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                         num_replicas_in_sync=2)
        ds = batch_cache.batched_dataset(_cached(), 8, seed=0, input_context=ctx)
        x = next(iter(ds))[0]
        assert x.shape[0] == 4  # per-replica batch of the global 8
        ids = _ids(np.concatenate([b[0] for b in ds.take(5)]))  # 20 ids: two shard epochs
        assert sorted(ids[:N // 2]) == sorted(ids[N // 2:])  # its shard once per epoch
        per_worker.append(set(ids))
    assert per_worker[0].isdisjoint(per_worker[1])
    assert per_worker[0] | per_worker[1] == set(range(N))


def test_mirrored_strategy_splits_the_global_batch():
    strategy = training.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: batch_cache.batched_dataset(_cached(), 8, seed=0, input_context=ctx))
    ids = []
    for step, (x, _, _) in enumerate(dist):
        parts = strategy.experimental_local_results(x)
        assert [p.shape[0] for p in parts] == [4, 4]
        ids += [i for p in parts for i in _ids(p)]
        if step == 4:
            break
    assert sorted(ids[:N]) == list(range(N)) and sorted(ids[N:]) == list(range(N))


def test_decode_all_matches_the_records(records_dir):
    manifest = pipeline.load(records_dir)
    cfg = C.Config(data=C.DataConfig(records_dir=records_dir, image_size=48))
    sel = pipeline.Selection("train", (0, 1, 2))
    cached = batch_cache.decode_all(cfg, sel, manifest)
    n = pipeline.count_examples(manifest, sel)
    assert cached.images.shape == (n, 48, 48, 3) and cached.images.dtype == np.uint8
    counts = pipeline.label_counts(manifest, records_dir, sel)
    assert int(cached.labels.sum()) == counts[1] and int((cached.labels == 0).sum()) == counts[0]
    assert cached.images.std() > 0  # decoded pixels, not zeros


def test_training_with_the_batch_layout(records_dir, tmp_path):
    cfg = tiny_config(records_dir, tmp_path / "m", epochs=1, strategy="mirrored")
    cfg = C.replace(cfg, data={"cache_layout": "batch"})
    summary = training.run(cfg)
    assert summary["status"] == "ok" and summary["replicas"] == 2
    with pytest.raises(ValueError, match="resampling"):
        batch_cache.dataset_fn(C.replace(cfg, data={"class_balance": "resample"}),
                               pipeline.Selection("train"), pipeline.load(records_dir))
