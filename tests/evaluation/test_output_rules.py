"""predict --output never replaces an input, a model dir's or records dir's file, or an
existing file without --overwrite: one line, before TensorFlow loads."""
import os

import pytest

from leukemia_tf.errors import UserError
from leukemia_tf.evaluation import output_rules


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "c.bmp").write_bytes(b"BM")
    (tmp_path / "M" / "eval").mkdir(parents=True)
    (tmp_path / "M" / "summary.json").write_text("{}")
    (tmp_path / "M" / "config.json").write_text("{}")
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "manifest.json").write_text('{"shards": []}')
    return tmp_path


def _refused(output, inputs, match, overwrite=True):
    with pytest.raises(UserError, match=match) as err:
        output_rules.check(str(output), [str(i) for i in inputs], overwrite=overwrite)
    assert "\n" not in str(err.value)


def test_an_input_is_never_the_output(tree):
    img = tree / "imgs" / "c.bmp"
    _refused(img, [tree / "imgs"], rf"^--output {img} is one of the inputs \(--input ")
    _refused(img, [img], rf"^--output {img} is one of the inputs")
    _refused(tree / "imgs" / "new.png", [tree / "imgs"], "is one of the inputs")
    assert img.read_bytes() == b"BM"
    output_rules.check(str(tree / "imgs" / "p.csv"), [str(tree / "imgs")])  # a CSV beside


def test_model_and_records_dirs_are_refused(tree):
    for output, folder, kind, name in (
            (tree / "M" / "summary.json", tree / "M", "a model dir", "summary.json"),
            (tree / "M" / "eval" / "p.csv", tree / "M", "a model dir", "summary.json"),
            (tree / "R" / "manifest.json", tree / "R", "a records dir", "manifest.json")):
        _refused(output, [tree / "imgs"], rf"^--output {output} lies inside {folder}, "
                 rf"{kind} \(it holds {name}\)")
    os.symlink(tree / "M", tree / "link")
    _refused(tree / "link" / "p.csv", [tree / "imgs"], rf"lies inside {tree / 'M'}, a model")
    assert (tree / "M" / "summary.json").read_text() == "{}"


def test_namesakes_of_project_files_do_not_protect_a_folder(tree):
    web = tree / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "an app"}')
    (web / "summary.json").write_text("{}")
    output_rules.check(str(web / "p.csv"), [str(tree / "imgs")])


def test_an_existing_file_needs_overwrite(tree):
    out = tree / "p.csv"
    out.write_text("old")
    _refused(out, [tree / "imgs"], rf"^--output {out} exists: pass --overwrite to replace "
             "it, or give another --output$", overwrite=False)
    output_rules.check(str(out), [str(tree / "imgs")], overwrite=True)
    output_rules.check(str(tree / "new.csv"), [str(tree / "imgs")])
    # A side file alone (the CSV was moved away): predict would remove it, so it asks too.
    for side in (output_rules.patients_path, output_rules.errors_path):
        lone = tree / "q.csv"
        (tree / os.path.basename(side(str(lone)))).write_text("kept")
        _refused(lone, [tree / "imgs"], rf"^--output {lone}: its side file "
                 rf"{side(str(lone))} exists: pass --overwrite", overwrite=False)
        assert (tree / os.path.basename(side(str(lone)))).read_text() == "kept"
        os.remove(side(str(lone)))


def test_url_outputs_inside_a_model_or_records_dir_are_refused():
    """gs:// is checked as a local path is (here ram://, the same gfile door)."""
    from leukemia_tf import io
    root = "ram://rules_url"
    io.write_text(f"{root}/runs/main/config.json", "{}")
    io.write_text(f"{root}/runs/main/summary.json", "{}")
    io.write_text(f"{root}/rec/manifest.json", '{"shards": []}')
    for output, folder in ((f"{root}/runs/main/eval/p.csv", f"{root}/runs/main"),
                           (f"{root}/rec/p.csv", f"{root}/rec")):
        _refused(output, [], rf"^--output {output} lies inside {folder}, ")
    output_rules.check(f"{root}/runs/p.csv", [])


def test_predict_refuses_before_tensorflow_in_one_line(tree):
    from tests.cli.test_cli import _probe
    out = tree / "M" / "summary.json"
    last, err = _probe("predict", f"--model_dir={tree / 'M'}", f"--input={tree / 'imgs'}",
                       f"--output={out}")
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert err == [f"error: --output {out} lies inside {tree / 'M'}, a model dir (it holds "
                   "summary.json), whose files a CSV must not replace; give an --output "
                   "outside it"], err
    existing = tree / "p.csv"
    existing.write_text("old")
    last, err = _probe("predict", f"--model_dir={tree / 'M'}", f"--input={tree / 'imgs'}",
                       f"--output={existing}")
    assert last == "exit 1 raised [False] tf False" and err[-1].endswith(
        "exists: pass --overwrite to replace it, or give another --output"), err
    assert existing.read_text() == "old"
