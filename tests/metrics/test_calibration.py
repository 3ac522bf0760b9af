"""Temperature scaling, ECE, Brier score and the reliability diagram."""
import numpy as np
import pytest

from leukemia_tf import io
from leukemia_tf.metrics import calibration as cal
from leukemia_tf.reports import charts

# Confidences 0.95, 0.85, 0.75, 0.65, 0.55, 0.55 (none on a bin edge); calls at 0.5 are
# right, wrong, right, wrong, right, wrong.
HAND_P = [0.95, 0.85, 0.25, 0.65, 0.55, 0.45]
HAND_Y = [1, 0, 0, 0, 1, 1]


def test_ece_known_answer():
    # 5 bins over [0.5, 1]: |gap| = 0.05 (2 images), 0.65, 0.25, 0.85, 0.05.
    assert cal.expected_calibration_error(HAND_P, HAND_Y, n_bins=5) == pytest.approx(1.9 / 6)
    bins = cal.reliability_bins(HAND_P, HAND_Y, n_bins=5)
    assert bins["count"].tolist() == [2, 1, 1, 1, 1]
    assert bins["accuracy"].tolist() == [0.5, 0.0, 1.0, 0.0, 1.0]
    assert bins["confidence"].tolist() == pytest.approx([0.55, 0.65, 0.75, 0.85, 0.95])
    # One bin: |mean accuracy 0.5 - mean confidence 4.3 / 6|.
    assert cal.expected_calibration_error(HAND_P, HAND_Y, n_bins=1) == pytest.approx(
        abs(0.5 - 4.3 / 6))


def test_empty_bins_and_edges():
    bins = cal.reliability_bins([0.5, 1.0, 0.0], [1, 1, 1], n_bins=4)
    assert bins["count"].tolist() == [1, 0, 0, 2]     # 0.5 in the first bin, 1.0 in the last
    assert np.isnan(bins["accuracy"][1])
    # First bin: confidence 0.5, right (gap 0.5); last: confidence 1, one right, one wrong.
    assert cal.expected_calibration_error([0.5, 1.0, 0.0], [1, 1, 1], 4) == pytest.approx(
        (0.5 + 2 * 0.5) / 3)


def test_brier_known_answer():
    assert cal.brier_score(HAND_P, HAND_Y) == pytest.approx(1.715 / 6)
    assert cal.brier_score([1.0, 0.0], [1, 0]) == 0.0


def _overconfident(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 1 / (1 + np.exp(-5.0 * z)), y


def test_temperature_fixes_overconfidence():
    p_fit, y_fit = _overconfident(4000, 0)
    p_test, y_test = _overconfident(4000, 1)
    t = cal.fit_temperature(p_fit, y_fit)
    assert 4.0 < t < 6.0
    before = cal.expected_calibration_error(p_test, y_test)
    after = cal.expected_calibration_error(cal.apply_temperature(p_test, t), y_test)
    assert before > 0.1 and after < 0.5 * before
    assert cal.brier_score(cal.apply_temperature(p_test, t), y_test) < cal.brier_score(
        p_test, y_test)
    # Same fit from logits; the 0.5 decisions do not move.
    t_logits = cal.fit_temperature(cal.to_logits(p_fit), y_fit, kind="logits")
    assert t_logits == pytest.approx(t, rel=1e-3)
    assert ((cal.apply_temperature(p_test, t) >= 0.5) == (p_test >= 0.5)).all()


def test_calibrated_model_keeps_temperature_near_one():
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 2.0, 5000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    assert cal.fit_temperature(1 / (1 + np.exp(-z)), y) == pytest.approx(1.0, abs=0.1)


def test_errors():
    with pytest.raises(cal.CalibrationError, match="both classes"):
        cal.fit_temperature([0.2, 0.9], [1, 1])
    with pytest.raises(cal.CalibrationError, match="logits"):
        cal.fit_temperature([-2.0, 3.0], [0, 1])
    with pytest.raises(cal.CalibrationError, match="temperature"):
        cal.apply_temperature([0.5], 0.0)
    with pytest.raises(cal.CalibrationError, match="one label"):
        cal.brier_score([0.5, 0.5], [1])


def test_summary_and_plot(tmp_path):
    summary = cal.calibration_summary(HAND_P, HAND_Y, n_bins=5)
    assert summary["ece"] == pytest.approx(1.9 / 6)
    assert summary["brier"] == pytest.approx(1.715 / 6)
    assert summary["nll"] == pytest.approx(-np.mean(np.log([0.95, 0.15, 0.75, 0.35, 0.55,
                                                            0.45])))
    out = charts.plot_reliability(cal.reliability_bins(HAND_P, HAND_Y, 5),
                                  tmp_path / "sub" / "reliability.png")
    assert io.read_bytes(out)[:8] == b"\x89PNG\r\n\x1a\n"
