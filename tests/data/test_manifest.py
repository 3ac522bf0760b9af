"""manifest.json / examples.csv: one module for the converter and every reader."""
import json
import subprocess
import sys

import pytest

from leukemia_tf.data import manifest, records


def _manifest(n_train=3):
    return {"schema_version": records.SCHEMA_VERSION, "writer": manifest.WRITER,
            "settings": {"encoding": "png", "stored_size": 450},
            "splits": {"train": {"num_examples": n_train}},
            "shards": [{"path": "train-fold0-00000-of-00001.tfrecord", "split": "train",
                        "fold": 0, "num_examples": 3, "bytes": 10, "sha256": "ab"}]}


def test_schema_version_matches_records():
    assert manifest.SCHEMA_VERSION == records.SCHEMA_VERSION


def test_load_round_trip_and_errors_name_the_file(tmp_path):
    manifest.write(str(tmp_path), _manifest())
    assert manifest.load(str(tmp_path))["shards"][0]["num_examples"] == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # renamed into place
    path = str(tmp_path / "manifest.json")
    with pytest.raises(manifest.ManifestError, match=r"no complete conversion .*, " +
                       str(tmp_path / "none" / "manifest.json")):
        manifest.load(str(tmp_path / "none"))
    (tmp_path / "manifest.json").write_text('{"schema_version": 1, "sha')
    with pytest.raises(manifest.ManifestError, match=f"not valid JSON .*, {path}"):
        manifest.load(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(n_train=30)))
    with pytest.raises(manifest.ManifestError, match="shards hold 3 examples, the split "
                                                     "says 30"):
        manifest.load(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "someone else's"}))
    with pytest.raises(manifest.ManifestError, match="not a leukemia_tf records manifest"):
        manifest.load(str(tmp_path))


def test_examples_round_trip_keeps_integer_folds(tmp_path):
    shards = [{"path": "a"}, {"path": "b"}]
    row = {"rel_path": "x.bmp", "split": "train", "fold": 2, "label": 1, "patient_id": "H3",
           "sha256": "ab"}
    metas = {"a": [row], "b": [{**row, "split": "validation", "fold": None,
                                "label": None, "patient_id": ""}]}
    manifest.write_examples(str(tmp_path), manifest.examples_table(shards, metas))
    assert (tmp_path / "examples.csv").read_text().splitlines()[1:] == [
        "a,x.bmp,train,2,1,H3,ab", "b,x.bmp,validation,,,,ab"]
    table = manifest.read_examples(str(tmp_path))
    assert table["fold"].tolist()[0] == 2 and table["fold"].isna().tolist() == [False, True]
    assert table["patient_id"].tolist() == ["H3", ""]


def test_pipeline_reads_manifests_without_the_converter():
    code = ("import sys; from leukemia_tf.data import pipeline, grouping; "
            "print('leukemia_tf.data.convert' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
