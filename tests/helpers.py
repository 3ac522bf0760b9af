"""Shared test helpers: paths of the shipped test data, tiny C-NMC trees built from the
eight real sample images, a small training config, and a Markdown link checker.

Everything read here is in tests/fixtures/ (see its README): the suite never reaches outside
the repository. Fixtures live in conftest.py and use these helpers.
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.data import images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
REAL_SAMPLES = os.path.join(FIXTURES, "real_samples")
LISTING = os.path.join(FIXTURES, "kaggle_listing.tsv")


def require(path: str) -> str:
    """The test data ships with the repository (tests/fixtures/README.md): a missing file is a
    broken checkout, reported as such rather than skipped or turned into odd errors."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"test data missing: {path} (tests/fixtures/ is part of the repository; "
            f"see tests/fixtures/README.md)")
    return path


def real_sample_paths():
    out = []
    for d, _, files in os.walk(require(REAL_SAMPLES)):
        out += [os.path.join(d, f) for f in files if f.endswith(".bmp")]
    if len(out) != 8:
        raise FileNotFoundError(f"expected the 8 real sample BMPs under {REAL_SAMPLES}, "
                                f"found {len(out)}")
    return sorted(out)


def build_tree(root, per_class_per_fold=2, n_val=4, n_test=3, seed=0, hem_per_fold=None):
    """A small valid C-NMC tree: real sample pixels with per-file noise (unique bytes).

    Returns the C-NMC_Leukemia root. Validation images use the labels CSV; test images
    are 600x600 with the 450 image centred (same cell scale).
    """
    rng = np.random.default_rng(seed)
    base = [images.decode_bmp(open(p, "rb").read()) for p in real_sample_paths()]
    top = os.path.join(root, "C-NMC_Leukemia")

    def pixels():
        img = base[rng.integers(len(base))].astype(np.int16)
        img += rng.integers(-3, 4, img.shape, dtype=np.int16)
        return np.clip(img, 0, 255).astype(np.uint8)

    pid = {1: ["1", "3"], 0: ["H6", "h3"]}
    for fold in range(3):
        for label, cls in ((1, "all"), (0, "hem")):
            d = os.path.join(top, "training_data", f"fold_{fold}", cls)
            os.makedirs(d, exist_ok=True)
            count = per_class_per_fold if label or hem_per_fold is None else hem_per_fold
            for i in range(count):
                patient = pid[label][i % 2] + ("" if fold == 0 else str(fold))
                if patient.lower().startswith("h") and fold:
                    patient = patient[0] + str(10 * fold + i)
                name = f"UID_{patient}_{i + 1}_{fold + 1}_{cls}.bmp"
                with open(os.path.join(d, name), "wb") as f:
                    f.write(images.encode_bmp(pixels()))
    vdir = os.path.join(top, "validation_data", "C-NMC_test_prelim_phase_data")
    os.makedirs(vdir, exist_ok=True)
    rows = ["Patient_ID,new_names,labels"]
    for n in range(1, n_val + 1):
        label = n % 2
        with open(os.path.join(vdir, f"{n}.bmp"), "wb") as f:
            f.write(images.encode_bmp(pixels()))
        rows.append(f"UID_{'5' if label else 'H5'}_{n}_1_{'all' if label else 'hem'}.bmp,"
                    f"{n}.bmp,{label}")
    with open(os.path.join(top, "validation_data",
                           "C-NMC_test_prelim_phase_data_labels.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    tdir = os.path.join(top, "testing_data", "C-NMC_test_final_phase_data")
    os.makedirs(tdir, exist_ok=True)
    for n in range(1, n_test + 1):
        big = np.zeros((600, 600, 3), np.uint8)
        big[75:525, 75:525] = pixels()
        with open(os.path.join(tdir, f"{n}.bmp"), "wb") as f:
            f.write(images.encode_bmp(big))
    return top


def tiny_config(records_dir, model_dir, **train):
    """A config that trains a small model on `records_dir` in seconds."""
    from leukemia_tf import config as C
    train.setdefault("epochs", 2)
    train.setdefault("batch_size", 8)
    train.setdefault("mixed_precision", "float32")
    train.setdefault("tensorboard", False)
    train.setdefault("verbose", 0)
    return C.Config(data=C.DataConfig(records_dir=records_dir, image_size=48),
                    model=C.ModelConfig(name="resnet_small", width=8),
                    train=C.TrainConfig(model_dir=str(model_dir), **train))


def predict_in_plain_tf_keras(keras_path, images, nested_models=0):
    """`model(images)[:, 0]` of `keras_path` loaded with safe_mode=True in a fresh Python
    that never imports leukemia_tf (no PYTHONPATH, working dir outside the repository).

    Asserts in that Python that the package was not imported, that the model holds
    `nested_models` nested Models, and that every layer (theirs too) is a stock tf_keras
    layer. Returns the probabilities as floats.
    """
    with tempfile.TemporaryDirectory() as tmp:
        x_path = os.path.join(tmp, "x.npy")
        np.save(x_path, np.asarray(images))
        code = (
            "import sys, numpy as np, tf_keras\n"
            f"m = tf_keras.models.load_model({str(keras_path)!r}, safe_mode=True,"
            " compile=False)\n"
            "assert not any(k.startswith('leukemia_tf') for k in sys.modules), 'imported'\n"
            "inner = [l for l in m.layers if isinstance(l, tf_keras.Model)]\n"
            f"assert len(inner) == {int(nested_models)}, inner\n"
            "layers = m.layers + [l for n in inner for l in n.layers]\n"
            "assert all(type(l).__module__.startswith('tf_keras') for l in layers)\n"
            f"print(*m(np.load({x_path!r}), training=False).numpy()[:, 0])\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=tmp, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [float(v) for v in proc.stdout.strip().splitlines()[-1].split()]


def run_main(command, *flags):
    """Runs leukemia_tf.cli.<command>'s main in this process, its flags parsed as its
    console script parses them. Returns (1, "error: <message>") for a UserError, which the
    entry point prints as that one line before exiting 1, else (main's return value, "");
    anything else raises, as it would leave a traceback."""
    import importlib
    import pytest
    from absl import flags as absl_flags
    from leukemia_tf.cli import flag_table
    from leukemia_tf.errors import UserError
    cli = importlib.import_module(f"leukemia_tf.cli.{command}")
    fv = absl_flags.FlagValues()
    cli.define_flags(fv)
    flag_table.parse(fv, [cli.COMMAND.script, *flags])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "FLAGS", fv)
        try:
            return cli.main([cli.COMMAND.script]), ""
        except UserError as e:
            return 1, f"error: {e}"


# [text](target) and ![alt](target); targets have no spaces in our reports.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def links(text):
    return _LINK.findall(text)


def check_links(md_path):
    """Asserts each link target is relative and exists, resolved against md_path's folder.

    Returns the list of targets (so callers can check which ones are there).
    """
    text = open(md_path, encoding="utf-8").read()
    found = links(text)
    base = os.path.dirname(os.path.abspath(md_path))
    for target in found:
        assert "://" not in target and not target.startswith("/"), (md_path, target)
        assert not os.path.isabs(target), (md_path, target)
        path = os.path.normpath(os.path.join(base, target.split("#")[0]))
        assert os.path.isfile(path), f"{md_path}: broken link {target} -> {path}"
    return found


def four_patients():
    """12 scored cells of 4 patients (patient_id, label, probability, prediction)."""
    # patient A (ALL): 4 images, 3 correct -> .75;  B (hem): 2 images, 0 correct -> 0
    # C (hem): 4 images, 2 correct -> .5;  D (ALL): 2 images, 1 correct -> .5
    rows = [
        ("A", 1, 0.9, 1), ("A", 1, 0.8, 1), ("A", 1, 0.7, 1), ("A", 1, 0.2, 0),
        ("B", 0, 0.6, 1), ("B", 0, 0.8, 1),
        ("C", 0, 0.1, 0), ("C", 0, 0.3, 0), ("C", 0, 0.7, 1), ("C", 0, 0.9, 1),
        ("D", 1, 0.4, 0), ("D", 1, 0.6, 1),
    ]
    return pd.DataFrame(rows, columns=["patient_id", "label", "probability", "prediction"])
