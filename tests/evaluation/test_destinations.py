"""evaluate into a read-only model dir and predict into a read-only folder: one line
naming the folder and the flag that picks another one, before TensorFlow loads."""
import errno
import os

import pytest

from leukemia_tf import io
from leukemia_tf.cli import evaluate as evaluate_cli
from leukemia_tf.config import EvalConfig
from leukemia_tf.errors import UserError
from leukemia_tf.evaluation import destinations, output_rules


@pytest.fixture
def read_only(monkeypatch):
    """Folders whose writes fail as on a read-only file system (errno 30). Works as root
    too, unlike chmod."""
    folders = []
    real_write = io.write_bytes

    def write_bytes(path, data, atomic=True):
        if any(os.path.abspath(path).startswith(str(f) + os.sep) for f in folders):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_write(path, data, atomic=atomic)

    monkeypatch.setattr(io, "write_bytes", write_bytes)
    return folders


def test_evaluate_into_a_read_only_model_dir_names_it_and_out_dir(tmp_path, read_only):
    md = tmp_path / "m"
    md.mkdir()
    read_only.append(md)
    cfg = EvalConfig(model_dir=str(md), records_dir="", split="validation")
    with pytest.raises(UserError) as err:
        destinations.check(destinations.eval_root(cfg.model_dir, cfg.out_dir),
                           destinations.EVALUATE_HINT)
    assert str(err.value) == (f"cannot write in {md} (Read-only file system): give "
                              "--out_dir=<a folder you can write> (evaluations go to "
                              "<model_dir>/eval by default)")
    destinations.check(str(tmp_path / "elsewhere"), destinations.EVALUATE_HINT)
    assert os.listdir(tmp_path) == ["m"] and os.listdir(md) == []  # no probe left


def test_evaluate_checks_its_folder_before_tensorflow(records_dir, tmp_path, read_only):
    md = tmp_path / "m"
    (md / "eval").mkdir(parents=True)
    read_only.append(md)
    cfg = EvalConfig(model_dir=str(md), records_dir=records_dir, split="validation")
    with pytest.raises(UserError, match=rf"^cannot write in {md / 'eval'} \(Read-only"):
        evaluate_cli.check_inputs(cfg)
    evaluate_cli.check_inputs(EvalConfig(model_dir=str(md), records_dir=records_dir,
                                         split="validation", out_dir=str(tmp_path / "o")))


def test_predict_into_a_read_only_folder_or_working_dir(tmp_path, read_only, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only.append(ro)
    for output, folder in ((ro / "p.csv", ro), (ro / "new" / "p.csv", ro)):
        with pytest.raises(UserError) as err:
            output_rules.check(str(output), [str(tmp_path)])
        assert str(err.value) == (f"cannot write in {folder} (Read-only file system): give "
                                  "another --output, in a folder you can write")
    monkeypatch.chdir(ro)
    with pytest.raises(UserError, match=rf"^cannot write in {ro} \(Read-only"):
        output_rules.check("p.csv", [str(tmp_path)])


def test_a_write_that_fails_later_is_the_same_line():
    e = OSError(errno.EROFS, "Read-only file system", "/m/eval/x/metrics.json.tmp-12")
    assert str(destinations.refusal(e, "/m/eval", "hint")) == (
        "cannot write in /m/eval (Read-only file system): hint")
    assert destinations.refusal(ValueError("x"), "/m", "hint") is None


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into a chmod 555 folder: the mock above covers it")
def test_chmod_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match=rf"^cannot write in {ro} \(Permission denied"):
            output_rules.check(str(ro / "p.csv"), [str(tmp_path)])
    finally:
        ro.chmod(0o755)
