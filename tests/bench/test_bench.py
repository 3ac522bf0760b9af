"""Benchmarks: each subcommand runs on a tiny synthetic tree and reports the contract keys.

Smoke tests only (speed goals live in the benchmark itself): tiny images, a few batches,
measurements in this process except one CLI run for the JSON contract.
"""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from leukemia_tf.bench import plan as bench
from leukemia_tf.data import images
from tests.helpers import REPO

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


def _rate(m, name):
    return m[name]["images_per_sec"]


def check_ratios(result):
    """Every ratio is the quotient of the two measurements its name says."""
    m, r = result["measurements"], result["ratios"]
    for mine in ("steady_state", "first_pass"):
        for peer in ("image_dataset_from_directory", "seed_numpy", "decode_ceiling"):
            key = f"{mine}_vs_{peer}"
            if f"pipeline_{mine}" in m and peer in m:
                assert r[key] == pytest.approx(_rate(m, f"pipeline_{mine}") / _rate(m, peer))
    for key, value in r.items():
        if key.startswith("cpu_"):
            kind = key[len("cpu_"):-len("_vs_steady_state")]
            assert value == pytest.approx(_rate(m, f"pipeline_steady_state_cpu_{kind}")
                                          / _rate(m, "pipeline_steady_state"))


def check_targets(result):
    """Each target row's measured value is the measurement its name says, and pass/miss
    is the comparison it states."""
    m, r = result["measurements"], result["ratios"]
    source = {"steady state img/s": _rate(m, "pipeline_steady_state"),
              "steady state / image_dataset_from_directory":
                  r.get("steady_state_vs_image_dataset_from_directory"),
              "first pass / decode ceiling (stored encoding)":
                  r.get("first_pass_vs_decode_ceiling"),
              "peak RSS streaming, no cache (MB)": m["pipeline_first_pass"]["peak_rss_mb"]}
    rows = {t["name"]: t for t in result["targets"]}
    for name, measured in source.items():
        if measured is None:
            continue
        t = rows[name]
        assert t["measured"] == pytest.approx(measured, abs=1e-3), name
        op, target = t["target"].split()
        assert t["pass"] == (measured >= float(target) if op == ">=" else
                             measured < float(target)), name


def check_table(result, text):
    """The printed table has one row per measurement with its measured rate, and one
    PASS/MISS line per target matching the JSON."""
    lines = text.splitlines()
    for name, x in result["measurements"].items():
        row = [line for line in lines if line.startswith(name + " ")]
        assert row, f"no table row for {name}"
        assert f"{x['images_per_sec']:.1f}" in row[0].split(), (name, row[0])
    for t in result["targets"]:
        row = [line for line in lines if line.startswith(t["name"])]
        assert row and row[-1].rstrip().endswith("PASS" if t["pass"] else "MISS"), t


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
    check_ratios(result)
    check_targets(result)
    check_table(result, bench.format_table(result))
    assert set(result["images_per_sec"]) == set(m)
    assert all(result["images_per_sec"][k] == _rate(m, k) for k in m)
    # The CPU-work variant (input only) is the same pipeline with a per-example map.
    m = bench.run_input(cfg, data)
    _positive(m["pipeline_steady_state_cpu_flip_rot90"], ["images_per_sec"])
    check_ratios({"measurements": m, "ratios": bench.ratios(m)})
    assert "cpu_flip_rot90_vs_steady_state" in bench.ratios(m)


def test_train(tiny):
    cfg, data = tiny
    m = bench.run_train(cfg, data)["train/seed_cnn/float32"]
    _positive(m["pipeline"], ["steps_per_sec", "images_per_sec"])
    _positive(m["synthetic"], ["steps_per_sec", "images_per_sec"])
    assert m["ratio"] == pytest.approx(m["pipeline"]["images_per_sec"]
                                       / m["synthetic"]["images_per_sec"])
    for side in ("pipeline", "synthetic"):
        assert m[side]["images_per_sec"] == pytest.approx(
            cfg.train_batch_size * m[side]["steps_per_sec"])
    assert m["images_per_sec"] == m["pipeline"]["images_per_sec"]
    assert len(m["round_ratios"]) == cfg.train_rounds
    assert m["steps"] == cfg.train_rounds * max(1, cfg.train_steps // cfg.train_rounds)
    assert m["model"] == "seed_cnn" and m["precision"] == "float32"
    ratios = bench.ratios({"train/seed_cnn/float32": m})
    assert ratios == {"train/seed_cnn/float32/pipeline_vs_synthetic": m["ratio"]}


def test_convert(tiny):
    cfg, data = tiny
    m = bench.run_convert(cfg, data)
    _positive(m["read_files"], ["images_per_sec", "bytes_per_image"])
    table, _ = bench.cnmc.discover(data.tree)
    sizes = [os.path.getsize(p) for p in table["path"]]
    assert m["read_files"]["images"] == len(sizes)
    assert m["read_files"]["bytes_per_image"] == pytest.approx(sum(sizes) / len(sizes))
    assert m["convert_png"]["images"] == len(sizes)
    # raw records hold every decoded pixel (H * W * 3) plus a few hundred bytes of
    # record fields per image.
    pixels = np.mean([images.decode(open(p, "rb").read()).size for p in table["path"]])
    assert pixels <= m["convert_raw"]["bytes_per_image"] <= pixels + 2048
    r = bench.ratios(m)
    for enc in ("png", "raw"):
        assert r[f"convert_{enc}_vs_read_files"] == pytest.approx(
            _rate(m, f"convert_{enc}") / _rate(m, "read_files"))
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
    assert set(result["measurements"]) >= set(CONTRACT)
    check_ratios(result)
    check_targets(result)
    check_table(result, proc.stdout)
