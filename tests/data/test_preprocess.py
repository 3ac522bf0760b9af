"""Train = serve: one preprocessing function from any decoded image to model input.

The same cell as a 600x600 file (final-test layout), a 450x450 file (training layout) and
a 257x311 crop must get the same probability through every path a user has: predict
from files, records converted with and without pre-resizing, and the exported
`serving_raw` signature (tf.saved_model.load and saved_model_cli).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf.inference import loading
from leukemia_tf.model import export
from leukemia_tf.evaluation import predict as prediction
from leukemia_tf.config import AugmentConfig, ModelConfig
from leukemia_tf.data import convert, images, preprocess, records
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.model.registry import build_model
from tests.helpers import build_tree, predict_in_plain_tf_keras

SIZE = 48
SPEC = preprocess.Spec(canvas_size=450, image_size=SIZE)


def cell_canvas(seed=0) -> np.ndarray:
    """A 450 canvas whose non-black pixels all lie inside its central 257x311 window."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:450, :450]
    disc = ((yy - 220) / 120.0) ** 2 + ((xx - 225) / 140.0) ** 2 <= 1.0
    texture = rng.integers(40, 255, (450, 450, 3), dtype=np.uint8)
    out = np.zeros((450, 450, 3), np.uint8)
    out[disc] = texture[disc]
    assert not out[:96].any() and not out[353:].any()           # fits in 257 rows
    assert not out[:, :69].any() and not out[:, 380:].any()     # and 311 columns
    return out


def three_layouts(canvas):
    """{name: pixels}: the 600 final-test layout, the canvas itself, a 257x311 crop."""
    big = np.zeros((600, 600, 3), np.uint8)
    big[75:525, 75:525] = canvas
    return {"600x600": big, "450x450": canvas, "257x311": canvas[96:353, 69:380]}


def test_canvas_crops_and_pads_without_rescaling():
    big = np.zeros((600, 600, 3), np.uint8)
    big[290:310, 290:310] = 200  # a 20-pixel "cell" in the centre
    out = preprocess.to_canvas(big, 450).numpy()
    assert out.shape == (450, 450, 3)
    assert (out[:, :, 0] == 200).sum() == 400  # same size: not shrunk
    small = np.full((100, 120, 3), 7, np.uint8)
    out = preprocess.to_canvas(small, 450).numpy()
    assert out.shape == (450, 450, 3) and (out == 7).all(axis=2).sum() == 100 * 120
    assert out[0, 0].tolist() == [0, 0, 0] and out[175, 165].tolist() == [7, 7, 7]


def test_one_function_eager_traced_batched_and_in_tf_data():
    canvas = cell_canvas()
    layouts = three_layouts(canvas)
    eager = {k: preprocess.to_model_input(v, SPEC).numpy() for k, v in layouts.items()}
    for k in layouts:  # the canvas rule makes the three layouts one image
        np.testing.assert_array_equal(eager[k], eager["450x450"])
    assert eager["450x450"].shape == (SIZE, SIZE, 3) and eager["450x450"].dtype == np.uint8
    # the named method: area resize of the canvas, rounded half to even
    area = tf.image.resize(canvas, [SIZE, SIZE], method="area").numpy()
    np.testing.assert_array_equal(eager["450x450"], np.round(area).astype(np.uint8))
    traced = preprocess.function_for(SPEC)(layouts["257x311"]).numpy()
    np.testing.assert_array_equal(traced, eager["450x450"])
    batch = preprocess.to_model_input(np.stack([layouts["600x600"]] * 2), SPEC).numpy()
    np.testing.assert_array_equal(batch[1], eager["450x450"])
    ds = tf.data.Dataset.from_tensors(layouts["257x311"]).map(
        lambda x: preprocess.to_model_input(x, SPEC))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), eager["450x450"])
    with pytest.raises(TypeError, match="uint8"):
        preprocess.to_model_input(canvas.astype(np.float32), SPEC)


def test_check_records_refuses_other_canvas_and_double_resize():
    preprocess.check_records(SPEC, {"canvas_size": 450, "stored_size": 0})
    preprocess.check_records(SPEC, {"canvas_size": 450, "stored_size": SIZE})
    with pytest.raises(ValueError, match="300-px canvas"):
        preprocess.check_records(SPEC, {"canvas_size": 300, "stored_size": 0})
    with pytest.raises(ValueError, match="pre-resized to 224"):
        preprocess.check_records(SPEC, {"canvas_size": 450, "stored_size": 224})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A C-NMC tree whose 3 test files are the three layouts of one cell, both kinds of
    records, and an exported (untrained, but input-sensitive) model."""
    root = tmp_path_factory.mktemp("serve")
    tree = build_tree(str(root / "data"), per_class_per_fold=1, n_val=2, n_test=3)
    test_dir = os.path.join(tree, "testing_data", "C-NMC_test_final_phase_data")
    layouts = three_layouts(cell_canvas())
    files = {}
    for n, (name, pixels) in enumerate(layouts.items(), start=1):
        files[name] = os.path.join(test_dir, f"{n}.bmp")
        images.write_bmp(files[name], pixels)
    recs = {}
    for stored in (0, SIZE):
        recs[stored] = str(root / f"rec{stored}")
        convert.convert(convert.ConvertConfig(tree, recs[stored], image_size=stored,
                                              num_shards=1, num_workers=1, progress=False))
    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(name="seed_cnn", augment=AugmentConfig(enabled=True)),
                        SIZE)
    md = str(root / "model")
    export.export_model(model, md, SPEC)
    return {"tree": tree, "files": files, "records": recs, "model_dir": md,
            "layouts": layouts, "model": model}


def _by_file(table):
    return dict(zip(table["file"], table["probability"]))


def test_model_dir_carries_the_spec(served):
    saved = json.loads(open(os.path.join(served["model_dir"], "preprocessing.json")).read())
    assert saved == {"canvas_size": 450, "image_size": SIZE, "resize_method": "area"}
    for source in (served["model_dir"], os.path.join(served["model_dir"], "export")):
        assert loading.load_model(source, trust_saved_model=True).spec == SPEC


def test_same_probability_through_files_records_and_raw_signature(served):
    reference = float(served["model"](
        preprocess.to_model_input(served["layouts"]["450x450"], SPEC)[None]).numpy()[0, 0])
    other = float(served["model"](   # stretching the 600 file instead: another probability
        tf.cast(tf.round(tf.image.resize(served["layouts"]["600x600"], [SIZE, SIZE],
                                         method="area")), tf.uint8)[None]).numpy()[0, 0])
    assert abs(other - reference) > 1e-4, "the model must be sensitive to preprocessing"

    table, errors = prediction.predict(served["model_dir"], list(served["files"].values()))
    assert errors == [] and list(table.columns) == ["file", "probability", "prediction", "path"]
    np.testing.assert_allclose(table["probability"], [reference] * 3, atol=1e-5)
    for stored, rec in served["records"].items():
        table, errors = prediction.predict(served["model_dir"], [rec], split="test")
        assert errors == [] and len(table) == 3, stored
        np.testing.assert_allclose(table["probability"], [reference] * 3, atol=1e-5,
                                   err_msg=f"records stored at {stored or 'original'} px")
    loaded = tf.saved_model.load(os.path.join(served["model_dir"], "export"))
    raw = loaded.signatures["serving_raw"]
    for name, pixels in served["layouts"].items():
        got = raw(image=tf.constant(pixels[None]))["probability"].numpy()
        np.testing.assert_allclose(got, [reference], atol=1e-5, err_msg=name)


def test_pre_resized_records_hold_the_functions_output(served):
    """The converter's pre-resizing (parent process) is the same function, bit for bit."""
    manifest = manifest_lib.load(served["records"][SIZE])
    assert manifest["settings"]["stored_size"] == SIZE
    assert manifest["settings"]["resize_method"] == "area"
    want = preprocess.to_model_input(served["layouts"]["450x450"], SPEC).numpy()
    seen = 0
    for shard in manifest["shards"]:
        if shard["split"] != "test":
            continue
        path = os.path.join(served["records"][SIZE], shard["path"])
        for raw in tf.data.TFRecordDataset(path):
            ex = records.parse_example(raw)
            np.testing.assert_array_equal(records.decoder("png", SIZE)(ex).numpy(), want)
            seen += 1
    assert seen == 3


def test_serving_default_refuses_a_wrong_size(served):
    loaded = tf.saved_model.load(os.path.join(served["model_dir"], "export"))
    default = loaded.signatures["serving_default"]
    ok = default(image=tf.zeros([2, SIZE, SIZE, 3], tf.uint8))["probability"]
    assert ok.shape == (2,) and ok.dtype == tf.float32
    with pytest.raises(tf.errors.InvalidArgumentError, match="serving_raw"):
        default(image=tf.constant(served["layouts"]["450x450"][None]))


def _saved_model_cli():
    path = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    assert os.path.exists(path), f"saved_model_cli (installed with TensorFlow) not at {path}"
    return path


@pytest.mark.slow
def test_saved_model_cli_raw_signature(served, tmp_path):
    """TF's own client on the raw signature: the three layouts, one subprocess each."""
    reference = prediction.predict(served["model_dir"], [served["files"]["450x450"]])[0]
    reference = float(reference["probability"][0])
    procs = {}
    for name, pixels in served["layouts"].items():
        np.save(tmp_path / f"{name}.npy", pixels[None])
        procs[name] = subprocess.Popen(
            [_saved_model_cli(), "run", "--dir", os.path.join(served["model_dir"], "export"),
             "--tag_set", "serve", "--signature_def", "serving_raw",
             "--inputs", f"image={tmp_path / (name + '.npy')}",
             "--outdir", str(tmp_path / name)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        got = np.load(tmp_path / name / "probability.npy")
        np.testing.assert_allclose(got, [reference], atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_keras_file_loads_in_a_fresh_python_safe_mode(served):
    """model.keras has no augmentation and no custom layer, its default per-image
    normalisation included: tf_keras alone loads it with safe_mode=True in a Python that
    never imports this package, and it predicts what the in-memory model predicts (a
    real cell's canvas, and random pixels with some black canvas)."""
    path = os.path.join(served["model_dir"], "model.keras")
    assert ModelConfig().normalize == "per_image"  # what the served model was built with
    cell = preprocess.to_model_input(served["layouts"]["450x450"], SPEC).numpy()
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    noise[:8] = 0
    x = np.stack([cell, noise])
    want = served["model"](x, training=False).numpy()[:, 0]
    got = predict_in_plain_tf_keras(path, x)
    np.testing.assert_allclose(got, want, atol=1e-6)
