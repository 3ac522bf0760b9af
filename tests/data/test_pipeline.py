"""The tf.data pipeline: its three layers eagerly and inside tf.data, exactly-once
evaluation, sharding, cache decisions."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data import pipeline, preprocess, records
from leukemia_tf.data.manifest import Selection
from leukemia_tf.data.pipeline import decoder, parser, reader


@pytest.fixture(scope="module")
def manifest(records_dir):
    return manifest_lib.load(records_dir)


def _data(records_dir, **changes):
    return C.DataConfig(records_dir=records_dir, image_size=48, **changes)


def _serialized(manifest, records_dir, sel):
    files = [s["full_path"] for s in manifest_lib.shards_for(manifest, records_dir, sel)]
    return list(tf.data.TFRecordDataset(files))


def test_decoder_eagerly_and_inside_tf_data(records_dir, manifest):
    raw = _serialized(manifest, records_dir, Selection("test"))
    decode = decoder.make_decoder(manifest["settings"], with_metadata=True)
    eager = [decode(r) for r in raw]
    mapped = list(tf.data.Dataset.from_tensor_slices(tf.stack(raw)).map(decode))
    assert len(eager) == len(mapped) == 3
    for e, m in zip(eager, mapped):
        assert e["image"].dtype == tf.uint8 and e["image"].shape == (48, 48, 3)
        np.testing.assert_array_equal(e["image"].numpy(), m["image"].numpy())
        assert e["source_path"].numpy() == m["source_path"].numpy()
        assert int(e["label"]) == int(m["label"]) == records.UNLABELED
    assert set(decoder.make_decoder(manifest["settings"])(raw[0])) == {"image", "label"}


def test_parser_resizes_unless_the_records_hold_model_input():
    spec = preprocess.Spec(canvas_size=64, image_size=16)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    example = {"image": tf.constant(image), "label": tf.constant(1, tf.int64)}
    parse = parser.example_parser(spec, stored_size=0)          # originals: canvas + resize
    eager = parse(example)["image"].numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(example).map(parse)))["image"].numpy()
    np.testing.assert_array_equal(eager, preprocess.to_model_input(image, spec).numpy())
    np.testing.assert_array_equal(eager, mapped)
    assert eager.shape == (16, 16, 3)
    small = {"image": tf.constant(image[:16, :16]), "label": tf.constant(0, tf.int64)}
    kept = parser.example_parser(spec, stored_size=16)(small)   # pre-resized: untouched
    np.testing.assert_array_equal(kept["image"].numpy(), image[:16, :16])


def test_parser_batches_for_training_and_evaluation():
    batch = {"image": tf.zeros((3, 2, 2, 3), tf.uint8), "label": tf.constant([1, 0, 1], tf.int64)}
    fn = parser.training_batch({0: 2.0, 1: 0.5})
    for images, labels, weights in (fn(batch), next(iter(
            tf.data.Dataset.from_tensors(batch).map(fn)))):
        assert images.dtype == tf.uint8 and labels.shape == (3, 1)
        np.testing.assert_allclose(weights.numpy(), [0.5, 2.0, 0.5])
        np.testing.assert_allclose(labels.numpy()[:, 0], [1, 0, 1])
    _, _, ones = parser.training_batch(None)(batch)
    np.testing.assert_allclose(ones.numpy(), [1, 1, 1])
    images, labels = parser.eval_batch(batch)
    assert labels.dtype == tf.float32 and labels.shape == (3, 1)


def test_training_batches(records_dir, manifest):
    ds = pipeline.make_dataset(_data(records_dir), Selection("train", (0, 1, 2)), training=True,
                               batch_size=5, manifest=manifest, cache="memory",
                               weights={0: 2.0, 1: 0.5})
    for images, labels, weights in ds.take(12):  # > 48 / 5: repeats, never a short batch
        assert images.dtype == tf.uint8 and images.shape == (5, 48, 48, 3)
        assert labels.shape == (5, 1) and labels.dtype == tf.float32
        expected = np.where(labels.numpy()[:, 0] == 1, 0.5, 2.0)
        np.testing.assert_allclose(weights.numpy(), expected)


def test_deterministic_training_order_repeats(records_dir, manifest, tmp_path):
    """Same seed, deterministic: the same batches in the same order; the first epoch is
    the same cached or not (later epochs of an uncached pipeline reshuffle the files)."""
    data = _data(records_dir, deterministic=True, seed=3)

    def first_epoch(cache, seed=3):
        ds = pipeline.make_dataset(dataclasses.replace(data, seed=seed),
                                   Selection("train", (0, 1, 2)), training=True,
                                   batch_size=8, manifest=manifest, cache=cache)
        return np.concatenate([x.numpy() for x, _, _ in ds.take(6)])   # 48 images

    runs = [first_epoch(c) for c in ("none", "none", "memory", f"disk:{tmp_path}/c")]
    for run in runs[1:]:
        np.testing.assert_array_equal(runs[0], run)
    assert list((tmp_path / "c").iterdir())   # the disk cache was written
    assert not np.array_equal(runs[0], first_epoch("none", seed=4))


@pytest.mark.parametrize("batch", [3, 4, 64])
def test_validation_every_image_exactly_once(records_dir, manifest, batch):
    data = _data(records_dir)
    ds = pipeline.make_dataset(data, Selection("validation"), training=False, batch_size=batch,
                               manifest=manifest, with_metadata=True)
    seen = []
    for _ in range(2):  # two passes, each complete
        paths = [p.decode() for b in ds for p in b["source_path"].numpy()]
        assert len(paths) == manifest["splits"]["validation"]["num_examples"] == 10
        assert len(set(paths)) == 10
        seen.append(paths)
    assert seen[0] == seen[1]   # evaluation reads in one fixed order
    plain = pipeline.make_dataset(data, Selection("validation"), training=False,
                                  batch_size=batch, manifest=manifest)
    assert sum(int(x.shape[0]) for x, _ in plain) == 10


def test_pipeline_pixels_equal_eager_decode(records_dir, manifest):
    ds = pipeline.make_dataset(_data(records_dir), Selection("test"), training=False,
                               batch_size=2, manifest=manifest, with_metadata=True)
    got = {p.decode(): img for b in ds for p, img in zip(b["source_path"].numpy(),
                                                         b["image"].numpy())}
    decode = records.decoder("png", 48)
    for raw in _serialized(manifest, records_dir, Selection("test")):
        ex = records.parse_example(raw)  # eager
        np.testing.assert_array_equal(
            got[ex["image/source_path"].numpy().decode()], decode(ex).numpy())
    assert len(got) == 3


def test_pre_resized_records_refuse_another_size(records_dir, manifest):
    """Records stored at 48 px (converted with --image_size=48) feed a 48-px model as
    they are; resizing them again to 24 px would differ from serving, so it is refused
    (test_preprocess.py checks that tf.data and eager preprocessing agree)."""
    data = C.DataConfig(records_dir=records_dir, image_size=24)
    with pytest.raises(ValueError, match="pre-resized to 48 px"):
        pipeline.make_dataset(data, Selection("test"), training=False, batch_size=4,
                              manifest=manifest)


def test_input_pipelines_get_distinct_data(records_dir, manifest):
    data = _data(records_dir)
    for sel in (Selection("validation"),            # 2 shards: by file
                Selection("train", (0,))):          # 2 shards too; ...
        parts = []
        for pid in range(2):
            ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                             num_replicas_in_sync=2)
            ds = pipeline.make_dataset(data, sel, training=False, batch_size=4,
                                       manifest=manifest, input_context=ctx,
                                       with_metadata=True)
            parts.append({p.decode() for b in ds for p in b["source_path"].numpy()})
        assert parts[0] and parts[1] and not parts[0] & parts[1]
        assert len(parts[0] | parts[1]) == manifest_lib.count_examples(manifest, sel)
    # 3 pipelines over 2 shards: sharded by record instead; still a partition.
    parts = []
    for pid in range(3):
        ctx = tf.distribute.InputContext(3, pid, 3)
        ds = pipeline.make_dataset(data, Selection("validation"), training=False, batch_size=3,
                                   manifest=manifest, input_context=ctx, with_metadata=True)
        parts.append([p.decode() for b in ds for p in b["source_path"].numpy()])
    flat = [p for part in parts for p in part]
    assert len(flat) == len(set(flat)) == 10 and all(parts)


def test_mirrored_replicas_see_different_examples(records_dir, manifest):
    strategy = training.make_strategy("mirrored")
    data = _data(records_dir)
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_dataset(data, Selection("train", (0, 1, 2)), training=True,
                                          batch_size=8, manifest=manifest, input_context=ctx))
    images, _, _ = next(iter(dist))
    per_replica = strategy.experimental_local_results(images)
    assert len(per_replica) == 2 and per_replica[0].shape[0] == 4
    assert not np.array_equal(per_replica[0].numpy(), per_replica[1].numpy())


def test_cache_auto_decisions():
    data = C.DataConfig(image_size=224, cache_budget_gb=1.0)
    plan = reader.cache_plan(data, [("train", 1000), ("validation", 500)])
    assert plan["train"][0] == "memory" and plan["validation"][0] == "memory"
    plan = reader.cache_plan(data, [("train", 10661), ("validation", 1867)])
    assert plan["train"][0] == "none" and plan["validation"][0] == "memory"
    tiny = C.DataConfig(image_size=224, cache_budget_gb=0.01)
    assert reader.cache_plan(tiny, [("train", 1000)])["train"][0] == "none"
    auto = C.DataConfig(image_size=224)
    assert reader.cache_plan(auto, [("train", 100)], available=10**9)["train"][0] == "memory"
    assert reader.cache_plan(auto, [("train", 10**5)], available=10**9)["train"][0] == "none"
    assert reader.available_ram_bytes() > 0
    disk = C.DataConfig(cache="disk:/tmp/x")
    assert reader.cache_plan(disk, [("t", 1)])["t"][0] == "disk:/tmp/x"
    with pytest.raises(ValueError, match="cache must be"):
        reader.cache_plan(C.DataConfig(cache="ssd"), [("t", 1)])


def test_label_counts(records_dir, manifest):
    counts = manifest_lib.label_counts(manifest, records_dir, Selection("train", (0, 1)))
    assert counts == {1: 16, 0: 16}
    assert manifest_lib.count_examples(manifest, Selection("train", (0, 1))) == 32
    assert manifest_lib.train_folds(manifest) == [0, 1, 2]


def test_shards_for_joins_paths_and_refuses_an_empty_selection(records_dir, manifest):
    shards = manifest_lib.shards_for(manifest, records_dir + "/", Selection("validation"))
    assert [s["full_path"] for s in shards] == [f"{records_dir}/{s['path']}" for s in shards]
    with pytest.raises(ValueError, match="no shards for train-fold7"):
        manifest_lib.shards_for(manifest, records_dir, Selection("train", (7,)))


def test_val_split_parsing():
    assert manifest_lib.parse_val_split("fold2") == Selection("train", (2,))
    assert manifest_lib.parse_val_split("validation").split == "validation"
    with pytest.raises(ValueError, match="--split must be 'validation' or 'fold<k>'"):
        manifest_lib.parse_val_split("test")


def test_resample_balances_classes(tmp_path):
    from leukemia_tf.data import convert
    from tests.helpers import build_tree
    tree = build_tree(str(tmp_path / "d"), per_class_per_fold=6, hem_per_fold=2, n_val=2,
                      n_test=1)
    rec = str(tmp_path / "r")
    manifest = convert.convert(convert.ConvertConfig(tree, rec, image_size=16,
                                                     num_workers=1, progress=False))
    means = {}
    for mode in ("weights", "resample"):
        data = C.DataConfig(records_dir=rec, image_size=16, class_balance=mode)
        ds = pipeline.make_dataset(data, Selection("train", (0, 1, 2)), training=True,
                                   batch_size=12, manifest=manifest, cache="memory",
                                   weights={0: 2.0, 1: 2 / 3})
        batches = list(ds.take(40))
        means[mode] = np.mean([y.numpy().mean() for _, y, _ in batches])
        if mode == "resample":  # resampling replaces the weights
            assert all(np.all(w.numpy() == 1.0) for _, _, w in batches)
    assert abs(means["weights"] - 0.75) < 0.02   # the data's 3:1
    assert abs(means["resample"] - 0.5) < 0.08


def test_training_is_a_keyword(records_dir, manifest):
    with pytest.raises(TypeError):
        pipeline.make_dataset(_data(records_dir), Selection("test"), False,  # noqa
                              batch_size=2, manifest=manifest)
