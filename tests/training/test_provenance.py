"""A run records the records it trained on (trained_on.json, summary.json) and the model it
exported; a resume and the final scoring refuse records converted again meanwhile."""
import json
import shutil

import pytest

from leukemia_tf import config as C
from leukemia_tf import io, training
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.model import export
from tests.helpers import tiny_config


def _reconvert(rec):
    """What a conversion of another tree into `rec` does to its manifest.json."""
    manifest = json.loads((rec / "manifest.json").read_text())
    manifest["warnings"].append("a later conversion of another tree")
    (rec / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def _scored_on_other_records(records_dir, tmp_path_factory):
    """One epoch trained; the records converted again between the export and the final
    scoring (a trainer stopped there, a converter run meanwhile). Returns (config, model
    dir, records dir, the original manifest bytes, what run() raised or returned)."""
    root = tmp_path_factory.mktemp("prov")
    rec = root / "rec"
    shutil.copytree(records_dir, rec)
    original = (rec / "manifest.json").read_bytes()
    cfg = tiny_config(str(rec), root / "m", epochs=1, steps_per_epoch=2)
    real_export = export.export_model

    def export_then_reconvert(*args, **kwargs):
        out = real_export(*args, **kwargs)
        _reconvert(rec)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "export_model", export_then_reconvert)
        try:
            outcome = training.run(cfg)
        except training.TrainingError as e:
            outcome = e
    return cfg, root / "m", rec, original, outcome


def test_final_scoring_refuses_records_converted_after_the_export(_scored_on_other_records):
    cfg, md, rec, original, outcome = _scored_on_other_records
    assert isinstance(outcome, training.InputError), outcome
    message = str(outcome)
    recorded = json.loads((md / "trained_on.json").read_text())
    now = manifest_lib.fingerprint(str(rec))
    assert "\n" not in message
    assert f"fingerprint {now[:12]}" in message
    assert f": {recorded['manifest_sha256'][:12]}" in message
    assert str(md / "trained_on.json") in message and str(rec / "manifest.json") in message
    assert recorded["manifest_sha256"] != now
    assert recorded["splits"]["validation"] == {"name": "validation", "num_examples": 10}
    assert not (md / "summary.json").exists() and not (md / "calibration.json").exists()


@pytest.mark.slow
def test_resume_on_records_converted_again_is_refused(_scored_on_other_records, tmp_path):
    cfg, src, rec, original, _ = _scored_on_other_records
    md = tmp_path / "m"
    shutil.copytree(src, md)
    cfg = C.replace(cfg, train={"model_dir": str(md)})
    before = (md / "config.json").read_bytes()
    with pytest.raises(training.RunDirError) as refused:
        training.run(cfg)
    message = str(refused.value)
    recorded = json.loads((md / "trained_on.json").read_text())["manifest_sha256"]
    assert "\n" not in message and str(md / "trained_on.json") in message
    assert f": {recorded[:12]}" in message
    assert f"fingerprint {manifest_lib.fingerprint(str(rec))[:12]}" in message
    assert (md / "config.json").read_bytes() == before and not (md / "summary.json").exists()
    # With the records it trained on back, the same command finishes the run.
    (rec / "manifest.json").write_bytes(original)
    try:
        summary = training.run(cfg)
    finally:
        _reconvert(rec)
    assert summary["status"] == "ok" and summary["first_epoch"] is None
    assert summary["records"]["manifest_sha256"] == recorded
    assert summary["model_sha256"] == io.sha256(str(md / "model.keras"))
    assert json.loads((md / "summary.json").read_text())["model_sha256"] == \
        summary["model_sha256"]
