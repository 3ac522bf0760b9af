"""Fine-tuning the ImageNet EfficientNet-Lite: the backbone's learning-rate multiplier and
head-only phase (BackboneAdam), the `pretrained` preset under MirroredStrategy and
mixed_bfloat16, a run with the network disabled, and a kill/resume across the phase
boundary. The session's 48 px records, 1-3 epochs."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf import presets
from leukemia_tf import training
from leukemia_tf.model import efficientnet_lite as lite
from leukemia_tf.model import registry as models
from leukemia_tf.model.torch_checkpoint import read_state_dict
from leukemia_tf.training.objectives import BackboneAdam
from tests.helpers import REPO
from tests.training.test_train import _history, _wait_for

SIZE = 48  # the session records are stored at 48 px
BACKBONE = "efficientnet_lite0_backbone"


@pytest.fixture(scope="module")
def imagenet():
    """The Lite0 checkpoint's tensors (numpy, PyTorch layout)."""
    return read_state_dict(lite.checkpoint_path("lite0"))


def _keras_kernel(key, tensor):
    """A checkpoint conv weight in Keras layout (OIHW -> HWIO; depthwise -> HWC1)."""
    if "_depthwise_conv" in key:
        return tensor.transpose(2, 3, 0, 1)
    return tensor.transpose(2, 3, 1, 0)


def _pretrained(records_dir, model_dir, **train):
    cfg = presets.preset("pretrained")
    train = {"model_dir": str(model_dir), "batch_size": 8, "tensorboard": False,
             "verbose": 0, "mixed_precision": "float32", **train}
    return C.replace(cfg, data={"records_dir": str(records_dir), "image_size": SIZE},
                     train=train)


# ------------------------------------------------------------------ BackboneAdam
def _step_fn(strategy, opt, pairs, scale=1.0):
    @tf.function
    def step():
        def apply():
            n = strategy.num_replicas_in_sync  # replicas' gradients are summed
            opt.apply_gradients([(g * scale / n, v) for g, v in pairs])
        strategy.run(apply)
    return step


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
@pytest.mark.parametrize("loss_scaled", [False, True])
def test_backbone_moves_a_tenth_of_the_head_from_identical_gradients(strategy_name,
                                                                     loss_scaled):
    strategy = training.make_strategy(strategy_name)
    if strategy_name == "mirrored":
        assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        head = tf.Variable(np.linspace(-1, 1, 6, dtype=np.float32))
        backbone = tf.Variable(np.linspace(-1, 1, 6, dtype=np.float32))
        opt = BackboneAdam(1e-2, [backbone], backbone_multiplier=0.1, freeze_steps=0)
        if loss_scaled:
            opt = keras.mixed_precision.LossScaleOptimizer(opt, dynamic=False,
                                                           initial_scale=1.0)
    g = tf.constant([1.0, -2.0, 3.0, 0.5, -0.25, 4.0])
    step = _step_fn(strategy, opt, [(g, head), (g, backbone)])
    for _ in range(2):
        h0, b0 = head.numpy(), backbone.numpy()
        step()
        moved_head, moved_backbone = head.numpy() - h0, backbone.numpy() - b0
        assert np.all(np.abs(moved_head) > 1e-3)
        np.testing.assert_allclose(moved_backbone, 0.1 * moved_head, rtol=1e-4)


def test_scaled_gradients_would_not_scale_adams_step():
    """Why a learning-rate multiplier: Adam's step is invariant to the gradient's scale."""
    a, b = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    opt = keras.optimizers.Adam(1e-2)
    g = tf.constant([0.3, -0.7])
    opt.apply_gradients([(g, a), (0.1 * g, b)])
    np.testing.assert_allclose(1.0 - a.numpy()[0], 1.0 - b.numpy()[0], rtol=1e-3)


def test_head_only_phase_then_fine_tuning_survives_a_checkpoint_restore(tmp_path):
    """Frozen (exactly, weight decay included) for `freeze_steps` updates, then scaled;
    the phase comes from the restored `iterations`, so a restore in the middle of the
    head-only phase still unfreezes at the same update."""
    def make():
        head, backbone = tf.Variable([0.5, -0.5]), tf.Variable([0.5, -0.5])
        opt = BackboneAdam(1e-2, [backbone], 0.1, freeze_steps=3, weight_decay=0.1)
        return head, backbone, opt, tf.train.Checkpoint(head=head, backbone=backbone,
                                                        optimizer=opt)
    g = tf.constant([1.0, -1.0])
    head, backbone, opt, ckpt = make()
    start = backbone.numpy()
    for _ in range(2):
        opt.apply_gradients([(g, head), (g, backbone)])
    np.testing.assert_array_equal(backbone.numpy(), start)
    path = ckpt.save(str(tmp_path / "ckpt"))

    head, backbone, opt, ckpt = make()  # a new process: fresh objects, then the backup
    opt.build([head, backbone])
    ckpt.restore(path).assert_consumed()
    assert int(opt.iterations.numpy()) == 2
    opt.apply_gradients([(g, head), (g, backbone)])   # update 3: still head only
    np.testing.assert_array_equal(backbone.numpy(), start)
    h0, b0 = head.numpy(), backbone.numpy()
    opt.apply_gradients([(g, head), (g, backbone)])   # update 4: fine-tuning
    assert np.all(backbone.numpy() != b0)
    np.testing.assert_allclose(backbone.numpy() - b0, 0.1 * (head.numpy() - h0), rtol=0.05)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_keras_fit_freezes_then_scales_the_nested_backbone(jit_compile):
    """Through model.fit (and an XLA-compiled train step): the nested model is the
    backbone; update 1 leaves it exactly as it was, update 2 moves it."""
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="features")(inner_in))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="logit")(inner(inputs)))
    backbone = models.backbone_variables(model)
    assert len(backbone) == 2
    model.compile(optimizer=BackboneAdam(1e-2, backbone, 0.1, freeze_steps=1),
                  loss="mse", jit_compile=jit_compile)
    x, y = np.ones((4, 4), np.float32), np.zeros((4, 1), np.float32)
    before = [v.numpy() for v in backbone]
    head = model.get_layer("logit").kernel.numpy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for v, b in zip(backbone, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert not np.array_equal(model.get_layer("logit").kernel.numpy(), head)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not np.array_equal(backbone[0].numpy(), before[0])


def test_multiplier_on_a_model_without_backbone_is_refused(records_dir, tmp_path):
    cfg = C.replace(_pretrained(records_dir, tmp_path / "m"),
                    model={"name": "resnet_small", "weights": "none",
                           "freeze_backbone_bn": False})
    with pytest.raises(ValueError, match="resnet_small has none"):
        training.run(cfg)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ the preset, end to end
def test_preset_is_the_documented_recipe():
    cfg = presets.preset("pretrained")
    assert (cfg.model.name, cfg.model.weights, cfg.model.normalize) == (
        "efficientnet_lite0", "imagenet", "none")
    assert cfg.model.freeze_backbone_bn and cfg.data.class_balance == "weights"
    assert cfg.train.freeze_backbone_epochs >= 1 and cfg.train.backbone_lr_multiplier == 0.1
    assert cfg.train.schedule == "cosine" and cfg.train.warmup_epochs > 0
    assert "--preset=pretrained" in presets.pretrained_preset.__doc__


def test_preset_from_the_command_line_keeps_its_values_unless_overridden():
    from absl import flags
    from leukemia_tf.cli import train as train_cli

    def parse(*args):
        fv = flags.FlagValues()
        train_cli.define_flags(fv)
        fv(["leukemia-train", "--records_dir=R", "--model_dir=M", *args])
        return train_cli.config_from_flags(fv)
    assert parse("--preset=pretrained") == C.replace(
        presets.preset("pretrained"), data={"records_dir": "R"}, train={"model_dir": "M"})
    cfg = parse("--preset=pretrained", "--image_size=128", "--model=efficientnet_lite2",
                "--backbone_lr_multiplier=0.3")
    assert (cfg.model.name, cfg.data.image_size) == ("efficientnet_lite2", 128)
    assert cfg.train.backbone_lr_multiplier == 0.3 and cfg.train.freeze_backbone_epochs == 2
    assert cfg.model.freeze_backbone_bn and cfg.model.weights == "imagenet"
    assert C.from_dict(cfg.to_dict()) == cfg


@pytest.mark.slow
def test_preset_head_only_epoch_under_mirrored_bfloat16(records_dir, tmp_path, imagenet):
    """One head-only epoch on two replicas in mixed_bfloat16: the exported backbone is
    the checkpoint exactly (convolutions and the frozen BatchNorm), the head trained."""
    cfg = _pretrained(records_dir, tmp_path / "m", epochs=1, steps_per_epoch=2,
                      strategy="mirrored", mixed_precision="mixed_bfloat16")
    summary = training.run(cfg)
    assert summary["replicas"] == 2 and summary["precision"] == "mixed_bfloat16"
    assert np.isfinite(summary["history"]["loss"][0])
    model = keras.models.load_model(str(tmp_path / "m" / "model.keras"), safe_mode=True)
    backbone = model.get_layer(BACKBONE)
    np.testing.assert_array_equal(backbone.get_layer("lite_conv_stem").kernel.numpy(),
                                  _keras_kernel("_conv_stem.weight",
                                                imagenet["_conv_stem.weight"]))
    np.testing.assert_array_equal(backbone.get_layer("lite_bn1").moving_mean.numpy(),
                                  imagenet["_bn1.running_mean"])
    fresh = models.build_model(cfg.model, cfg.data.image_size)
    assert not np.array_equal(model.get_layer("logit").kernel.numpy(),
                              fresh.get_layer("logit").kernel.numpy())


def _offline(cmd):
    """`cmd` with the network disabled: a network namespace with no route (unshare -n)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"unshare -n is not available here: {probe.stderr!r}")
    return ["unshare", "-n", *cmd]


@pytest.mark.slow
def test_lite0_imagenet_trains_offline_and_lr0_exports_the_checkpoint(records_dir, tmp_path,
                                                                      imagenet):
    env = dict(os.environ, PYTHONPATH=REPO)
    no_net = subprocess.run(_offline([sys.executable, "-c",
                                      "import socket; socket.create_connection("
                                      "('pypi.org', 443), timeout=5)"]),
                            capture_output=True, text=True, env=env, timeout=60)
    assert no_net.returncode != 0  # the namespace really has no network
    md = tmp_path / "m"
    cmd = [sys.executable, "-m", "leukemia_tf.cli.train", f"--records_dir={records_dir}",
           f"--model_dir={md}", "--model=efficientnet_lite0", "--weights=imagenet",
           f"--image_size={SIZE}", "--epochs=1", "--batch_size=8", "--learning_rate=0",
           "--mixed_precision=float32", "--notensorboard", "--verbose=0"]
    proc = subprocess.run(_offline(cmd), capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = keras.models.load_model(str(md / "model.keras"), safe_mode=True)
    backbone = model.get_layer(BACKBONE)
    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    layers = {layer.name: layer for layer in backbone.layers if isinstance(layer, convs)}
    checked = 0
    for key, tensor in imagenet.items():
        layer = layers.get(lite.layer_name(key.rsplit(".", 1)[0]))
        if layer is not None:
            np.testing.assert_array_equal(layer.weights[0].numpy(), _keras_kernel(key, tensor),
                                          err_msg=key)
            checked += 1
    assert checked == len(layers) == 49  # Lite0: stem, 15 expand, 16 depthwise, 16 project, head


ITERATIONS = "model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def _observe_backup(md, stem, seen):
    """Record (optimizer updates, backbone stem still ImageNet?) of the latest backup."""
    prefix = tf.train.latest_checkpoint(str(md / "backup" / "chief"))
    if not prefix:
        return
    try:
        reader = tf.train.load_checkpoint(prefix)
        stems = [reader.get_tensor(k) for k, shape in reader.get_variable_to_shape_map().items()
                 if tuple(shape) == stem.shape and not k.startswith("model/optimizer")]
        seen[int(reader.get_tensor(ITERATIONS))] = any(np.array_equal(v, stem) for v in stems)
    except (tf.errors.OpError, ValueError):  # replaced while read: the next poll sees it
        pass


def _run_until(cmd, env, predicate, what):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for(predicate, 400, what, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the trainer ended before it was killed"


@pytest.mark.slow
def test_preset_resumes_after_kills_on_both_sides_of_the_head_only_phase(
        records_dir, tmp_path, imagenet):
    """2 head-only epochs of 6 updates, then fine-tuning. Killed in epoch 2, resumed,
    killed again in epoch 3, resumed to the end: every backup up to update 12 holds the
    ImageNet backbone, every later one a fine-tuned backbone, and the history is whole."""
    md = tmp_path / "m"
    cmd = [sys.executable, "-m", "leukemia_tf.cli.train", "--preset=pretrained",
           f"--records_dir={records_dir}", f"--model_dir={md}", f"--image_size={SIZE}",
           "--epochs=3", "--freeze_backbone_epochs=2", "--steps_per_epoch=6",
           "--batch_size=8", "--backup_every_steps=2", "--mixed_precision=float32",
           "--notensorboard", "--verbose=0"]
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    stem = _keras_kernel("_conv_stem.weight", imagenet["_conv_stem.weight"])
    seen = {}

    def after(first, last):
        def check():
            _observe_backup(md, stem, seen)
            return any(first < step <= last for step in seen)
        return check
    _run_until(cmd, env, after(6, 11), "a step backup in epoch 2")
    assert len(_history(md)) == 1
    _run_until(cmd, env, after(12, 17), "a step backup in epoch 3")
    assert len(_history(md)) == 2
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [int(r["epoch"]) for r in _history(md)] == [1, 2, 3]
    assert json.load(open(md / "summary.json"))["resumed_from_step"] > 12
    assert any(step <= 12 for step in seen) and any(step > 12 for step in seen), seen
    for step, still_imagenet in seen.items():
        assert still_imagenet == (step <= 12), seen
