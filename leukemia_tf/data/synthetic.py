"""Synthetic C-NMC-shaped trees: the real layout, names, BMP headers and quirks; fake cells.

The real data (~9 GB) cannot be fetched everywhere, so tests and the demo write a tree every
reader of the real one accepts unchanged (layout in `plan_tree`), with the real quirks: the
healthy subject `h3` in lower case, byte-identical duplicates across folds under another
patient's id, the 124-byte V5 header of the validation BMPs, a 600x600 canvas (same cell
scale) for the final test, label CSV rows in no particular order.

Cells differ by class as the real ones do on average (ALL ~37% larger area, less regular
outline, more nucleus) with overlapping distributions; each patient has its own stain, so
patient leakage inflates scores here as it does on the real data. Each image draws from its
own generator seeded from (seed, split, index): trees are byte-identical across runs and
worker counts. Hidden test labels go beside the tree, where no reader of the real one looks.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io as _stdio
import multiprocessing
import os
import posixpath
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

# The BMP codec lives in images.py; encode_bmp and read_bmp stay importable from here.
from leukemia_tf import io
from leukemia_tf.data.images import encode_bmp, read_bmp, write_bmp  # noqa: F401

ROOT_NAME = "C-NMC_Leukemia"
VAL_DIR = "validation_data/C-NMC_test_prelim_phase_data"
VAL_CSV = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"
TEST_DIR = "testing_data/C-NMC_test_final_phase_data"
TEST_LABELS_CSV = "synthetic_test_labels.csv"   # beside the tree, never inside it
SUMMARY_JSON = "synthetic_summary.json"
CANVAS = 450          # training and validation images
TEST_CANVAS = 600     # final-test images: same cell scale, more black around it
CLASSES = {1: "all", 0: "hem"}

# Real counts (the Kaggle listing, tests/fixtures/kaggle_listing.tsv; see BUILD_NOTES.md).
REAL_TRAIN_ALL = (2397, 2418, 2457)
REAL_TRAIN_HEM = (1130, 1163, 1096)
REAL_VAL_ALL, REAL_VAL_HEM = 1219, 648
REAL_TEST = 2586


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What to write. Defaults: a demo tree that trains on 2 CPU cores in minutes.

    `full_config()` mirrors the real counts (~15,000 images, ~9 GB).
    """
    seed: int = 0
    train_all: Tuple[int, int, int] = (80, 80, 80)     # ALL images per fold
    train_hem: Tuple[int, int, int] = (40, 40, 40)     # hem images per fold
    patients_all: Tuple[int, int, int] = (4, 4, 4)     # ALL subjects per fold (ids 1, 2, ...)
    patients_hem: Tuple[int, int, int] = (3, 3, 3)     # healthy subjects per fold (H1, ...)
    num_validation: int = 90
    validation_all_fraction: float = REAL_VAL_ALL / (REAL_VAL_ALL + REAL_VAL_HEM)
    val_patients_all: int = 3       # validation subjects: ids 50+, H50+ (unseen in training)
    val_patients_hem: int = 2
    num_test: int = 60
    test_all_fraction: float = REAL_VAL_ALL / (REAL_VAL_ALL + REAL_VAL_HEM)  # real one unknown
    test_patients_all: int = 3      # test subjects: ids 100+, H100+
    test_patients_hem: int = 2
    num_duplicates: int = 4         # fold_0 ALL images re-appearing byte-identical in fold_2
    v5_validation: bool = True      # validation BMPs with the real 124-byte V5 header
    write_test_labels: bool = True  # <output_dir>/synthetic_test_labels.csv (hidden labels)
    num_workers: int = 0            # rendering processes, 0 = auto; output does not depend on it


def full_config(**changes) -> SyntheticConfig:
    """The real counts: 73 training subjects (47 ALL, 26 healthy), 1867 validation, 2586 test.

    The subject counts of the validation and test sets are not published; these are guesses.
    Run: leukemia-synthetic --full --output_dir=D
    """
    cfg = SyntheticConfig(
        train_all=REAL_TRAIN_ALL, train_hem=REAL_TRAIN_HEM,
        patients_all=(16, 16, 15), patients_hem=(9, 9, 8),
        num_validation=REAL_VAL_ALL + REAL_VAL_HEM, val_patients_all=9, val_patients_hem=6,
        num_test=REAL_TEST, test_patients_all=10, test_patients_hem=7,
        num_duplicates=71)  # as patient 20 (fold_0) -> 21 (fold_2)
    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------------ cells

@dataclasses.dataclass(frozen=True)
class Stain:
    """One subject's staining and cell size: what makes a patient recognisable."""
    tint: Tuple[float, float, float]   # multiplies R, G, B
    brightness: float
    size: float                        # multiplies the cell radius


def make_stain(rng: np.random.Generator) -> Stain:
    tint = tuple(float(t) for t in np.exp(rng.normal(0.0, 0.05, 3)))
    return Stain(tint, float(np.exp(rng.normal(0.0, 0.06))), float(np.exp(rng.normal(0.0, 0.05))))


_HEM_RADIUS = 95.0               # mean area ~29k px, as the real hem cells
_ALL_RADIUS_RATIO = 1.37 ** 0.5  # ALL ~37% larger area
_CYTOPLASM = np.array([96.0, 44.0, 104.0], np.float32)   # RGB, lighter
_NUCLEUS = np.array([72.0, 29.0, 86.0], np.float32)       # RGB, darker
# Class cues, by label: (harmonic amplitude, extra elongation) of the outline, and the
# nucleus:cell radius ratio. Overlapping on purpose, so that no single cue decides.
_IRREGULARITY = {1: (0.10, 0.14), 0: (0.035, 0.08)}
_NC_RATIO = {1: 0.78, 0: 0.70}
_ANGLES = 1024                   # outline lookup-table resolution
_EDGE_PX = 2.0                   # soft edge width, as the segmented real cells have
_TEXTURE = 1024                  # side of the shared noise textures (> any cell box)


@functools.lru_cache(maxsize=None)
def _texture(scale_px: int) -> np.ndarray:
    """A fixed smooth unit-variance noise field with blobs of ~`scale_px` pixels.

    Cells crop it at random offsets: ~100x cheaper than drawing fresh noise per image
    (small matrix products per image also made multi-threaded BLAS spin on busy cores).
    Nodes are spread by Gaussian weights: a product of 1-D Gaussians is an isotropic 2-D
    one, so there are no grid-aligned streaks (bilinear upsampling draws crosses).
    """
    g = _TEXTURE // scale_px + 2
    pos = (np.arange(_TEXTURE) + 0.5) * ((g - 1) / _TEXTURE)
    m = np.exp(-0.5 * ((pos[:, None] - np.arange(g)[None, :]) / 0.8) ** 2)
    m /= np.sqrt((m * m).sum(1, keepdims=True))  # unit variance
    nodes = np.random.default_rng(scale_px).standard_normal((g, g))
    tex = np.einsum("ik,jk->ij", np.einsum("ig,gk->ik", m, nodes), m).astype(np.float32)
    tex.flags.writeable = False
    return tex


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale_px: int) -> np.ndarray:
    y, x = rng.integers(0, _TEXTURE - h + 1), rng.integers(0, _TEXTURE - w + 1)
    return _texture(scale_px)[y:y + h, x:x + w]


def _outline(rng: np.random.Generator, amplitude: float, elongation: float) -> np.ndarray:
    """Radius multiplier on `_ANGLES` angles: 1 + low-frequency harmonics k = 2..6."""
    k = np.arange(2, 7)[:, None]
    amp = rng.uniform(0.3, 1.0, (5, 1)) * amplitude / (k - 1) ** 0.7
    amp[0] += rng.uniform(0.0, elongation)
    phase = rng.uniform(0.0, 2 * np.pi, (5, 1))
    theta = np.linspace(0.0, 2 * np.pi, _ANGLES, endpoint=False)[None, :]
    return 1.0 + (amp * np.cos(k * theta + phase)).sum(0)


def render_cell(rng: np.random.Generator, label: int, stain: Stain,
                size: int = CANVAS) -> np.ndarray:
    """One stained cell on black, uint8 RGB [size, size, 3].

    The cell's scale does not depend on `size`: a 600 canvas holds the same cells as a
    450 one with more black around them, as the real final-test images do.

    Args:
      rng: the image's own generator (everything random about the cell comes from it).
      label: 1 = ALL (larger, less regular, more nucleus), 0 = hem.
      stain: the patient's `Stain`.
      size: canvas side in pixels.
    """
    is_all = label == 1
    r0 = _HEM_RADIUS * (_ALL_RADIUS_RATIO if is_all else 1.0) * stain.size
    r0 *= np.exp(rng.normal(0.0, 0.11))
    radius = r0 * _outline(rng, *_IRREGULARITY[int(is_all)])
    limit = 0.46 * CANVAS
    if radius.max() > limit:  # keep the largest cells inside a 450 canvas
        radius *= limit / radius.max()
    # Nucleus boundary as a fraction of the cell radius, off-centre by `shift`.
    nc_ratio = rng.normal(_NC_RATIO[int(is_all)], 0.05)
    shift = rng.uniform(0.0, 0.15)
    theta = np.linspace(0.0, 2 * np.pi, _ANGLES, endpoint=False)
    nucleus = radius * np.clip(nc_ratio * (1.0 + shift * np.cos(theta - rng.uniform(0, 2 * np.pi)))
                               * _outline(rng, 0.04, 0.0), 0.2, 0.97)
    radius, nucleus = radius.astype(np.float32), nucleus.astype(np.float32)

    rmax = float(radius.max()) + _EDGE_PX + 1
    cy, cx = np.clip(size / 2 + rng.normal(0.0, 15.0, 2), rmax, size - rmax)
    y0, x0 = int(cy - rmax), int(cx - rmax)
    y1, x1 = min(size, int(cy + rmax) + 2), min(size, int(cx + rmax) + 2)
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    r = np.sqrt(dy * dy + dx * dx)
    turns = np.arctan2(dy, dx) * np.float32(_ANGLES / (2 * np.pi)) + np.float32(_ANGLES)
    idx = turns.astype(np.int32) & (_ANGLES - 1)
    alpha = np.clip((radius[idx] - r) * np.float32(1 / _EDGE_PX) + 0.5, 0.0, 1.0)
    in_nucleus = np.clip((nucleus[idx] - r) * np.float32(0.25) + 0.5, 0.0, 1.0)

    h, w = r.shape
    shade = 1.0 + 0.10 * _smooth_noise(rng, h, w, 28) + 0.05 * _smooth_noise(rng, h, w, 9)
    shade += 0.5 * np.clip(_smooth_noise(rng, h, w, 22) - 0.5, 0.0, 1.2) ** 2  # pale blotches
    shade += 0.025 * rng.standard_normal((h, w), np.float32)
    scale = np.float32(stain.brightness) * np.asarray(stain.tint, np.float32)
    cyto, nuc = _CYTOPLASM * scale, _NUCLEUS * scale
    colour = cyto + (nuc - cyto) * in_nucleus[:, :, None]
    pixels = colour * (shade * alpha)[:, :, None] + np.float32(0.5)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[y0:y1, x0:x1] = np.clip(pixels, 0.0, 255.0).astype(np.uint8)
    return canvas


# ----------------------------------------------------------------------------- layout

class _Image(NamedTuple):
    rel_path: str            # relative to the C-NMC_Leukemia root
    label: int
    patient: str             # as written in the file name ("h3" stays lower case)
    stain: Stain
    key: Tuple[int, ...]     # seeds this image's generator
    size: int
    v5: bool
    copy_of: Optional[str]   # rel_path of the byte-identical original, for duplicates


def _hem_name(n: int) -> str:
    return "h3" if n == 3 else f"H{n}"  # the real data writes healthy subject 3 as h3


def _stain_for(seed: int, patient: str) -> Stain:
    code = int(patient[1:]) + 100_000 if patient[0] in "Hh" else int(patient)
    return make_stain(np.random.default_rng([seed, 1, code]))


def _per_patient(rng: np.random.Generator, total: int, patients: int) -> List[int]:
    """Splits `total` images unevenly over `patients` (each at least one)."""
    if total > 0 and patients <= 0:
        raise ValueError(f"{total} images but no patients to give them to")
    patients = min(patients, total)
    if patients <= 0:
        return []
    weights = rng.uniform(0.5, 1.5, patients)
    raw = (total - patients) * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    counts[np.argsort(counts - raw)[:total - patients - counts.sum()]] += 1
    return [int(c) + 1 for c in counts]


def _cell_ids(rng: np.random.Generator, n: int) -> List[Tuple[int, int]]:
    """(image, cell) numbers: each microscope image holds 1-8 segmented cells."""
    ids: List[Tuple[int, int]] = []
    image = 0
    while len(ids) < n:
        image += 1
        ids += [(image, cell) for cell in range(1, int(rng.integers(1, 9)) + 1)]
    return ids[:n]


def _numbered_split(cfg, rng, split_dir, split_code, total, all_fraction, patients, size, v5):
    """Images of a renamed split (<n>.bmp, n = 1..total, shuffled over patients) and its
    label rows in the real CSV's columns, the rows in no particular order."""
    n_all = int(round(total * all_fraction))
    named = []
    for label, count, names in ((1, n_all, patients[0]), (0, total - n_all, patients[1])):
        for patient, n in zip(names, _per_patient(rng, count, len(names))):
            stain = _stain_for(cfg.seed, patient)
            for image, cell in _cell_ids(rng, n):
                key = (cfg.seed, split_code, len(named))
                name = f"UID_{patient}_{image}_{cell}_{CLASSES[label]}.bmp"
                named.append((name, _Image("", label, patient, stain, key, size, v5, None)))
    images, rows = [], []
    for number, i in enumerate(rng.permutation(len(named)), start=1):
        name, im = named[i]
        images.append(im._replace(rel_path=f"{split_dir}/{number}.bmp"))
        rows.append({"Patient_ID": name, "new_names": f"{number}.bmp", "labels": im.label})
    return images, [rows[i] for i in rng.permutation(len(rows))]


def plan_tree(cfg: SyntheticConfig) -> Tuple[List[_Image], List[dict], List[dict]]:
    """Every file of the tree, without rendering: (images, validation rows, test rows)."""
    for name in ("train_all", "train_hem", "patients_all", "patients_hem"):
        if len(getattr(cfg, name)) != 3:
            raise ValueError(f"{name} needs one value per fold (3), got {getattr(cfg, name)}")
    rng = np.random.default_rng([cfg.seed, 0])
    images: List[_Image] = []
    next_all, next_hem = 1, 1
    for fold in range(3):
        for label, counts, n_patients in ((1, cfg.train_all, cfg.patients_all),
                                          (0, cfg.train_hem, cfg.patients_hem)):
            for n in _per_patient(rng, counts[fold], n_patients[fold]):
                if label:
                    patient, next_all = str(next_all), next_all + 1
                else:
                    patient, next_hem = _hem_name(next_hem), next_hem + 1
                stain, cls = _stain_for(cfg.seed, patient), CLASSES[label]
                for image, cell in _cell_ids(rng, n):
                    rel = f"training_data/fold_{fold}/{cls}/UID_{patient}_{image}_{cell}_{cls}.bmp"
                    key = (cfg.seed, 10 + 2 * fold + label, len(images))
                    images.append(_Image(rel, label, patient, stain, key, CANVAS, False, None))
    images = _add_duplicates(images, cfg.num_duplicates)

    def patients(start_all, start_hem, n_all, n_hem):
        return ([str(start_all + i) for i in range(n_all)],
                [f"H{start_hem + i}" for i in range(n_hem)])

    # Validation and test subjects are never training subjects: ids from 50 and 100 up.
    val_all, val_hem = max(50, next_all), max(50, next_hem)
    val_images, val_rows = _numbered_split(
        cfg, rng, VAL_DIR, 20, cfg.num_validation, cfg.validation_all_fraction,
        patients(val_all, val_hem, cfg.val_patients_all, cfg.val_patients_hem),
        CANVAS, cfg.v5_validation)
    test_images, test_rows = _numbered_split(
        cfg, rng, TEST_DIR, 30, cfg.num_test, cfg.test_all_fraction,
        patients(max(100, val_all + cfg.val_patients_all),
                 max(100, val_hem + cfg.val_patients_hem),
                 cfg.test_patients_all, cfg.test_patients_hem),
        TEST_CANVAS, False)
    images += val_images + test_images
    return images, val_rows, test_rows


def _add_duplicates(images: List[_Image], n: int) -> List[_Image]:
    """Turns the first `n` images of the last fold_2 ALL subject into byte copies of the
    first fold_0 ALL subject's images (the real data has patient 20 -> 21 like this)."""
    def patient_images(fold, pick):
        rows = [im for im in images if im.rel_path.startswith(f"training_data/fold_{fold}/all/")]
        if not rows:
            return []
        patient = rows[pick].patient
        return [im for im in rows if im.patient == patient]
    source, target = patient_images(0, 0), patient_images(2, -1)
    n = min(n, len(source), len(target))
    copies = {t.rel_path: s.rel_path for s, t in zip(source[:n], target[:n])}
    return [im._replace(copy_of=copies.get(im.rel_path)) for im in images]


# ---------------------------------------------------------------------------- writing

def _render_and_write(job: Tuple[str, _Image]) -> None:
    root, im = job
    rng = np.random.default_rng(list(im.key))
    write_bmp(io.join(root, im.rel_path), render_cell(rng, im.label, im.stain, im.size),
              v5=im.v5)


def _write_csv(path: str, rows: List[dict]) -> None:
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, ["Patient_ID", "new_names", "labels"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buf.getvalue())


def make_tree(output_dir: str, cfg: SyntheticConfig = SyntheticConfig()) -> dict:
    """Writes `<output_dir>/C-NMC_Leukemia/` and returns a summary.

    An existing tree is replaced only if it is synthetic (a summary JSON beside it), so a
    real dataset is never deleted by pointing here.

    Returns:
      {"root", "config", "training": {"fold_k": counts}, "validation": counts,
       "test": counts, "duplicates": [[original, copy], ...] (paths relative to root),
       "num_duplicates"}; counts = {"all", "hem", "patients_all", "patients_hem"} (test
      counts are the hidden labels). Also written to `<output_dir>/synthetic_summary.json`.
    """
    images, val_rows, test_rows = plan_tree(cfg)
    root = io.join(output_dir, ROOT_NAME)
    summary_path = io.join(output_dir, SUMMARY_JSON)
    if io.exists(root):
        if not io.exists(summary_path):
            raise FileExistsError(f"{root} exists and is not a synthetic tree; not replacing it")
        io.rmtree(root)
    io.makedirs(output_dir)
    summary = {"root": root, "config": dataclasses.asdict(cfg)}
    io.write_json(summary_path, summary)  # marks the tree as synthetic before it exists
    for d in sorted({posixpath.dirname(im.rel_path) for im in images} | {VAL_DIR}):
        io.makedirs(io.join(root, d))
    jobs = [(root, im) for im in images if im.copy_of is None]
    workers = cfg.num_workers or ((os.cpu_count() or 1) if len(jobs) >= 2000 else 1)
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: callers (tests, notebooks) may have TensorFlow threads running.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_and_write, jobs, chunksize=8):
                pass
    else:
        for job in jobs:
            _render_and_write(job)
    duplicates = [[im.copy_of, im.rel_path] for im in images if im.copy_of]
    for original, copy in duplicates:
        io.copy(io.join(root, original), io.join(root, copy), overwrite=True)
    _write_csv(io.join(root, VAL_CSV), val_rows)
    if cfg.write_test_labels:
        _write_csv(io.join(output_dir, TEST_LABELS_CSV), test_rows)

    def counts(prefix):
        rows = [im for im in images if im.rel_path.startswith(prefix)]
        ids = {c: sorted({im.patient for im in rows if CLASSES[im.label] == c}, key=_id_order)
               for c in ("all", "hem")}
        return {"all": sum(im.label for im in rows),
                "hem": sum(1 - im.label for im in rows),
                "patients_all": ids["all"], "patients_hem": ids["hem"]}

    summary.update(
        training={f"fold_{k}": counts(f"training_data/fold_{k}/") for k in range(3)},
        validation=dict(counts(VAL_DIR + "/"), v5_header=cfg.v5_validation),
        test=counts(TEST_DIR + "/"), duplicates=duplicates, num_duplicates=len(duplicates))
    io.write_json(summary_path, summary)
    return summary


def _id_order(patient: str) -> Tuple[int, int]:
    return (1, int(patient[1:])) if patient[0] in "Hh" else (0, int(patient))
