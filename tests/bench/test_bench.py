"""Benchmarks: each subcommand runs on a tiny synthetic tree and reports the contract keys,
every figure beside its limits, ratios that are the quotients they name, ratio targets.

Smoke tests only (speed goals live in the benchmark itself): tiny images, a few batches,
measurements in this process except one CLI run for the JSON contract. The default
configuration of every subcommand: test_defaults.py.
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
            "seed_numpy", "decode_ceiling", "bare_pipeline")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A ~30-image synthetic tree converted to records, and a fast config for it."""
    cfg = bench.BenchConfig(
        work_dir=str(tmp_path_factory.mktemp("bench")), num_images=30, image_size=48,
        batch_size=8, min_seconds=0.05, min_batches=2, isolate=False,
        ceiling_encodings=("bmp", "png1@out", "raw"), ceiling_sample=4, models=("seed_cnn",),
        precisions=("float32",), train_batch_size=4, train_steps=2, train_rounds=2, repeats=1,
        flops_seconds=0.05, encodings=("png", "raw"), first_pass_encodings=("png0", "raw@out"),
        convert_workers=1)
    return cfg, bench.prepare(cfg)


def _positive(d, keys):
    for k in keys:
        assert d[k] > 0, (k, d)


def _rate(m, name):
    return m[name]["images_per_sec"]


def check_ratios(result):
    """Every limit beside a figure is the measurement it names, and every ratio is the
    quotient of the two measurements its name says."""
    m, r = result["measurements"], result["ratios"]
    for name, x in m.items():
        for limit, v in x["limits"].items():
            if limit in m:
                assert v["images_per_sec"] == _rate(m, limit)
                assert v["ratio"] == pytest.approx(_rate(m, name) / _rate(m, limit))
    for mine in ("steady_state", "first_pass"):
        for peer in ("image_dataset_from_directory", "seed_numpy", "decode_ceiling"):
            key = f"{mine}_vs_{peer}"
            if f"pipeline_{mine}" in m and peer in m and peer in \
                    m[f"pipeline_{mine}"]["limits"]:
                assert r[key] == pytest.approx(_rate(m, f"pipeline_{mine}") / _rate(m, peer))
    if "bare_pipeline" in m and "pipeline_steady_state" in m:
        assert r["steady_state_vs_bare_pipeline"] == pytest.approx(
            _rate(m, "pipeline_steady_state") / _rate(m, "bare_pipeline"))
    for key, value in r.items():
        if key.startswith("steady_state_cpu_"):
            kind = key[len("steady_state_cpu_"):-len("_vs_steady_state")]
            assert value == pytest.approx(_rate(m, f"pipeline_steady_state_cpu_{kind}")
                                          / _rate(m, "pipeline_steady_state"))


def check_targets(result):
    """Targets are ratios (or peak RSS in MB): never an absolute img/s. Each row's
    measured value is the measurement its name says, and pass/miss is its comparison."""
    m, r = result["measurements"], result["ratios"]
    first = m["pipeline_first_pass"]["peak_rss_mb"] if "pipeline_first_pass" in m else None
    source = {
        "steady state / bare cached-tensor pipeline": r.get("steady_state_vs_bare_pipeline"),
        "first pass / image_dataset_from_directory":
            r.get("first_pass_vs_image_dataset_from_directory"),
        "first pass / decode ceiling (stored encoding)": r.get("first_pass_vs_decode_ceiling"),
        "peak RSS streaming, no cache (MB)": first}
    rows = {t["name"]: t for t in result["targets"]}
    for name, measured in source.items():
        if measured is None:
            assert name not in rows
            continue
        t = rows[name]
        assert t["measured"] == pytest.approx(measured, abs=1e-3), name
        op, target = t["target"].split()
        assert t["pass"] == (measured >= float(target) if op == ">=" else
                             measured < float(target)), name
    for t in result["targets"]:
        assert "img/s" not in t["name"] and "H100" not in t["name"], t
        assert "(MB)" in t["name"] or t["limit"], t  # a ratio names its limit


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
    # raw originals (stored_size 0) decode with each image's own shape.
    for enc in ("bmp", "png1@out", "raw"):
        assert m["decode_ceiling"]["by_encoding"][enc]["images_per_sec"] > 0
    assert m["decode_ceiling"]["by_encoding"]["png1@out"]["bytes_per_image"] < \
        m["decode_ceiling"]["by_encoding"]["raw"]["bytes_per_image"]
    assert m["seed_numpy"]["images"] == len(bench.training_files(data.tree))
    assert set(m["pipeline_first_pass"]["limits"]) == {
        "decode_ceiling", "image_dataset_from_directory", "seed_numpy"}
    assert set(m["pipeline_steady_state"]["limits"]) == {
        "bare_pipeline", "image_dataset_from_directory", "seed_numpy"}
    check_ratios(result)
    check_targets(result)
    check_table(result, bench.format_table(result))
    assert set(result["images_per_sec"]) == set(m)
    assert all(result["images_per_sec"][k] == _rate(m, k) for k in m)
    # input: the CPU-work variant is the same pipeline with a per-example map.
    m = bench.run_input(cfg, data)
    bench.attach_limits(m)
    _positive(m["pipeline_steady_state_cpu_flip_rot90"], ["images_per_sec"])
    assert m["bare_pipeline"]["num_examples"] == m["pipeline_steady_state"]["num_examples"]
    check_ratios({"measurements": m, "ratios": bench.ratios(m)})
    r = bench.ratios(m)
    assert "steady_state_cpu_flip_rot90_vs_steady_state" in r
    assert r["first_pass_vs_decode_ceiling"] == pytest.approx(
        _rate(m, "pipeline_first_pass") / _rate(m, "decode_ceiling"))


def test_parse_encoding():
    assert bench.parse_encoding("png6", 224) == ("png", 6, 0)
    assert bench.parse_encoding("png", 224) == ("png", 1, 0)
    assert bench.parse_encoding("raw@out", 128) == ("raw", 1, 128)
    assert bench.parse_encoding("bmp@96", 128) == ("bmp", 1, 96)
    with pytest.raises(ValueError, match="stored encoding"):
        bench.parse_encoding("webp", 128)


def test_train(tiny):
    cfg, data = tiny
    [(name, m)] = bench.run_train(cfg, data).items()
    assert name == "train/seed_cnn/float32/jit_auto/spe1"
    _positive(m["pipeline"], ["steps_per_sec", "images_per_sec"])
    _positive(m["synthetic"], ["steps_per_sec", "images_per_sec"])
    assert m["ratio"] == pytest.approx(m["pipeline"]["images_per_sec"]
                                       / m["synthetic"]["images_per_sec"])
    for side in ("pipeline", "synthetic"):
        assert m[side]["images_per_sec"] == pytest.approx(
            cfg.train_batch_size * m[side]["steps_per_sec"])
        assert m[side]["flop_utilisation"] == pytest.approx(
            m["train_flops_per_image"] * m[side]["images_per_sec"]
            / m["machine"]["peak_flops_per_sec"])
    assert m["images_per_sec"] == m["pipeline"]["images_per_sec"]
    assert m["model"] == "seed_cnn" and m["precision"] == "float32"
    assert m["jit_compile_resolved"] is False  # auto on CPU
    assert m["train_flops_per_image"] == 3 * m["forward_flops_per_image"]
    conv = m["machine"]["by_dtype"]["float32"]["conv"]
    assert conv["flops_per_image"] > 0 and m["machine"]["peak_flops_per_sec"] > 0
    bench.attach_limits({name: m})
    ratios = bench.ratios({name: m})
    assert ratios == {f"{name}/pipeline_vs_synthetic": m["ratio"],
                      f"{name}/flop_utilisation": m["flop_utilisation"]}


def test_model_flops_counts_the_convolutions():
    """The profiler's forward count is at least the Conv2D layers' own multiply-adds
    (2 x Ho x Wo x k x k x Cin x Cout each) and not wildly more."""
    from leukemia_tf import config as C
    from leukemia_tf.bench import limits
    from leukemia_tf.model import registry
    model = registry.build_model(C.ModelConfig(name="resnet_small", width=8), 48)
    counted = limits.model_flops(model, 48)["forward_flops_per_image"]
    convs = 0
    for layer in limits._conv_layers(model):
        ho, wo, cout = (int(d) for d in layer.output.shape[1:])
        kh, kw = layer.kernel_size
        convs += 2 * ho * wo * kh * kw * int(layer.input.shape[-1]) * cout
    assert convs <= counted <= 1.5 * convs
    assert limits.heaviest_conv(model)["flops_per_image"] <= convs


@pytest.mark.slow
def test_sweep_rows_and_a_row_with_steps_per_execution(tiny):
    cfg, data = tiny
    rows = bench.train_bench.sweep_rows(["resnet_small"], ["float32"], ["off", "on"],
                                        [1, 4, 16], ["0:0", "1:2"])
    assert len(rows) == 12 and rows[-1].name == \
        "train/resnet_small/float32/jit_on/spe16/threads1:2"
    sweep = dataclasses.replace(cfg, models=("resnet_small",), sweep=True, sweep_jit=("off",),
                                sweep_steps_per_execution=(4,), sweep_precisions=("float32",),
                                train_steps=8)
    m = bench.run_train(sweep, data)
    row = m["train/resnet_small/float32/jit_off/spe4/sweep"]
    assert "pipeline" not in row and row["synthetic"]["images_per_sec"] > 0
    assert row["synthetic"]["images_per_sec"] == pytest.approx(
        cfg.train_batch_size * row["synthetic"]["steps_per_sec"])
    assert row["steps"] >= 8 and row["steps"] % 4 == 0


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
    bench.attach_limits(m)
    r = bench.ratios(m)
    for enc in ("png", "raw"):
        assert r[f"convert_{enc}_vs_read_files"] == pytest.approx(
            _rate(m, f"convert_{enc}") / _rate(m, "read_files"))
    for enc in ("png", "raw"):
        _positive(m[f"convert_{enc}"], ["images_per_sec", "bytes_per_image"])
    assert m["convert_raw"]["bytes_per_image"] > m["convert_png"]["bytes_per_image"]
    assert not os.path.exists(os.path.join(cfg.work_dir, "convert-png"))  # cleaned up
    # The first pass per stored encoding, beside image_dataset_from_directory.
    peer = _rate(m, "first_pass/image_dataset_from_directory")
    for enc in cfg.first_pass_encodings:
        x = m[f"first_pass/{enc}"]
        assert x["cache"] == "none" and x["bytes_per_image"] > 0
        assert r[f"first_pass/{enc}_vs_first_pass/image_dataset_from_directory"] == \
            pytest.approx(x["images_per_sec"] / peer)
    assert m["first_pass/raw@out"]["stored"] == "raw@48"
    assert m["first_pass/png0"]["stored"] == "png@0"


def test_cli_json_contract(tiny, tmp_path):
    """python -m leukemia_tf.cli.bench peers --data_dir --records_dir --json_out: the contract."""
    cfg, data = tiny
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, "-m", "leukemia_tf.cli.bench", "peers",
         f"--data_dir={data.tree}", f"--records_dir={data.records_dir}",
         f"--json_out={out}", f"--work_dir={tmp_path / 'work'}", "--image_size=32",
         "--batch_size=8", "--min_seconds=0.05", "--min_batches=2", "--noisolate",
         "--ceiling_encodings=", "--seed_numpy_limit=10", "--repeats=1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO})  # this checkout, not an installed copy
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


def test_a_failing_measurement_child_reports_its_own_error():
    """A TensorFlow error in a spawned measurement arrives with its message (a process
    pool alone turns it into BrokenProcessPool)."""
    from leukemia_tf.bench import rates
    from leukemia_tf.data import preprocess
    spec = preprocess.Spec(canvas_size=450, image_size=8)
    with pytest.raises(rates.MeasurementError, match="decode_rate failed.*reshape"):
        rates.measure(rates.decode_rate, [b"abc"], "raw", 8, spec, 1, 1, 0.0, isolate=True)
