"""The README's real-data flow with every path under ram:// (a stand-in for gs://).

convert -> verify -> train -> evaluate with TTA -> predict -> crossval -> a benchmark
JSON, all in this process (ram:// is per process), on a tiny tree. Nothing may appear on
the local disk: no `./ram:` folder in the working directory or anywhere under tmp.
"""
import os

import pytest

from leukemia_tf.bench import plan as bench
from leukemia_tf.crossval import run as crossval
from leukemia_tf.evaluation import evaluate as evaluation, predict as prediction
from leukemia_tf import io, training
from leukemia_tf.data import convert
from tests.helpers import build_tree, tiny_config


def _ram_folders(top):
    return [os.path.join(d, n) for d, names, _ in os.walk(top) for n in names
            if n.startswith("ram:")]


@pytest.mark.slow
def test_readme_flow_under_ram(tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    local_tree = build_tree(str(tmp_path / "src"), per_class_per_fold=4, n_val=4, n_test=2)
    root = f"ram://e2e{os.getpid()}"
    io.copytree(os.path.dirname(local_tree), io.join(root, "data"))
    data, rec, model = io.join(root, "data"), io.join(root, "rec"), io.join(root, "model")

    manifest = convert.convert(convert.ConvertConfig(data, rec, image_size=48, num_shards=1,
                                                     num_workers=1, progress=False))
    assert manifest["splits"]["train"]["num_examples"] == 24
    assert convert.verify(rec)["examples"] == 24 + 4 + 2

    summary = training.run(tiny_config(rec, model, epochs=1))
    assert summary["status"] == "ok"
    for name in ("model.keras", "preprocessing.json", "export/saved_model.pb", "config.json",
                 "history.csv", "summary.json"):
        assert io.exists(io.join(model, name)), name

    result = evaluation.run(evaluation.EvalConfig(model, rec, tta="flips"))
    assert result["tta"] == "flips" and result["num_examples"] == 4
    evals = [p for d, _, names in io.walk(model) for p in names if p == "metrics.json"]
    assert evals, "evaluate wrote no metrics.json under the model dir"

    table, errors = prediction.predict(model, [rec])
    out = io.join(root, "pred", "test.csv")
    prediction.write_outputs(table, errors, out)
    assert list(io.read_csv(out).columns) == ["file", "probability", "prediction", "path"]

    base = tiny_config(rec, "", epochs=1, steps_per_epoch=1)
    cv = crossval.run(base, ["resnet_small"], io.join(root, "cv"), folds=(0, 1),
                      include_validation=False)
    assert len(io.read_csv(cv["csv"])) == 2

    cfg = bench.BenchConfig(work_dir=io.join(root, "bench"), records_dir=rec, image_size=48,
                            batch_size=8, min_seconds=0.01, min_batches=1, isolate=False,
                            repeats=1, cpu_work=())
    bench.save(bench.run("input", cfg), io.join(root, "bench.json"))
    assert io.read_json(io.join(root, "bench.json"))["images_per_sec"]["pipeline_steady_state"] > 0

    assert _ram_folders(str(tmp_path)) == [], "a local ram: folder was created"
    assert os.listdir(work) == [], f"files appeared in the working directory: {os.listdir(work)}"
