"""The synthetic C-NMC tree: real layout, names, byte sizes, quirks, determinism, cells."""
import collections
import csv
import dataclasses
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, REAL_SAMPLES, require
from leukemia_tf.data import synthetic

TRAIN_NAME = re.compile(r"^UID_(H?\d+|h\d+)_(\d+)_(\d+)_(all|hem)\.bmp$")
TINY = synthetic.SyntheticConfig(
    seed=3, train_all=(6, 5, 6), train_hem=(4, 3, 4), patients_all=(2, 2, 2),
    patients_hem=(2, 1, 2), num_validation=10, val_patients_all=2, val_patients_hem=1,
    num_test=6, test_patients_all=1, test_patients_hem=1, num_duplicates=2, num_workers=1)


def _hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _area(image):
    return int((image.max(axis=-1) > 0).sum())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth"))
    summary = synthetic.make_tree(out, TINY)
    return out, summary


def _training_files(root):
    files = []
    for fold in range(3):
        for cls in ("all", "hem"):
            folder = os.path.join(root, "training_data", f"fold_{fold}", cls)
            files += [(fold, cls, name) for name in sorted(os.listdir(folder))]
    return files


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_layout_and_names(tree):
    out, summary = tree
    root = os.path.join(out, "C-NMC_Leukemia")
    assert summary["root"] == root
    assert sorted(os.listdir(root)) == ["testing_data", "training_data", "validation_data"]
    assert sorted(os.listdir(os.path.join(root, "training_data"))) == ["fold_0", "fold_1",
                                                                       "fold_2"]
    folds_of = collections.defaultdict(set)
    counts = collections.Counter()
    for fold, cls, name in _training_files(root):
        m = TRAIN_NAME.match(name)
        assert m, name
        assert m.group(4) == cls
        folds_of[m.group(1)].add(fold)
        counts[fold, cls] += 1
    for fold in range(3):
        assert counts[fold, "all"] == TINY.train_all[fold]
        assert counts[fold, "hem"] == TINY.train_hem[fold]
        assert summary["training"][f"fold_{fold}"]["all"] == TINY.train_all[fold]
    assert "h3" in folds_of and "H3" not in folds_of  # the real lower-case healthy subject
    assert all(len(folds) == 1 for folds in folds_of.values()), folds_of
    assert sum(p.isdigit() for p in folds_of) == sum(TINY.patients_all)
    val = os.listdir(os.path.join(root, synthetic.VAL_DIR))
    assert sorted(val, key=lambda n: int(n[:-4])) == [f"{n}.bmp" for n in range(1, 11)]
    test = os.listdir(os.path.join(root, synthetic.TEST_DIR))
    assert sorted(test, key=lambda n: int(n[:-4])) == [f"{n}.bmp" for n in range(1, 7)]
    # Nothing but the tree inside the root; hidden test labels live beside it.
    assert os.path.exists(os.path.join(out, synthetic.TEST_LABELS_CSV))


def test_file_sizes(tree, tmp_path):
    root = tree[1]["root"]
    for fold, cls, name in _training_files(root):
        path = os.path.join(root, "training_data", f"fold_{fold}", cls, name)
        assert os.path.getsize(path) == 608_454
    for name in os.listdir(os.path.join(root, synthetic.VAL_DIR)):
        assert os.path.getsize(os.path.join(root, synthetic.VAL_DIR, name)) == 608_538
    for name in os.listdir(os.path.join(root, synthetic.TEST_DIR)):
        assert os.path.getsize(os.path.join(root, synthetic.TEST_DIR, name)) == 1_080_054
    classic = synthetic.SyntheticConfig(train_all=(0, 0, 0), train_hem=(0, 0, 0),
                                        num_validation=3, num_test=0, v5_validation=False)
    summary = synthetic.make_tree(str(tmp_path), classic)
    folder = os.path.join(summary["root"], synthetic.VAL_DIR)
    assert [os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)] == [608_454] * 3


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (4, 4), (33, 17), (450, 450)])
def test_bmp_round_trip(tmp_path, v5, shape):
    rgb = np.random.default_rng(shape[0]).integers(0, 256, shape + (3,), dtype=np.uint8)
    path = str(tmp_path / "x.bmp")
    synthetic.write_bmp(path, rgb, v5=v5)
    stride = (shape[1] * 3 + 3) // 4 * 4
    assert os.path.getsize(path) == (138 if v5 else 54) + stride * shape[0]
    np.testing.assert_array_equal(synthetic.read_bmp(path), rgb)
    with open(path, "rb") as f:
        data = f.read()
    offset = 138 if v5 else 54
    # Bottom-up and BGR: the file's first pixel is the image's bottom-left one.
    assert tuple(data[offset:offset + 3]) == tuple(rgb[-1, 0, ::-1])


def test_read_bmp_top_down(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    data = bytearray(synthetic.encode_bmp(rgb[::-1].copy()))
    data[22:26] = (-5).to_bytes(4, "little", signed=True)  # negative height: top-down rows
    path = tmp_path / "top_down.bmp"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(synthetic.read_bmp(str(path)), rgb)


def test_matches_real_headers():
    """Header bytes equal the real files' (a training BMP and the V5 validation BMP)."""
    real = os.path.join(REAL_SAMPLES, "C-NMC_Leukemia")
    pairs = [(f"{real}/training_data/fold_0/all/UID_1_8_1_all.bmp", False),
             (f"{real}/validation_data/C-NMC_test_prelim_phase_data/1105.bmp", True)]
    for path, _ in pairs:
        require(path)
    for path, v5 in pairs:
        with open(path, "rb") as f:
            assert synthetic.encode_bmp(synthetic.read_bmp(path), v5=v5) == f.read()


def test_validation_csv(tree):
    out, summary = tree
    root = summary["root"]
    fields, rows = _read_csv(os.path.join(root, synthetic.VAL_CSV))
    assert fields == ["Patient_ID", "new_names", "labels"]
    files = set(os.listdir(os.path.join(root, synthetic.VAL_DIR)))
    assert {r["new_names"] for r in rows} == files and len(rows) == len(files)
    train_patients = {TRAIN_NAME.match(n).group(1).upper() for _, _, n in _training_files(root)}
    for r in rows:
        m = TRAIN_NAME.match(r["Patient_ID"])
        assert m, r
        assert r["labels"] == {"all": "1", "hem": "0"}[m.group(4)]
        assert m.group(1).upper() not in train_patients
    assert [r["new_names"] for r in rows] != sorted(files, key=lambda n: int(n[:-4]))
    n_all = sum(r["labels"] == "1" for r in rows)
    assert n_all == summary["validation"]["all"] == round(10 * TINY.validation_all_fraction)
    fields, test_rows = _read_csv(os.path.join(out, synthetic.TEST_LABELS_CSV))
    assert {r["new_names"] for r in test_rows} == set(
        os.listdir(os.path.join(root, synthetic.TEST_DIR)))


def test_duplicates_cross_folds(tree):
    root = tree[1]["root"]
    pairs = tree[1]["duplicates"]
    assert len(pairs) == tree[1]["num_duplicates"] == TINY.num_duplicates
    for original, copy in pairs:
        assert original.startswith("training_data/fold_0/all/")
        assert copy.startswith("training_data/fold_2/all/")
        a, b = os.path.basename(original).split("_"), os.path.basename(copy).split("_")
        assert a[1] != b[1] and a[-1] == b[-1]  # another patient, the same class
    hashes = _hashes(root)
    groups = collections.defaultdict(list)
    for rel, digest in hashes.items():
        groups[digest].append(rel)
    identical = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert identical == sorted(sorted(p) for p in pairs)  # and no accidental duplicates


def test_deterministic(tree, tmp_path):
    again = synthetic.make_tree(str(tmp_path / "again"), TINY)
    assert _hashes(again["root"]) == _hashes(tree[1]["root"])
    other = synthetic.make_tree(str(tmp_path / "other"), dataclasses.replace(TINY, seed=4))
    first, second = _hashes(tree[1]["root"]), _hashes(other["root"])
    assert first.keys() != second.keys() or first != second
    assert len(set(first.values()) & set(second.values())) == 0


@pytest.mark.slow
def test_workers_do_not_change_bytes(tree, tmp_path):
    parallel = synthetic.make_tree(str(tmp_path), dataclasses.replace(TINY, num_workers=2))
    assert _hashes(parallel["root"]) == _hashes(tree[1]["root"])


def test_all_cells_larger_than_hem():
    areas = {0: [], 1: []}
    for i in range(40):
        stain = synthetic.make_stain(np.random.default_rng([9, i]))
        for label in (0, 1):
            image = synthetic.render_cell(np.random.default_rng([label, i]), label, stain)
            assert image.shape == (450, 450, 3) and image.dtype == np.uint8
            assert image[0].max() == 0 and image[:, -1].max() == 0  # black all around
            areas[label].append(_area(image))
    ratio = np.mean(areas[1]) / np.mean(areas[0])
    assert 1.2 < ratio < 1.6, ratio
    assert 15_000 < np.mean(areas[0]) < 45_000  # the real cells' scale
    assert min(areas[1]) < max(areas[0])        # overlapping: size alone is not enough


def test_cell_has_darker_nucleus():
    """Averaged over cells, the centre (nucleus) is darker than the rim (cytoplasm)."""
    inner, rim = [], []
    for i in range(20):
        stain = synthetic.make_stain(np.random.default_rng(i))
        image = synthetic.render_cell(np.random.default_rng([7, i]), i % 2, stain)
        value = image.astype(float).sum(-1)
        ys, xs = np.nonzero(value > 0)
        d = np.hypot(ys - ys.mean(), xs - xs.mean())
        d /= np.percentile(d, 99)
        inner.append(value[ys[d < 0.4], xs[d < 0.4]].mean())
        rim.append(value[ys[(d > 0.85) & (d < 0.95)], xs[(d > 0.85) & (d < 0.95)]].mean())
    assert np.mean(rim) > 1.1 * np.mean(inner)


def test_test_canvas_same_scale(tree):
    for i in range(10):
        stain = synthetic.make_stain(np.random.default_rng(i))
        small = synthetic.render_cell(np.random.default_rng([5, i]), i % 2, stain, size=450)
        large = synthetic.render_cell(np.random.default_rng([5, i]), i % 2, stain, size=600)
        assert large.shape == (600, 600, 3)
        assert abs(_area(large) - _area(small)) <= 0.01 * _area(small)
    root = tree[1]["root"]
    test = [_area(synthetic.read_bmp(os.path.join(root, synthetic.TEST_DIR, n)))
            for n in os.listdir(os.path.join(root, synthetic.TEST_DIR))]
    train = [_area(synthetic.read_bmp(os.path.join(root, "training_data", f"fold_{f}", c, n)))
             for f, c, n in _training_files(root)]
    assert 0.6 < np.median(test) / np.median(train) < 1.6


def test_tensorflow_decodes_both_headers(tree):
    import tensorflow as tf
    root = tree[1]["root"]
    for folder in ("training_data/fold_0/all", synthetic.VAL_DIR, synthetic.TEST_DIR):
        name = sorted(os.listdir(os.path.join(root, folder)))[0]
        path = os.path.join(root, folder, name)
        decoded = tf.io.decode_bmp(tf.io.read_file(path), channels=3).numpy()
        np.testing.assert_array_equal(decoded, synthetic.read_bmp(path))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="no patients"):
        synthetic.plan_tree(synthetic.SyntheticConfig(patients_hem=(3, 0, 3)))
    (tmp_path / "C-NMC_Leukemia").mkdir()  # a tree that is not ours is never replaced
    with pytest.raises(FileExistsError, match="is not a synthetic tree; not replacing it"):
        synthetic.make_tree(str(tmp_path), TINY)


def test_full_config_counts():
    cfg = synthetic.full_config()
    images, val_rows, test_rows = synthetic.plan_tree(cfg)
    by_dir = collections.Counter(os.path.dirname(im.rel_path) for im in images)
    assert [by_dir[f"training_data/fold_{k}/all"] for k in range(3)] == [2397, 2418, 2457]
    assert [by_dir[f"training_data/fold_{k}/hem"] for k in range(3)] == [1130, 1163, 1096]
    assert len(val_rows) == 1867 and sum(r["labels"] for r in val_rows) == 1219
    assert len(test_rows) == by_dir[synthetic.TEST_DIR] == 2586
    train = {im.patient for im in images if im.rel_path.startswith("training_data")}
    assert sum(p.isdigit() for p in train) == 47 and len(train) == 73


def test_cli(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "leukemia_tf.cli.synthetic",
         f"--output_dir={out}", "--train_per_fold_all=3", "--train_per_fold_hem=2",
         "--patients_per_fold_all=1", "--patients_per_fold_hem=1", "--num_validation=4",
         "--num_test=2", "--num_duplicates=1", "--nov5_validation"],
        capture_output=True, text=True, cwd=REPO, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("training/fold_0: 3 all, 2 hem")
    assert any(line.startswith("validation: 4 images") for line in lines)
    val = out / "C-NMC_Leukemia" / synthetic.VAL_DIR
    assert sorted(p.stat().st_size for p in val.iterdir()) == [608_454] * 4
