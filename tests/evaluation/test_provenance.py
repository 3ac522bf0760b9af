"""evaluate and predict score a run's own model on its own records: other records or
another model.keras only on purpose (and then said so), never a dir a trainer holds
(neither of them); an
evaluation of another model than the current model.keras is marked stale in index.md."""
import dataclasses
import json
import shutil

import pytest

from leukemia_tf import config as C
from leukemia_tf import io, provenance
from leukemia_tf.cli import evaluate as cli_evaluate
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.evaluation import evaluate, predict
from leukemia_tf.reports import report
from leukemia_tf.model import export, registry
from leukemia_tf.training import rundir


def _eval_config(md, records, **kwargs):
    kwargs.setdefault("tta", "none")  # these tests are about what is scored, not how
    return C.EvalConfig(model_dir=str(md), records_dir=str(records), shortcut_probe=False,
                        **kwargs)


def _other_records(records_dir, tmp_path):
    """A copy of the records converted again (another manifest.json)."""
    rec = tmp_path / "rec"
    shutil.copytree(records_dir, rec)
    manifest = json.loads((rec / "manifest.json").read_text())
    manifest["warnings"].append("a later conversion of another tree")
    (rec / "manifest.json").write_text(json.dumps(manifest))
    return rec


def _metrics(m):
    return json.loads(open(io.join(m["eval_dir"], "metrics.json")).read())


# ------------------------------------------------------------- the records it trained on
def test_evaluate_refuses_other_records_unless_asked(finished, records_dir, tmp_path):
    _, md = finished
    rec = _other_records(records_dir, tmp_path)
    recorded = json.loads((md / "trained_on.json").read_text())["manifest_sha256"]
    assert recorded == manifest_lib.fingerprint(records_dir)
    now = manifest_lib.fingerprint(str(rec))
    cfg = _eval_config(md, rec)
    for check in (cli_evaluate.check_inputs, evaluate.run):  # before TF, and the library
        with pytest.raises(provenance.ProvenanceError) as refused:
            check(cfg)
        message = str(refused.value)
        assert "\n" not in message and "--allow_other_records" in message
        assert f"fingerprint {now[:12]}" in message and f": {recorded[:12]}" in message
        assert str(md / "trained_on.json") in message
    assert not (md / "eval").exists()
    m = evaluate.run(dataclasses.replace(cfg, allow_other_records=True))
    on_disk = _metrics(m)
    assert on_disk["other_records"] is True
    assert on_disk["records_trained_on_sha256"] == [recorded]
    assert on_disk["records_manifest_sha256"] == now
    text = open(m["report"], encoding="utf-8").read()
    assert "scored on purpose with --allow_other_records" in text
    assert "OTHER records scored" in text
    index = (md / "eval" / "index.md").read_text()
    assert "**other records**" in index and "--allow_other_records" in index
    # Its own records: no such words.
    own = _metrics(evaluate.run(_eval_config(md, records_dir, split="fold0")))
    assert own["other_records"] is False and own["provenance_warnings"] == []


def test_records_fingerprints_of_older_runs_still_match(records_dir, tmp_path):
    """trained_on.json written when the fingerprint was the manifest's bytes: the same
    bytes still match, other ones do not."""
    md = tmp_path / "old_run"
    md.mkdir()
    for recorded, same in ((io.sha256(io.join(records_dir, "manifest.json")), True),
                           ("0" * 64, False)):
        (md / "trained_on.json").write_text(json.dumps({"records_dir": str(records_dir),
                                                        "manifest_sha256": recorded}))
        assert (provenance.records_problem(str(md), str(records_dir)) is None) is same


# ------------------------------------------------------------- a trainer at work
def test_evaluate_refuses_a_dir_a_trainer_holds_and_marks_stale_reports(
        finished, records_dir):
    _, md = finished
    cfg = _eval_config(md, records_dir)
    lock = rundir.Lock(str(md))
    lock.acquire()
    try:
        with pytest.raises(provenance.ProvenanceError) as refused:
            evaluate.run(cfg)
        with pytest.raises(provenance.ProvenanceError) as refused_predict:
            predict.predict(str(md), [records_dir], split="validation")
    finally:
        lock.release()
    message = str(refused.value)
    assert "\n" not in message and str(md / "train.lock") in message
    assert "wait for the trainer" in message and "score a copy of its model.keras" in message
    assert str(refused_predict.value) == message
    assert not (md / "eval").exists()
    m = evaluate.run(cfg)  # the trainer is gone
    assert _metrics(m)["model_sha256"] == io.sha256(str(md / "model.keras"))
    index = md / "eval" / "index.md"
    assert "stale" not in index.read_text()
    # A continued training exports another model.keras: the report is of the old one.
    (md / "model.keras").write_bytes((md / "model.keras").read_bytes() + b"another model")
    report.write_index(str(md / "eval"))
    text = index.read_text()
    assert "[validation](validation/report.md) **stale**" in text
    assert "1 of these scored another model than the current model.keras" in text


# ------------------------------------------------------------- another run's model.keras
@pytest.fixture
def foreign_keras(tmp_path):
    """model.keras of another network (seed_cnn) at the same input size."""
    model = registry.build_model(C.ModelConfig(name="seed_cnn"), 48)
    export.export_model(model, str(tmp_path / "other"))
    return tmp_path / "other" / "model.keras", model.count_params()


def test_another_model_keras_is_refused_or_named(finished, records_dir, foreign_keras):
    _, md = finished
    foreign, params = foreign_keras
    exported = json.loads((md / "summary.json").read_text())["model_sha256"]
    assert exported == io.sha256(str(md / "model.keras"))
    shutil.copyfile(foreign, md / "model.keras")
    now = io.sha256(str(md / "model.keras"))
    cfg = _eval_config(md, records_dir)
    refusals = [lambda: evaluate.run(cfg),
                lambda: predict.predict(str(md), [records_dir], split="validation")]
    for refusal in refusals:
        with pytest.raises(provenance.ProvenanceError) as refused:
            refusal()
        message = str(refused.value)
        assert "\n" not in message and "--allow_other_model" in message
        assert f"sha256 {now[:12]}" in message and f"model_sha256 {exported[:12]}" in message
        assert str(md / "summary.json") in message
    m = evaluate.run(dataclasses.replace(cfg, allow_other_model=True))
    on_disk = _metrics(m)
    assert on_disk["other_model"] is True and on_disk["model_sha256"] == now
    assert on_disk["loaded_model"] == {"name": "seed_cnn", "params": params}
    assert on_disk["context"]["model"].startswith("seed_cnn (")
    text = open(m["report"], encoding="utf-8").read()
    assert f"| parameters | {params:,} (of the loaded model) |" in text
    assert "scored on purpose with --allow_other_model" in text
    table, _ = predict.predict(str(md), [records_dir], split="validation",
                               allow_other_model=True)
    assert len(table) == 10
