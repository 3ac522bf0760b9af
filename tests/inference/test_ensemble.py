"""Ensembles: one predictor from several model dirs, the mean of their probabilities."""
import numpy as np
import pandas as pd
import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.inference import ensemble, scoring
from leukemia_tf.evaluation import evaluate, predict
from leukemia_tf.config import AugmentConfig, ModelConfig
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data.pipeline import parser
from leukemia_tf.inference.loading import Predictor, load_model
from leukemia_tf.model.export import export_model
from leukemia_tf.model.registry import build_model


def uint8_batch(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def members(records_dir, tmp_path_factory):
    """Two model dirs of tiny 48 px models with different random weights (different
    outputs), exported with the session records' preprocessing. Tests only read them."""
    spec = parser.records_spec(manifest_lib.load(records_dir), 48)
    root = tmp_path_factory.mktemp("members")
    dirs = []
    for i in range(2):
        model = build_model(ModelConfig(width=4, dropout=0.0, normalize="none",
                                        augment=AugmentConfig(enabled=False)), 48)
        # A training step moves BatchNorm off its identity so the members disagree.
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.train_on_batch(uint8_batch(4, 48, seed=i), np.array([[0], [1], [1], [i]], "f"))
        dirs.append(str(root / f"m{i}"))
        export_model(model, dirs[-1], spec)
    return dirs


def test_ensemble_is_the_mean_of_its_members(members):
    dirs = members
    images = uint8_batch(5, 48, seed=9)
    members = np.stack([load_model(d)(images) for d in dirs])
    assert not np.allclose(members[0], members[1])          # a mean of equals proves nothing
    ens = ensemble.load(",".join(dirs), batch_size=2)
    assert isinstance(ens, ensemble.Ensemble) and ens.image_size == 48
    assert ensemble.members_of(ens) == [f"{d}/model.keras" for d in dirs]
    got = ens(images)
    assert got.dtype == np.float32 and got.shape == (5,)
    np.testing.assert_allclose(got, members.mean(axis=0), atol=1e-6)
    # TTA inside each member equals TTA around the ensemble (averaging is linear).
    inside = ensemble.load(dirs, member_tta="flips")(images)
    around = scoring.predict_batch(ens, images, "flips")
    np.testing.assert_allclose(inside, around, atol=1e-6)


def test_one_model_dir_is_a_plain_predictor(members):
    path = members[0]
    single = ensemble.load(path)
    assert isinstance(single, Predictor)
    assert ensemble.members_of(single) == [single.path]


def test_members_must_share_the_input_size_and_paths_must_exist():
    from leukemia_tf.data import preprocess

    def fake(size, value, path, canvas=450):
        return Predictor(lambda x: np.full([len(x)], value, np.float32),
                         preprocess.Spec(canvas_size=canvas, image_size=size), path)

    ens = ensemble.Ensemble([fake(8, 0.2, "a"), fake(8, 0.6, "b")])
    np.testing.assert_allclose(ens(uint8_batch(3, 8)), [0.4] * 3, atol=1e-7)
    with pytest.raises(ValueError, match="different input sizes"):
        ensemble.Ensemble([fake(8, 0.2, "a"), fake(16, 0.6, "b")])
    with pytest.raises(ValueError, match="different preprocessing"):
        ensemble.Ensemble([fake(8, 0.2, "a"), fake(8, 0.6, "b", canvas=600)])
    with pytest.raises(ValueError, match="no model dir"):
        ensemble.split_paths(" , ")
    assert ensemble.split_paths(["a", "b, c"]) == ["a", "b", "c"]


def test_evaluate_and_predict_take_several_model_dirs(records_dir, members, tmp_path):
    """`--model_dir=a,b`: predict writes the members' mean; evaluate scores that mean,
    lists the members, and needs --out_dir (an ensemble has no run dir of its own)."""
    dirs = members
    single = [predict.predict(d, [records_dir], split="validation")[0] for d in dirs]
    both, errors = predict.predict(",".join(dirs), [records_dir], split="validation")
    assert not errors and list(both["file"]) == list(single[0]["file"])
    assert not np.allclose(single[0]["probability"], single[1]["probability"])
    np.testing.assert_allclose(both["probability"],
                               (single[0]["probability"] + single[1]["probability"]) / 2,
                               atol=1e-6)
    with pytest.raises(ValueError, match="give --out_dir"):
        evaluate.run(evaluate.EvalConfig(",".join(dirs), records_dir))
    m = evaluate.run(evaluate.EvalConfig(",".join(dirs), records_dir, tta="none",
                                         out_dir=str(tmp_path / "ens_eval")))
    assert m["members"] == [f"{d}/model.keras" for d in dirs]
    assert m["num_examples"] == len(both)
    scored = pd.read_csv(tmp_path / "ens_eval" / m["eval_name"] / "predictions.csv")
    mean = dict(zip(both["path"], both["probability"]))
    np.testing.assert_allclose(scored["probability"], scored["source_path"].map(mean),
                               atol=1e-6)
