"""Command lines explain themselves: --help lists each entry point's flags, entry points
import together, expected failures are one `error:` line, and TensorFlow's C++ start-up
noise stays out of the console."""
import importlib
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from leukemia_tf import config as C
from leukemia_tf import presets
from leukemia_tf.cli import flag_table, runner
from tests.helpers import REPO

BIN = os.path.dirname(sys.executable)

# entry point -> (console script, its `-m` module, flags its --help must list)
ENTRY_POINTS = {
    "train": ("leukemia-train", "-m leukemia_tf.cli.train",
              ["records_dir", "model_dir", "model", "epochs", "batch_size", "image_size",
               "strategy", "mixed_precision", "learning_rate", "cache", "split", "progress",
               "preset"]),
    "evaluate": ("leukemia-evaluate", "-m leukemia_tf.cli.evaluate",
                 ["model_dir", "records_dir", "split", "tta", "threshold"]),
    "predict": ("leukemia-predict", "-m leukemia_tf.cli.predict",
                ["model_dir", "input", "output", "tta", "threshold"]),
    "convert": ("leukemia-convert", "-m leukemia_tf.cli.convert",
                ["data_dir", "output_dir", "encoding", "canvas_size", "on_error",
                 "verify", "num_workers"]),
    "synthetic": ("leukemia-synthetic", "-m leukemia_tf.cli.synthetic",
                  ["output_dir", "seed", "full", "num_validation"]),
    "bench": ("leukemia-bench", "-m leukemia_tf.cli.bench",
              ["data_dir", "records_dir", "json_out", "image_size", "batch_size"]),
    "crossval": ("leukemia-crossval", "-m leukemia_tf.cli.crossval",
                 ["records_dir", "out_dir", "models", "folds", "epochs"]),
    "compare": ("leukemia-compare", "-m leukemia_tf.cli.compare",
                ["studies", "ensembles", "out_dir"]),
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
        "I0000 00:00:1796682365.438883   18104 port.cc:153] oneDNN custom operations are on. "
        "You may see slightly different numerical results due to floating-point round-off "
        "errors from different computation orders. To turn them off, set the environment "
        "variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    ]
    kept = ["W0000 some_op.cc:12] Out of memory while trying to allocate 4GiB",
            "Traceback (most recent call last):", "ValueError: bad shard"]
    assert all(runner.NOISE.search(line) for line in noise)
    assert not any(runner.NOISE.search(line) for line in kept)


@pytest.mark.parametrize("argv,verbose", [
    (["prog"], False), (["prog", "--verbosity=1"], True), (["prog", "-v", "1"], True),
    (["prog", "--verbosity=0"], False), (["prog", "-v=2"], True)])
def test_verbosity_brings_noise_back(argv, verbose):
    assert runner.wants_verbose(argv) is verbose


def test_expected_failure_is_one_error_line_without_cpp_noise(tmp_path):
    missing = tmp_path / "no_such_records"
    r = _run([sys.executable, "-m", "leukemia_tf.cli.evaluate", f"--model_dir={tmp_path}",
              f"--records_dir={missing}"])
    assert r.returncode == 1, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "cudart_stub" not in r.stderr and "cuInit" not in r.stderr, r.stderr


# ---------------------------------------------------------------- flags -> config
ROOTS = ("train", "evaluate", "predict", "convert", "synthetic", "crossval")


def _parse(module, *args):
    cli = importlib.import_module(f"leukemia_tf.cli.{module}")
    fv = flags.FlagValues()
    cli.define_flags(fv)
    flag_table.parse(fv, [cli.COMMAND.script, *args])
    return cli.config_from_flags(fv)


def _train(*args):
    return _parse("train", "--records_dir=R", "--model_dir=M", *args)


@pytest.mark.parametrize("module", ROOTS)
def test_every_short_flag_names_a_setting_of_its_root(module):
    """One table per command; each entry a real dotted setting (or a derived flag)."""
    cmd = importlib.import_module(f"leukemia_tf.cli.{module}").COMMAND
    known = C.fields(type(cmd.base()))
    for name, alias in cmd.aliases.items():
        assert alias.derive is not None or alias.path in known, (module, name, alias.path)
        assert alias.group in flag_table.GROUPS, (module, name)


@pytest.mark.parametrize("module", ROOTS)
def test_a_flag_takes_its_choices_from_its_setting(module):
    """Allowed values are declared once, on the setting: a flag never spells them again."""
    cmd = importlib.import_module(f"leukemia_tf.cli.{module}").COMMAND
    known = C.fields(type(cmd.base()))
    for name, alias in cmd.aliases.items():
        if alias.choices and alias.derive is None:
            assert not known[alias.path].metadata.get("choices"), (module, name)
            assert alias.path in _UNDECLARED_CHOICES, \
                f"--{name}: declare its choices on {alias.path} (config.declared)"


# Settings whose flag alone narrows or names the values, each with why.
_UNDECLARED_CHOICES = {
    "model.name",           # the registry's names (model/model_names.py), not config's
    "inference.calibrate",  # predict allows only none|run of evaluate's none|run|<split>
}


def test_encodings_and_jit_choices_have_one_home():
    from leukemia_tf.bench import settings
    from leukemia_tf.data import convert, images
    for cls in (settings.BenchConfig, convert.ConvertConfig):
        assert C.choices(cls, "encoding") == images.ENCODINGS
    assert C.choices(settings.BenchConfig, "jit_compile") == \
        C.choices(C.TrainConfig, "jit_compile")


def test_short_flags_and_dotted_overrides_reach_one_home():
    cfg = _train("--model=seed_cnn", "--image_size=96", "--epochs=3", "--train_folds=0,1",
                 "--split=fold2", "--noaugment", "--mixed_precision=mixed_float16",
                 "--seed=5", "--deterministic")
    assert cfg.model.name == "seed_cnn" and cfg.data.image_size == 96
    assert cfg.data.train_folds == (0, 1) and cfg.data.val_split == "fold2"
    assert cfg.train.epochs == 3 and cfg.model.augment.enabled is False
    assert cfg.train.mixed_precision == "mixed_float16"
    assert (cfg.data.seed, cfg.data.deterministic) == (5, True)
    assert (cfg.data.records_dir, cfg.train.model_dir) == ("R", "M")
    # A dotted override wins over the short flag of the same setting.
    cfg = _train("--epochs=3", "--config.train.epochs=4", "--config.model.augment.zoom=0.1")
    assert cfg.train.epochs == 4 and cfg.model.augment.zoom == 0.1


def test_defaults_equal_the_default_preset_and_presets_keep_their_values():
    assert _train() == C.replace(presets.preset("default"), data={"records_dir": "R"},
                                 train={"model_dir": "M"})
    seed = _train("--preset=seed_cnn")
    assert seed == C.replace(presets.preset("seed_cnn"), data={"records_dir": "R"},
                             train={"model_dir": "M"})
    cfg = _train("--preset=seed_cnn", "--epochs=7", "--l2=0.001")
    assert cfg.train.epochs == 7 and cfg.model.l2 == 0.001 and cfg.train.optimizer == "adam"


def test_derived_flags_and_deprecated_alias(capsys):
    cfg = _train("--color_jitter=2", "--progress=bar")
    assert cfg.model.augment.brightness == 2 * C.AugmentConfig().brightness
    assert cfg.model.augment.hue == 2 * C.AugmentConfig().hue and cfg.train.verbose == 1
    assert _train("--verbose=0").train.verbose == 0
    cfg = _train("--val_split=fold1", "--train_folds=0,2")
    assert cfg.data.val_split == "fold1"
    err = capsys.readouterr().err
    assert err.strip() == "note: --val_split is deprecated; use --split", err


def test_flagfile_holds_short_and_dotted_flags(tmp_path):
    f = tmp_path / "run.flags"
    f.write_text("--epochs=9\n--batch_size=16\n--config.train.learning_rate=0.01\n")
    cfg = _train(f"--flagfile={f}")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate) == (9, 16, 0.01)


@pytest.mark.parametrize("args,message", [
    (["--epochs=0"], "--epochs must be at least 1, not 0"),
    (["--config.train.epochz=3"],
     "unknown setting --config.train.epochz (did you mean --config.train.epochs"),
    (["--config.train.warmup_epochs=-1"], "--warmup_epochs must be at least 0, not -1.0"),
    (["--config.data.train_folds"], "--config.data.train_folds needs a value"),
])
def test_config_errors_name_the_flag(args, message):
    with pytest.raises(C.ConfigError) as e:
        _train(*args)
    assert str(e.value).startswith(message), str(e.value)


def test_other_commands_map_flags_generically():
    ev = _parse("evaluate", "--model_dir=M", "--records_dir=R", "--split=fold1",
                "--tta=flips", "--config.batch_size=8")
    assert (ev.model_dir, ev.split, ev.tta, ev.batch_size) == ("M", "fold1", "flips", 8)
    pr = _parse("predict", "--model_dir=M", "--input=a.bmp,b.bmp", "--output=o.csv")
    assert pr.input == ("a.bmp", "b.bmp") and pr.split == "test"
    cv = _parse("crossval", "--records_dir=R", "--out_dir=O", "--epochs=2", "--width=8",
                "--config.run.train.warmup_epochs=0")
    assert cv.run.data.records_dir == "R" and cv.run.train.epochs == 2
    assert cv.run.model.width == 8 and cv.run.train.warmup_epochs == 0
    syn = _parse("synthetic", "--output_dir=O", "--full", "--train_per_fold_all=5")
    assert syn.tree.train_all == (5, 5, 5) and syn.tree.num_duplicates == 71
    conv = _parse("convert", "--output_dir=O", "--verify", "--encoding=raw")
    assert conv.verify and conv.conversion.encoding == "raw"


def test_model_help_lists_the_registry_names():
    fv = flags.FlagValues()
    importlib.import_module("leukemia_tf.cli.train").define_flags(fv)
    from leukemia_tf.model import registry
    assert list(fv["model"].parser.enum_values) == list(registry.MODELS)


# ---------------------------------------------------------------- fail fast, no TensorFlow
_PROBE = """
import builtins, sys
seen = []
real_print = builtins.print
def watching_print(*args, **kw):  # the moment an error line is printed
    if args and str(args[0]).startswith("error:"):
        seen.append("tensorflow" in sys.modules)
    real_print(*args, **kw)
builtins.print = watching_print
import importlib
cli = importlib.import_module("leukemia_tf.cli." + sys.argv[1])
sys.argv = [cli.COMMAND.script] + sys.argv[2:]
try:
    cli.console_main()
except SystemExit as e:
    real_print("exit", e.code, "raised", seen, "tf", "tensorflow" in sys.modules)
"""


def _probe(module, *args):
    r = _run([sys.executable, "-c", _PROBE, module, *args])
    return r.stdout.strip().splitlines()[-1], r.stderr.strip().splitlines()


@pytest.mark.parametrize("module,args,expected", [
    ("train", ["--records_dir={rec}", "--model_dir={tmp}/m", "--epochs=0"],
     "error: --epochs must be at least 1, not 0"),
    ("train", ["--records_dir={rec}"],
     "error: --model_dir is required (see leukemia-train --help)"),
    ("train", ["--records_dir={rec}", "--model_dir={tmp}/m", "--train_folds=0,3"],
     "error: --train_folds: there is no fold 3 in {rec} (folds: 0, 1, 2)"),
    ("evaluate", ["--model_dir={tmp}", "--records_dir={rec}", "--split=valid"],
     "error: --split=valid is not a split this command takes: one of validation (the "
     "labeled set), fold<k> (training fold k: 0, 1, 2)"),
    ("predict", ["--model_dir={tmp}", "--input={rec}", "--output={tmp}/p.csv",
                 "--split=fold9"], "error: --split=fold9: there is no fold 9 in {rec}"),
    ("crossval", ["--records_dir={rec}", "--out_dir={tmp}/cv", "--models=vgg"],
     "error: --models: no model vgg; models: seed_cnn, resnet_small"),
    ("train", ["--records_dir={rec}", "--model_dir={tmp}/m", "--train_folds=0,1,2",
               "--split=fold2"],
     "error: --split=fold2 is also a training fold (--train_folds=0,1,2): a split that "
     "chooses the best epoch must not be trained on; use --train_folds=0,1 or another "
     "--split"),
    ("train", ["--records_dir={rec}", "--model_dir={tmp}/m", "--learning_rate=nan"],
     "error: --learning_rate must be a finite number, not nan"),
    ("predict", ["--model_dir={tmp}", "--input={rec}", "--output={tmp}"],
     "error: --output {tmp} is a directory: give the CSV file to write, e.g. "
     "{tmp}/predictions.csv"),
    ("convert", ["--data_dir={tmp}/no_such_tree", "--output_dir={tmp}/r"],
     "error: --data_dir: {tmp}/no_such_tree does not exist"),
])
def test_bad_flags_fail_in_one_line_before_tensorflow(records_dir, tmp_path, module, args,
                                                      expected):
    args = [a.format(rec=records_dir, tmp=tmp_path) for a in args]
    last, err = _probe(module, *args)
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert len(err) == 1 and err[0].startswith(
        expected.format(rec=records_dir, tmp=tmp_path)), err
    assert not (tmp_path / "m").exists()


def test_model_dir_of_other_settings_fails_before_tensorflow_naming_flags(records_dir,
                                                                          tmp_path):
    md = tmp_path / "m"
    md.mkdir()
    old = C.replace(presets.preset("default"),
                    data={"records_dir": records_dir, "val_split": "fold2",
                          "train_folds": (0, 1)},
                    train={"model_dir": str(md)})
    (md / "config.json").write_text(old.to_json())
    last, err = _probe("train", f"--records_dir={records_dir}", f"--model_dir={md}")
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert len(err) == 1 and err[0].startswith(f"error: {md} holds a run with other "
                                               "settings ("), err
    assert '--split: "fold2" in config.json, "validation" now' in err[0], err
    assert "--train_folds: [0, 1] in config.json, [0, 1, 2] now" in err[0], err
    assert "data.val_split" not in err[0]


def test_records_dir_that_is_an_image_tree_says_so(tiny_tree, tmp_path):
    last, err = _probe("train", f"--records_dir={tiny_tree}", f"--model_dir={tmp_path}/m")
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert err == [f"error: --records_dir {tiny_tree} is a C-NMC image tree, not converted "
                   f"records: convert it first (leukemia-convert --data_dir={tiny_tree} "
                   "--output_dir=<records dir>) and pass that --records_dir"], err


def test_split_error_of_train_lists_cv(records_dir, tmp_path):
    last, err = _probe("train", f"--records_dir={records_dir}", f"--model_dir={tmp_path}/m",
                       "--split=valid")
    assert last.startswith("exit 1") and err[-1].endswith(
        "cv (the held-out --cv_fold of the training folds)"), err


def test_unknown_flag_is_one_line_without_help(tmp_path):
    last, err = _probe("evaluate", "--spilt=fold1")
    assert last == "exit 1 raised [False] tf False", last
    assert err == ["error: Unknown command line flag 'spilt'. Did you mean: split ? "
                   "(see leukemia-evaluate --help)"], err


# ---------------------------------------------------------------- help and usage
def test_help_is_grouped_marks_required_and_names_the_console_script():
    r = _run([sys.executable, "-m", "leukemia_tf.cli.train", "--help"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "usage: leukemia-train --records_dir=DIR --model_dir=DIR" in out
    assert "python -m" not in out.split("usage:")[1]
    heads = [line for line in out.splitlines() if line.endswith(":") and " " not in line]
    assert heads[:5] == ["data:", "model:", "optimisation:", "distribution:", "output:"], heads
    assert re.search(r"--records_dir +\(required\)", out) and re.search(
        r"--model_dir +\(required\)", out)
    assert "--config.<path>=VALUE     e.g. --config.data.image_size=224" in out
    assert len(out.splitlines()) < 130


def test_bench_help_is_grouped_and_answers_before_tensorflow():
    r = _run([sys.executable, "-c", _PROBE, "bench", "--help"])
    out = r.stdout
    assert out.splitlines()[-1] == "exit 0 raised [] tf False", (out[-500:], r.stderr)
    assert "usage: leukemia-bench <input|peers|train|convert|all> (required)" in out
    assert "python -m" not in out.split("usage:")[1]
    heads = [line for line in out.splitlines() if line.endswith(":") and " " not in line]
    assert heads == ["data:", "measure:", "train:", "convert:", "output:"], heads
    assert re.search(r"--json_out +Write the results JSON", out)


def test_help_never_breaks_a_word():
    fv = flags.FlagValues()
    importlib.import_module("leukemia_tf.cli.train").define_flags(fv)
    text = flag_table._flag_line(fv["model"])
    assert all(len(line) <= 100 for line in text.splitlines()), text
    from leukemia_tf import model as model_names
    assert all(name in text for name in model_names.NAMES), text  # none split by a break


def test_bench_without_a_subcommand_prints_a_short_usage():
    r = _run([os.path.join(BIN, "leukemia-bench")]
             if os.path.exists(os.path.join(BIN, "leukemia-bench")) else
             [sys.executable, "-m", "leukemia_tf.cli.bench"])
    assert r.returncode == 1
    lines = [line for line in r.stderr.strip().splitlines() if "oneDNN" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: usage: leukemia-bench <"), lines
    assert not r.stdout.strip(), r.stdout


def test_console_log_lines_have_no_absl_prefix():
    import logging
    fmt = runner.PlainFormatter("%(message)s")
    info = logging.LogRecord("leukemia_tf.training", logging.INFO, "loop.py", 236,
                             "epoch 1/3", None, None)
    warn = logging.LogRecord("leukemia_tf.training", logging.WARNING, "loop.py", 236,
                             "slow", None, None)
    assert fmt.format(info) == "epoch 1/3" and fmt.format(warn) == "WARNING: slow"


def test_trainer_messages_name_flags_but_never_rewrite_paths():
    from leukemia_tf.cli import train
    line = ('data.val_split: "fold2" in config.json, "validation" now; lock file '
            '/m/train.lock: delete it; also m/model.keras: and C:\\m\\train.lock: too')
    out = train.flag_names(line)
    assert out.startswith('--split: "fold2" in config.json')
    assert "/m/train.lock: delete it" in out and "m/model.keras: and" in out
    assert out.endswith("C:\\m\\train.lock: too") and "--config" not in out


def test_a_truncated_shard_fails_train_before_tensorflow(records_dir, tmp_path):
    """README: shard sizes and record counts are checked before TensorFlow loads."""
    import shutil
    rec = tmp_path / "rec"
    shutil.copytree(records_dir, rec)
    shard = sorted(rec.glob("train-*.tfrecord"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    last, err = _probe("train", f"--records_dir={rec}", f"--model_dir={tmp_path / 'm'}")
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert len(err) == 1 and err[0].startswith("error: ") and str(shard) in err[0], err
    assert not (tmp_path / "m").exists()
