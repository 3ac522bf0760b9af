"""leukemia_tf.io, the one door to files: unit tests on local paths and ram://, and a
source scan that no other module of the package opens, creates or tests paths itself."""
import ast
import os

import numpy as np
import pandas as pd
import pytest

from leukemia_tf import io

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "leukemia_tf")


# ------------------------------------------------------------------ the source scan
def _dotted(node) -> str:
    """`os.path.exists` for an ast.Attribute chain, `open` for a Name, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def file_access_calls(source: str):
    """(line, what) for each call that reads/writes/creates/tests a path directly."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        positional_target = bool(node.args) or any(
            k.arg in ("path_or_buf", "fname", "filepath_or_buffer") for k in node.keywords)
        if name == "open":
            found.append((node.lineno, "open("))
        elif name in ("os.makedirs", "os.path.exists"):
            found.append((node.lineno, name))
        elif attr == "to_csv" and positional_target:
            found.append((node.lineno, ".to_csv(<path or file>)"))
        elif attr == "savefig":
            found.append((node.lineno, "savefig("))
        elif name in ("pd.read_csv", "pandas.read_csv"):
            found.append((node.lineno, "pd.read_csv("))
    return found


def test_scanner_finds_each_pattern_and_ignores_text():
    src = ('"""open( in a docstring"""\n'
           "# os.makedirs in a comment\n"
           "open(p)\nos.makedirs(d)\nos.path.exists(p)\ndf.to_csv(p, index=False)\n"
           "fig.savefig(p)\npd.read_csv(p)\ntext = df.to_csv(index=False)\n"
           "io.open_file(p)\nImage.open(b)\n")
    assert [w for _, w in file_access_calls(src)] == [
        "open(", "os.makedirs", "os.path.exists", ".to_csv(<path or file>)", "savefig(",
        "pd.read_csv("]


def test_no_module_but_io_touches_files_directly():
    """Allow-lists nothing: every hit is a module still to convert to leukemia_tf.io."""
    offenders = []
    for d, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            path = os.path.join(d, name)
            rel = os.path.relpath(path, PACKAGE)
            if not name.endswith(".py") or rel == "io.py":
                continue
            with io.open_file(path) as f:
                source = f.read()
            offenders += [f"leukemia_tf/{rel}:{line}: {what}"
                          for line, what in sorted(file_access_calls(source))]
    assert not offenders, "use leukemia_tf.io instead:\n" + "\n".join(offenders)


# ------------------------------------------------------------------ io itself
@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "io")
    return f"ram://test_io_{os.getpid()}_{id(request)}"


def test_write_read_round_trips(root):
    path = io.join(root, "a", "b", "x.json")
    io.write_json(path, {"n": np.int64(3), "v": np.arange(2)})
    assert io.read_json(path) == {"n": 3, "v": [0, 1]}
    assert io.exists(path) and io.isdir(io.join(root, "a", "b"))
    assert io.listdir(io.join(root, "a", "b")) == ["x.json"]  # no temporary left
    io.write_text(io.join(root, "t.txt"), "héllo\n")
    assert io.read_text(io.join(root, "t.txt")) == "héllo\n"
    assert io.size(io.join(root, "t.txt")) == len("héllo\n".encode())
    io.write_bytes(io.join(root, "b.bin"), b"\x00\x01")
    assert io.read_bytes(io.join(root, "b.bin")) == b"\x00\x01"


def test_csv_and_figure(root):
    frame = pd.DataFrame({"file": ["1.bmp", "2.bmp"], "probability": [0.25, 0.5]})
    io.write_csv(io.join(root, "p.csv"), frame)
    pd.testing.assert_frame_equal(io.read_csv(io.join(root, "p.csv")), frame)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    io.write_figure(io.join(root, "f.png"), fig)
    plt.close(fig)
    assert io.read_bytes(io.join(root, "f.png"))[:8] == b"\x89PNG\r\n\x1a\n"


def test_remove_rename_copy_rmtree_walk_glob(root):
    io.write_text(io.join(root, "d", "a.txt"), "a")
    io.copy(io.join(root, "d", "a.txt"), io.join(root, "d", "b.txt"))
    with pytest.raises(Exception):
        io.copy(io.join(root, "d", "a.txt"), io.join(root, "d", "b.txt"))
    io.rename(io.join(root, "d", "b.txt"), io.join(root, "d", "c.txt"))
    assert io.listdir(io.join(root, "d")) == ["a.txt", "c.txt"]
    assert [os.path.basename(p) for p in io.glob(io.join(root, "d", "*.txt"))] == \
        ["a.txt", "c.txt"]
    files = sorted(n for _, _, names in io.walk(root) for n in names)
    assert files == ["a.txt", "c.txt"]
    io.remove(io.join(root, "d", "a.txt"))
    io.remove(io.join(root, "d", "a.txt"))  # already gone: no error
    io.rmtree(io.join(root, "d"))
    assert not io.exists(io.join(root, "d"))


def test_urls_never_touch_the_local_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    io.write_text("ram://nolocal/x/y.txt", "z")
    io.makedirs("ram://nolocal/empty")
    assert io.read_text("ram://nolocal/x/y.txt") == "z"
    assert os.listdir(tmp_path) == []          # no ./ram:/ folder
    assert io.join("ram://a", "b", "c") == "ram://a/b/c"
    assert io.dirname("ram://a/b/c") == "ram://a/b" and io.basename("ram://a/b/") == "b"
