"""Every benchmark subcommand runs with its default configuration: all defaults (ceiling
encodings, first-pass encodings, models, precisions, step settings, CPU work, isolation
in `peers` through the CLI) except the sizes and timings, which are tiny here."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from leukemia_tf.bench import plan as bench
from tests.helpers import REPO

SIZES_AND_TIMINGS = dict(num_images=30, image_size=48, batch_size=8, min_seconds=0.02,
                         min_batches=2, repeats=1, ceiling_sample=4, seed_numpy_limit=10,
                         train_batch_size=4, train_steps=2, train_rounds=2, flops_seconds=0.02,
                         convert_workers=1)
TIMING_FLAGS = ["--num_images=30", "--image_size=48", "--batch_size=8", "--min_seconds=0.02",
                "--min_batches=2", "--repeats=1", "--ceiling_sample=4",
                "--seed_numpy_limit=10", "--convert_workers=1"]


@pytest.mark.slow
def test_all_with_defaults(tmp_path):
    """`all` = input, peers, train and convert, each with its defaults."""
    d = bench.BenchConfig()
    cfg = dataclasses.replace(d, work_dir=str(tmp_path), isolate=False, **SIZES_AND_TIMINGS)
    result = bench.run("all", cfg)
    m = result["measurements"]
    for name in ("pipeline_first_pass", "pipeline_steady_state", "bare_pipeline",
                 "image_dataset_from_directory", "seed_numpy",
                 "decode_ceiling", "read_files", "first_pass/image_dataset_from_directory"):
        assert m[name]["images_per_sec"] > 0, name
    for kind in d.cpu_work:
        assert m[f"pipeline_steady_state_cpu_{kind}"]["images_per_sec"] > 0
    assert set(m["decode_ceiling"]["by_encoding"]) == set(d.ceiling_encodings)
    for enc in d.first_pass_encodings:
        assert m[f"first_pass/{enc}"]["images_per_sec"] > 0, enc
    for enc in d.encodings:
        assert m[f"convert_{enc}"]["images_per_sec"] > 0, enc
    for model in d.models:
        for precision in d.precisions:
            row = m[f"train/{model}/{precision}/jit_{d.jit_compile}/spe{d.steps_per_execution}"]
            assert row["flop_utilisation"] > 0 and row["synthetic"]["images_per_sec"] > 0
    for name, x in m.items():  # every figure has its limits beside it (maybe none)
        assert "limits" in x, name
    assert json.loads(json.dumps(result))["ratios"] == result["ratios"]
    assert bench.format_table(result)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["peers"])
def test_cli_with_default_flags(tmp_path, command):
    """The command that crashed with its defaults (raw originals in the decode ceilings),
    through the CLI, each measurement in its own process as by default."""
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "leukemia_tf.cli.bench", command,
         f"--work_dir={tmp_path / 'work'}", f"--json_out={out}", *TIMING_FLAGS],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO})  # this checkout, not an installed copy
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["measurements"]["decode_ceiling"]["by_encoding"]) == set(
        bench.BenchConfig().ceiling_encodings)
    assert all(x["isolated"] for x in result["measurements"].values())
