"""evaluate and predict on a corrupt, truncated or missing shard, and on a run dir whose
config.json is not an object: one line naming the file, exit 1, no traceback."""
import json
import shutil

import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from leukemia_tf.config import EvalConfig
from leukemia_tf.errors import UserError
from leukemia_tf.evaluation import evaluate, predict
from tests.helpers import run_main


@pytest.fixture(scope="module")
def _untrained(records_dir, tmp_path_factory):
    """An untrained 48 px resnet_small exported with the tiny records' preprocessing."""
    from leukemia_tf import config as C
    from leukemia_tf.data import manifest as manifest_lib
    from leukemia_tf.data.pipeline import parser
    from leukemia_tf.model import export, registry
    md = str(tmp_path_factory.mktemp("untrained") / "m")
    model = registry.build_model(C.ModelConfig(name="resnet_small", width=4), 48)
    export.export_model(model, md, parser.records_spec(manifest_lib.load(records_dir), 48))
    return md


@pytest.fixture
def copies(_untrained, records_dir, tmp_path):
    """(model dir, records dir): private copies a test may damage."""
    shutil.copytree(_untrained, tmp_path / "m")
    shutil.copytree(records_dir, tmp_path / "rec")
    return tmp_path / "m", tmp_path / "rec"


def _shard(rec, split):
    manifest = json.loads((rec / "manifest.json").read_text())
    return rec / next(s["path"] for s in manifest["shards"]
                      if s["split"] == split and s["num_examples"])


def test_truncated_validation_shard_in_evaluate_is_one_line(copies):
    md, rec = copies
    shard = _shard(rec, "validation")
    shard.write_bytes(shard.read_bytes()[:-100])
    code, line = run_main("evaluate", f"--model_dir={md}", f"--records_dir={rec}")
    assert code == 1 and line.startswith(f"error: shard {shard} is "), line
    assert "the manifest says" in line


def test_corrupt_test_shard_in_predict_is_one_line(copies, tmp_path):
    md, rec = copies
    shard = _shard(rec, "test")
    data = bytearray(shard.read_bytes())
    data[12 + 100] ^= 0xFF  # a payload byte of the first record: same size, bad CRC
    shard.write_bytes(bytes(data))
    code, line = run_main("predict", f"--model_dir={md}", f"--input={rec}",
                          f"--output={tmp_path / 'p.csv'}")
    assert code == 1 and line.startswith(f"error: shard {shard} is corrupt after 0 good"), line
    assert not (tmp_path / "p.csv").exists()


def test_missing_shard_is_named_by_evaluate_and_predict(copies):
    md, rec = copies
    shard = _shard(rec, "validation")
    shard.unlink()
    with pytest.raises(UserError, match=rf"^shard {shard} is missing \(listed in "):
        evaluate.run(EvalConfig(str(md), str(rec)))
    with pytest.raises(UserError, match=rf"^shard {shard} is missing"):
        predict.predict(str(md), [str(rec)], split="validation")


def test_run_config_that_is_not_an_object_is_one_line(copies):
    md, rec = copies
    (md / "config.json").write_text("[]")
    code, line = run_main("evaluate", f"--model_dir={md}", f"--records_dir={rec}")
    assert code == 1 and line == (f"error: {md / 'config.json'} is not a run's config (a "
                                  "JSON object expected): restore it from a copy of the "
                                  "run, or train again"), line
