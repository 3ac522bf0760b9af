"""Scoring: the TTA mean over views, exactly-once scoring and its progress lines."""
import io as pyio

import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf.inference import scoring


def _dataset(n, batch):
    return tf.data.Dataset.from_tensor_slices({
        "image": np.zeros((n, 4, 4, 3), np.uint8), "label": np.arange(n) % 2,
        "source_path": [f"{i}.bmp" for i in range(n)], "patient_id": ["p"] * n}).batch(batch)


def test_predict_batch_is_the_mean_over_the_tta_views():
    images = np.zeros((2, 3, 3, 3), np.uint8)
    images[0, 0, 0] = 255   # the top-left pixel of image 0 is set: only some views keep it

    def top_left(x):  # a "model" that sees orientation: 1 when the pixel is top-left
        return tf.cast(tf.reduce_max(x[:, 0, 0], axis=-1) > 0, tf.float32)

    np.testing.assert_allclose(scoring.predict_batch(top_left, images), [1.0, 0.0])
    # flips: identity, left-right, up-down, both: only the identity keeps it top-left.
    np.testing.assert_allclose(scoring.predict_batch(top_left, images, "flips"), [0.25, 0.0])
    np.testing.assert_allclose(scoring.predict_batch(top_left, images, "dihedral8"),
                               [0.25, 0.0])   # identity and the transpose
    with pytest.raises(ValueError, match="tta must be one of"):
        scoring.predict_batch(top_left, images, "rot")


def test_scoring_progress_lines_and_summary():
    stream = pyio.StringIO()
    scores = scoring.score_dataset(lambda x: np.full(len(x), 0.25, np.float32), _dataset(5, 2),
                                   progress=True, total=5, desc="score v", interval=0.0,
                                   stream=stream)
    assert len(scores) == 5 and (scores["probability"] == 0.25).all()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("score v: 2/5 img (40%")
    assert lines[-1].startswith("score v: scored 5 images in 3 batches, ")
    assert len(lines) == 4


def test_scoring_is_silent_without_progress():
    stream = pyio.StringIO()
    scores = scoring.score_dataset(lambda x: np.zeros(len(x), np.float32), _dataset(3, 2),
                                   stream=stream)
    assert list(scores["source_path"]) == ["0.bmp", "1.bmp", "2.bmp"]
    assert stream.getvalue() == ""


def test_scoring_refuses_an_image_scored_twice():
    ds = _dataset(2, 1).repeat(2)
    with pytest.raises(RuntimeError, match="scored twice"):
        scoring.score_dataset(lambda x: np.zeros(len(x), np.float32), ds)
