"""What a run optimises: class weights, the loss, the optimizer and schedule, WeightedF1."""
import math

import numpy as np
import pytest
import tf_keras as keras

from leukemia_tf import config as C
from leukemia_tf.training import objectives


def _cfg(**train):
    return C.Config(train=C.TrainConfig(**train))


def test_class_weights_balance_the_classes():
    w = objectives.class_weights({1: 2150, 0: 1000})
    assert w[0] == pytest.approx(3150 / 2000) and w[1] == pytest.approx(3150 / 4300)
    assert 2150 * w[1] == pytest.approx(1000 * w[0])     # each class weighs the same in total
    assert objectives.class_weights({1: 5, 0: 5}) == {1: 1.0, 0: 1.0}
    assert objectives.class_weights({1: 4, 0: 0}) == {1: 0.5, 0: 0.0}   # no hem: no weight


def test_bce_loss_with_label_smoothing():
    y, p = np.array([[1.0], [0.0]]), np.array([[0.8], [0.3]])
    plain = float(objectives.make_loss(_cfg(loss="bce"))(y, p))
    assert plain == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, rel=1e-5)
    smooth = float(objectives.make_loss(_cfg(loss="bce", label_smoothing=0.2))(y, p))
    ys = y * 0.8 + 0.1
    want = -np.mean(ys * np.log(p) + (1 - ys) * np.log(1 - p))
    assert smooth == pytest.approx(want, rel=1e-5)


def test_focal_loss_weighs_down_easy_examples():
    y = np.array([[1.0], [1.0]])
    bce = objectives.make_loss(_cfg(loss="bce"))
    focal = objectives.make_loss(_cfg(loss="focal", focal_gamma=2.0))
    easy, hard = np.array([[0.95], [0.95]]), np.array([[0.3], [0.3]])
    assert float(focal(y, easy)) == pytest.approx(float(bce(y, easy)) * 0.05 ** 2, rel=1e-4)
    assert float(focal(y, hard)) / float(bce(y, hard)) > \
        float(focal(y, easy)) / float(bce(y, easy))
    with pytest.raises(ValueError, match="unknown loss"):
        objectives.make_loss(_cfg(loss="hinge"))


def test_optimizer_schedule_warms_up_then_decays():
    cfg = _cfg(learning_rate=0.1, epochs=4, warmup_epochs=1, schedule="cosine")
    opt = objectives.make_optimizer(cfg, steps_per_epoch=10, precision="float32")
    lr = opt._learning_rate          # the schedule (`learning_rate` is its current value)
    assert isinstance(lr, keras.optimizers.schedules.CosineDecay)
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(10)) == pytest.approx(0.1)           # warm-up ends after one epoch
    assert float(lr(40)) == pytest.approx(0.001)         # alpha 0.01 of the peak at the end
    assert 0.001 < float(lr(25)) < 0.1
    constant = objectives.make_optimizer(_cfg(schedule="constant", learning_rate=0.02), 10,
                                         "float32")
    assert float(constant.learning_rate) == pytest.approx(0.02)


def test_optimizer_kinds_and_loss_scaling():
    adamw = objectives.make_optimizer(_cfg(optimizer="adamw", weight_decay=0.05), 5, "float32")
    assert isinstance(adamw, keras.optimizers.AdamW)
    scaled = objectives.make_optimizer(_cfg(), 5, "mixed_float16")
    assert isinstance(scaled, keras.mixed_precision.LossScaleOptimizer)
    with pytest.raises(ValueError, match="unknown optimizer"):
        objectives.make_optimizer(_cfg(optimizer="sgd"), 5, "float32")
    with pytest.raises(ValueError, match="unknown schedule"):
        objectives.make_optimizer(_cfg(schedule="step"), 5, "float32")


def test_weighted_f1_metric_matches_sklearn():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    m = objectives.WeightedF1()
    m.update_state(y[:120, None].astype("float32"), p[:120, None])
    m.update_state(y[120:, None].astype("float32"), p[120:, None])
    assert m.result().numpy() == pytest.approx(
        f1_score(y, (p >= 0.5).astype(int), average="weighted"), abs=1e-6)
    m.reset_state()
    assert float(m.result()) == 0.0
    assert [x.name for x in objectives.make_metrics()] == [
        "accuracy", "precision", "recall", "auc_approx", "weighted_f1"]
