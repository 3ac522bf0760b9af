"""Command lines explain themselves: --help lists each entry point's flags, entry points
import together, expected failures are one `error:` line, and TensorFlow's C++ start-up
noise stays out of the console."""
import importlib
import os
import subprocess
import sys

import pytest
from absl import flags

from leukemia_tf.cli import common
from tests.helpers import REPO

BIN = os.path.dirname(sys.executable)

# entry point -> (console script, tools/ script or `-m` module, flags its --help must list)
ENTRY_POINTS = {
    "train": ("leukemia-train", "-m leukemia_tf.train",
              ["records_dir", "model_dir", "model", "epochs", "batch_size", "image_size",
               "strategy", "mixed_precision", "learning_rate", "cache"]),
    "evaluate": ("leukemia-evaluate", "-m leukemia_tf.evaluate",
                 ["model_dir", "records_dir", "split", "tta", "threshold"]),
    "predict": ("leukemia-predict", "-m leukemia_tf.predict",
                ["model_dir", "input", "output", "tta", "threshold"]),
    "convert": ("leukemia-convert", "tools/convert_to_tfrecords.py",
                ["data_dir", "output_dir", "encoding", "canvas_size", "on_error",
                 "verify", "num_workers"]),
    "synthetic": ("leukemia-synthetic", "tools/make_synthetic_cnmc.py",
                  ["output_dir", "seed", "full", "num_validation"]),
    "bench": ("leukemia-bench", "tools/benchmark.py",
              ["data_dir", "records_dir", "json_out", "image_size", "batch_size"]),
    "crossval": ("leukemia-crossval", "tools/crossval.py",
                 ["records_dir", "out_dir", "models", "folds", "epochs"]),
}


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=180, **kw)


def _assert_lists_flags(out: str, names, who: str):
    missing = [n for n in names if f"--{n}" not in out and f"--[no]{n}" not in out]
    assert not missing, f"{who} --help does not list {missing}:\n{out[:2000]}"
    assert "USAGE:" not in out.splitlines()[0], f"{who} --help has no description"


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_console_script_help_lists_flags(module):
    script, _, names = ENTRY_POINTS[module]
    path = os.path.join(BIN, script)
    assert os.path.exists(path), (f"console script {script} not installed beside "
                                  f"{sys.executable}: run `make test` (it installs the package)")
    r = _run([path, "--help"])
    assert r.returncode == 0, r.stderr
    _assert_lists_flags(r.stdout, names, script)


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_tool_or_module_help_lists_flags(module):
    _, how, names = ENTRY_POINTS[module]
    args = [sys.executable, *how.split()]
    r = _run([*args, "--help"])
    assert r.returncode == 0, r.stderr
    _assert_lists_flags(r.stdout, names, how)
    assert "cudart_stub" not in r.stderr and "InitializeLog" not in r.stderr, r.stderr


def test_entry_points_import_together_and_define_into_own_flag_values():
    """No flag is defined at import: every entry point imports into one process."""
    before = set(flags.FLAGS)
    for module in ENTRY_POINTS:
        importlib.import_module(f"leukemia_tf.cli.{module}")
    importlib.import_module("leukemia_tf.train")
    importlib.import_module("leukemia_tf.evaluate")
    importlib.import_module("leukemia_tf.predict")
    assert set(flags.FLAGS) == before, "importing an entry point defined flags"
    for module, (_, _, names) in ENTRY_POINTS.items():
        fv = flags.FlagValues()
        importlib.import_module(f"leukemia_tf.cli.{module}").define_flags(fv)
        assert set(names) <= set(fv), module


def test_noise_filter_keeps_real_messages():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR",
        "I0000 00:00:1795738826.795952    5455 cudart_stub.cc:31] Could not find cuda "
        "drivers on your machine, GPU will not be used.",
        "E0000 00:00:1795738836.787166    5455 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    kept = ["W0000 some_op.cc:12] Out of memory while trying to allocate 4GiB",
            "Traceback (most recent call last):", "ValueError: bad shard"]
    assert all(common.NOISE.search(line) for line in noise)
    assert not any(common.NOISE.search(line) for line in kept)


@pytest.mark.parametrize("argv,verbose", [
    (["prog"], False), (["prog", "--verbosity=1"], True), (["prog", "-v", "1"], True),
    (["prog", "--verbosity=0"], False), (["prog", "-v=2"], True)])
def test_verbosity_brings_noise_back(argv, verbose):
    assert common.wants_verbose(argv) is verbose


def test_expected_failure_is_one_error_line_without_cpp_noise(tmp_path):
    missing = tmp_path / "no_such_records"
    r = _run([sys.executable, "-m", "leukemia_tf.evaluate", f"--model_dir={tmp_path}",
              f"--records_dir={missing}"])
    assert r.returncode == 1, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "cudart_stub" not in r.stderr and "cuInit" not in r.stderr, r.stderr
