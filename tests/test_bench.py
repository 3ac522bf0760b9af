"""Benchmarks: each subcommand runs on a tiny synthetic tree and reports the contract keys.

Smoke tests only (speed goals live in the benchmark itself): tiny images, a few batches,
measurements in this process except one CLI run for the JSON contract.
"""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from leukemia_tf import bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = ("pipeline_first_pass", "pipeline_steady_state", "image_dataset_from_directory",
            "seed_numpy", "decode_ceiling")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A ~30-image synthetic tree converted to records, and a fast config for it."""
    cfg = bench.BenchConfig(
        work_dir=str(tmp_path_factory.mktemp("bench")), num_images=30, image_size=48,
        batch_size=8, min_seconds=0.05, min_batches=2, isolate=False,
        ceiling_encodings=("bmp", "png@48"), ceiling_sample=4, models=("seed_cnn",),
        precisions=("float32",), train_batch_size=4, train_steps=2, train_rounds=2, repeats=1,
        encodings=("png", "raw"), convert_workers=1)
    return cfg, bench.prepare(cfg)


def _positive(d, keys):
    for k in keys:
        assert d[k] > 0, (k, d)


def test_synthetic_config_scales():
    assert bench.synthetic_config(0) == bench.synthetic.SyntheticConfig()
    small = bench.synthetic_config(30)
    total = 3 * (small.train_all[0] + small.train_hem[0]) + small.num_validation + \
        small.num_test
    assert 25 <= total <= 35


def test_prepare_reuses_tree_and_records(tiny):
    cfg, data = tiny
    again = bench.prepare(cfg)
    assert again.tree == data.tree and again.records_dir == data.records_dir
    assert again.manifest["created"] == data.manifest["created"]  # not converted again


def test_input_and_peers(tiny):
    cfg, data = tiny
    cfg = dataclasses.replace(cfg, cpu_work=("flip_rot90",))
    result = bench.run("peers", cfg)
    _positive(result["images_per_sec"], CONTRACT)
    _positive(result["peak_rss_mb"], CONTRACT)
    m = result["measurements"]
    assert m["decode_ceiling"]["by_encoding"]["png@48"]["images_per_sec"] > 0
    assert m["seed_numpy"]["images"] == len(bench.training_files(data.tree))
    assert result["ratios"]["first_pass_vs_decode_ceiling"] > 0
    names = {t["name"] for t in result["targets"]}
    assert "steady state img/s" in names and "peak RSS streaming, no cache (MB)" in names
    assert "pipeline_steady_state" in bench.format_table(result)
    # The CPU-work variant (input only) is the same pipeline with a per-example map.
    m = bench.run_input(cfg, data)
    _positive(m["pipeline_steady_state_cpu_flip_rot90"], ["images_per_sec"])


def test_train(tiny):
    cfg, data = tiny
    m = bench.run_train(cfg, data)["train/seed_cnn/float32"]
    _positive(m["pipeline"], ["steps_per_sec", "images_per_sec"])
    _positive(m["synthetic"], ["steps_per_sec", "images_per_sec"])
    assert m["ratio"] > 0 and len(m["round_ratios"]) == 2


def test_convert(tiny):
    cfg, data = tiny
    m = bench.run_convert(cfg, data)
    _positive(m["read_files"], ["images_per_sec", "bytes_per_image"])
    for enc in ("png", "raw"):
        _positive(m[f"convert_{enc}"], ["images_per_sec", "bytes_per_image"])
    assert m["convert_raw"]["bytes_per_image"] > m["convert_png"]["bytes_per_image"]
    assert not os.path.exists(os.path.join(cfg.work_dir, "convert-png"))  # cleaned up


def test_cli_json_contract(tiny, tmp_path):
    """python tools/benchmark.py peers --data_dir --records_dir --json_out: the contract."""
    cfg, data = tiny
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "benchmark.py"), "peers",
         f"--data_dir={data.tree}", f"--records_dir={data.records_dir}",
         f"--json_out={out}", f"--work_dir={tmp_path / 'work'}", "--image_size=32",
         "--batch_size=8", "--min_seconds=0.05", "--min_batches=2", "--noisolate",
         "--ceiling_encodings=", "--seed_numpy_limit=10", "--repeats=1"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    _positive(result["images_per_sec"], CONTRACT)
    _positive(result["peak_rss_mb"], CONTRACT)
    for key in ("date", "machine", "settings", "ratios", "targets"):
        assert result[key], key
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["tf_version"]
    assert result["settings"]["image_size"] == 32
    assert "decode_ceiling" in proc.stdout and ("MISS" in proc.stdout or "PASS" in proc.stdout)
