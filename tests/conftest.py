"""Shared test fixtures: tiny C-NMC trees built from the eight real sample images."""
import os
import shutil

import numpy as np
import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.data import images

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "cnmc")
if not os.path.isdir(SHARED):  # CI lays shared/ beside the clone
    SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                          "shared", "cnmc"))
REAL_SAMPLES = os.path.join(SHARED, "real_samples")
LISTING = os.path.join(SHARED, "kaggle_listing.tsv")


def real_sample_paths():
    out = []
    for d, _, files in os.walk(REAL_SAMPLES):
        out += [os.path.join(d, f) for f in files if f.endswith(".bmp")]
    return sorted(out)


def build_tree(root, per_class_per_fold=2, n_val=4, n_test=3, seed=0):
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
            for i in range(per_class_per_fold):
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
