"""The tf.data pipeline: pixels, exactly-once evaluation, sharding, cache decisions."""
import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf import training
from leukemia_tf.data import pipeline, records
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def manifest(records_dir):
    return pipeline.load(records_dir)


def test_training_batches(records_dir, manifest, tmp_path):
    cfg = tiny_config(records_dir, tmp_path)
    ds = pipeline.make_dataset(cfg, pipeline.Selection("train", (0, 1, 2)), True,
                               manifest=manifest, cache="memory", batch_size=5,
                               weights={0: 2.0, 1: 0.5})
    for images, labels, weights in ds.take(12):  # > 48 / 5: repeats, never a short batch
        assert images.dtype == tf.uint8 and images.shape == (5, 48, 48, 3)
        assert labels.shape == (5, 1) and labels.dtype == tf.float32
        expected = np.where(labels.numpy()[:, 0] == 1, 0.5, 2.0)
        np.testing.assert_allclose(weights.numpy(), expected)


@pytest.mark.parametrize("batch", [3, 4, 64])
def test_validation_every_image_exactly_once(records_dir, manifest, tmp_path, batch):
    cfg = tiny_config(records_dir, tmp_path)
    ds = pipeline.make_dataset(cfg, pipeline.Selection("validation"), False, manifest=manifest,
                               batch_size=batch, with_metadata=True)
    seen = []
    for _ in range(2):  # two passes, each complete
        paths = [p.decode() for b in ds for p in b["source_path"].numpy()]
        assert len(paths) == manifest["splits"]["validation"]["num_examples"] == 10
        assert len(set(paths)) == 10
        seen.append(sorted(paths))
    assert seen[0] == seen[1]
    plain = pipeline.make_dataset(cfg, pipeline.Selection("validation"), False,
                                  manifest=manifest, batch_size=batch)
    assert sum(int(x.shape[0]) for x, _ in plain) == 10


def test_pipeline_pixels_equal_eager_decode(records_dir, manifest, tmp_path):
    cfg = tiny_config(records_dir, tmp_path)
    ds = pipeline.make_dataset(cfg, pipeline.Selection("test"), False, manifest=manifest,
                               batch_size=2, with_metadata=True)
    got = {p.decode(): img for b in ds for p, img in zip(b["source_path"].numpy(),
                                                         b["image"].numpy())}
    decode = records.decoder("png", 48)
    for shard in pipeline.shards_for(manifest, records_dir, pipeline.Selection("test")):
        for raw in tf.data.TFRecordDataset(shard["full_path"]):
            ex = records.parse_example(raw)  # eager
            np.testing.assert_array_equal(
                got[ex["image/source_path"].numpy().decode()], decode(ex).numpy())
    assert len(got) == 3


def test_pre_resized_records_refuse_another_size(records_dir, manifest, tmp_path):
    """Records stored at 48 px (converted with --image_size=48) feed a 48-px model as
    they are; resizing them again to 24 px would differ from serving, so it is refused
    (test_preprocess.py checks that tf.data and eager preprocessing agree)."""
    cfg = C.replace(tiny_config(records_dir, tmp_path), data={"image_size": 24})
    with pytest.raises(ValueError, match="pre-resized to 48 px"):
        pipeline.make_dataset(cfg, pipeline.Selection("test"), False, manifest=manifest)


def test_input_pipelines_get_distinct_data(records_dir, manifest, tmp_path):
    cfg = tiny_config(records_dir, tmp_path)
    for sel in (pipeline.Selection("validation"),            # 2 shards: by file
                pipeline.Selection("train", (0,))):          # 2 shards too; ...
        parts = []
        for pid in range(2):
            ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                             num_replicas_in_sync=2)
            ds = pipeline.make_dataset(cfg, sel, False, manifest=manifest, batch_size=4,
                                       input_context=ctx, with_metadata=True)
            parts.append({p.decode() for b in ds for p in b["source_path"].numpy()})
        assert parts[0] and parts[1] and not parts[0] & parts[1]
        assert len(parts[0] | parts[1]) == pipeline.count_examples(manifest, sel)
    # 3 pipelines over 2 shards: sharded by record instead; still a partition.
    parts = []
    for pid in range(3):
        ctx = tf.distribute.InputContext(3, pid, 3)
        ds = pipeline.make_dataset(cfg, pipeline.Selection("validation"), False,
                                   manifest=manifest, batch_size=3, input_context=ctx,
                                   with_metadata=True)
        parts.append([p.decode() for b in ds for p in b["source_path"].numpy()])
    flat = [p for part in parts for p in part]
    assert len(flat) == len(set(flat)) == 10 and all(parts)


def test_mirrored_replicas_see_different_examples(records_dir, manifest, tmp_path):
    strategy = training.make_strategy("mirrored")
    cfg = tiny_config(records_dir, tmp_path)
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_dataset(cfg, pipeline.Selection("train", (0, 1, 2)), True,
                                          manifest=manifest, input_context=ctx,
                                          batch_size=8))
    images, _, _ = next(iter(dist))
    per_replica = strategy.experimental_local_results(images)
    assert len(per_replica) == 2 and per_replica[0].shape[0] == 4
    assert not np.array_equal(per_replica[0].numpy(), per_replica[1].numpy())


def test_cache_auto_decisions():
    data = C.DataConfig(image_size=224, cache_budget_gb=1.0)
    plan = pipeline.cache_plan(data, [("train", 1000), ("validation", 500)])
    assert plan["train"][0] == "memory" and plan["validation"][0] == "memory"
    plan = pipeline.cache_plan(data, [("train", 10661), ("validation", 1867)])
    assert plan["train"][0] == "none" and plan["validation"][0] == "memory"
    tiny = C.DataConfig(image_size=224, cache_budget_gb=0.01)
    assert pipeline.cache_plan(tiny, [("train", 1000)])["train"][0] == "none"
    auto = C.DataConfig(image_size=224)
    assert pipeline.cache_plan(auto, [("train", 100)], available=10**9)["train"][0] == "memory"
    assert pipeline.cache_plan(auto, [("train", 10**5)], available=10**9)["train"][0] == "none"
    disk = C.DataConfig(cache="disk:/tmp/x")
    assert pipeline.cache_plan(disk, [("t", 1)])["t"][0] == "disk:/tmp/x"
    with pytest.raises(ValueError, match="cache must be"):
        pipeline.cache_plan(C.DataConfig(cache="ssd"), [("t", 1)])


def test_class_weights_and_counts(records_dir, manifest):
    counts = pipeline.label_counts(manifest, records_dir, pipeline.Selection("train", (0, 1)))
    assert counts == {1: 16, 0: 16}
    w = pipeline.class_weights({1: 2150, 0: 1000})
    assert w[0] == pytest.approx(3150 / 2000) and w[1] == pytest.approx(3150 / 4300)
    assert 2150 * w[1] == pytest.approx(1000 * w[0])


def test_val_split_parsing():
    assert pipeline.parse_val_split("fold2") == pipeline.Selection("train", (2,))
    assert pipeline.parse_val_split("validation").split == "validation"
    with pytest.raises(ValueError, match="val_split must be 'validation' or 'fold<k>'"):
        pipeline.parse_val_split("test")


def test_resample_balances_classes(tmp_path):
    from leukemia_tf.data import convert
    from tests.helpers import build_tree
    tree = build_tree(str(tmp_path / "d"), per_class_per_fold=6, hem_per_fold=2, n_val=2,
                      n_test=1)
    rec = str(tmp_path / "r")
    manifest = convert.convert(convert.ConvertConfig(tree, rec, image_size=16,
                                                     num_workers=1, progress=False))
    base = C.replace(tiny_config(rec, tmp_path), data={"image_size": 16})
    means = {}
    for mode in ("weights", "resample"):
        cfg = C.replace(base, data={"class_balance": mode})
        ds = pipeline.make_dataset(cfg, pipeline.Selection("train", (0, 1, 2)), True,
                                   manifest=manifest, cache="memory", batch_size=12,
                                   weights={0: 2.0, 1: 2 / 3})
        batches = list(ds.take(40))
        means[mode] = np.mean([y.numpy().mean() for _, y, _ in batches])
        if mode == "resample":  # resampling replaces the weights
            assert all(np.all(w.numpy() == 1.0) for _, _, w in batches)
    assert abs(means["weights"] - 0.75) < 0.02   # the data's 3:1
    assert abs(means["resample"] - 0.5) < 0.08
