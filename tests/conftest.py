"""Shared test fixtures: tiny C-NMC trees built from the eight real sample images.

Everything read here is in tests/data/ (see its README): the suite never reaches outside
the repository.
"""
import os
import shutil

import numpy as np
import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.data import images

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
REAL_SAMPLES = os.path.join(DATA, "real_samples")
LISTING = os.path.join(DATA, "kaggle_listing.tsv")


def _require(path: str) -> str:
    """The test data ships with the repository (tests/data/README.md): a missing file is a
    broken checkout, reported as such rather than skipped or turned into odd errors."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"test data missing: {path} (tests/data/ is part of the repository; "
            f"see tests/data/README.md)")
    return path


def real_sample_paths():
    out = []
    for d, _, files in os.walk(_require(REAL_SAMPLES)):
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


@pytest.fixture
def tiny_tree(tmp_path):
    return build_tree(str(tmp_path / "data"))


@pytest.fixture
def real_tree(tmp_path):
    dst = tmp_path / "real"
    shutil.copytree(REAL_SAMPLES, dst)
    return str(dst / "C-NMC_Leukemia")


def _split_cpu():
    """Two logical CPU devices for the whole session, so MirroredStrategy has replicas.

    Must run before TensorFlow initialises its runtime (first op), hence at import.
    """
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


_split_cpu()


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory):
    """Tiny converted records: 48 training images over 3 folds, 10 validation, 3 test,
    stored at 48 px so training tests run in seconds. Shared by the whole session:
    tests must not modify it."""
    from leukemia_tf.data import convert
    root = tmp_path_factory.mktemp("records")
    tree = build_tree(str(root / "data"), per_class_per_fold=8, n_val=10, n_test=3)
    out = str(root / "rec")
    convert.convert(convert.ConvertConfig(tree, out, image_size=48, num_shards=2,
                                          num_workers=1, progress=False))
    return out


def tiny_config(records_dir, model_dir, **train):
    """A config that trains a small model on `records_dir` in seconds."""
    from leukemia_tf import config as C
    train.setdefault("epochs", 2)
    train.setdefault("batch_size", 8)
    train.setdefault("mixed_precision", "float32")
    train.setdefault("tensorboard", False)
    train.setdefault("verbose", 0)
    return C.Config(data=C.DataConfig(records_dir=records_dir, image_size=48),
                    model=C.ModelConfig(name="resnet_small", image_size=48, width=8),
                    train=C.TrainConfig(model_dir=str(model_dir), **train))
