"""A records dir is touched only inside itself, and by one converter at a time."""
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from leukemia_tf.data import convert
from leukemia_tf.data import manifest as manifest_lib
from tests.helpers import build_tree


def _cfg(tree, out, **kw):
    return convert.ConvertConfig(tree, str(out), num_shards=1, num_workers=1, progress=False,
                                 **kw)


@pytest.fixture
def converted(tiny_tree, tmp_path):
    out = tmp_path / "rec"
    convert.convert(_cfg(tiny_tree, out))
    return tiny_tree, out


def _edit_manifest(out, edit):
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_converting_another_tree_into_records_says_whose_it_replaces(converted, tmp_path,
                                                                     caplog):
    tree, out = converted
    other = build_tree(str(tmp_path / "other"), n_val=2)
    caplog.set_level(logging.WARNING)

    def replaced(source):
        caplog.clear()
        convert.convert(_cfg(source, out))
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("replacing the records")]

    first = manifest_lib.load(str(out))
    assert replaced(tree) == []                           # the same tree again: no word
    [line] = replaced(other)
    assert line.startswith(f"replacing the records of {first['source_root']} (")
    assert str(out) in line and line.endswith(manifest_lib.load(str(out))["source_root"])
    assert replaced(other) == []
    link = tmp_path / "link"
    link.symlink_to(other, target_is_directory=True)
    assert replaced(str(link)) == []                      # the same tree by another path


def test_the_same_tree_converted_again_keeps_the_records_fingerprint(converted, tmp_path):
    """A run's trained_on.json pins this: a no-op re-conversion (new date and timings)
    must not make evaluate and resume refuse the run; other settings must."""
    tree, out = converted
    bytes_before, pinned = (out / "manifest.json").read_bytes(), manifest_lib.fingerprint(str(out))
    assert manifest_lib.load_pinned(str(out))[1] == pinned
    time.sleep(1.1)  # another `created` second
    convert.convert(_cfg(tree, out))
    assert (out / "manifest.json").read_bytes() != bytes_before
    assert manifest_lib.fingerprint(str(out)) == pinned
    convert.convert(_cfg(tree, out, encoding="raw"))
    assert manifest_lib.fingerprint(str(out)) != pinned


# ------------------------------------------------ paths from a manifest stay inside
def test_crafted_manifest_cannot_delete_outside_the_output_dir(converted, tmp_path):
    tree, out = converted
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.json").write_text("keep")

    def craft(m):
        m["shards"][0]["path"] = "../../victim/important"
    _edit_manifest(out, craft)
    with pytest.raises(convert.ConvertError, match=r"\.\./\.\./victim/important"):
        convert.convert(_cfg(tree, out))
    assert (victim / "important.json").read_text() == "keep"


@pytest.mark.parametrize("path", ["../elsewhere/train-00000-of-00001.tfrecord",
                                  "/etc/passwd", "sub/../../x.tfrecord"])
def test_manifest_paths_outside_the_records_dir_are_refused(converted, path):
    _, out = converted

    def craft(m):
        m["shards"][0]["path"] = path
    _edit_manifest(out, craft)
    with pytest.raises(manifest_lib.ManifestError, match=rf"shard entry 0.*{path}"):
        manifest_lib.load(str(out))


def test_a_shard_symlinked_outside_is_refused(converted, tmp_path):
    _, out = converted
    name = json.loads((out / "manifest.json").read_text())["shards"][0]["path"]
    outside = tmp_path / "outside.tfrecord"
    os.replace(out / name, outside)
    os.symlink(outside, out / name)
    with pytest.raises(manifest_lib.ManifestError, match=rf"{name}.*outside"):
        manifest_lib.load(str(out))


# ------------------------------------------------ one converter per output dir
def test_second_converter_refuses_while_the_lock_is_held(converted):
    tree, out = converted
    before = (out / "manifest.json").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "token": "other",
                "started": "2026-01-01T00:00:00Z", "renewed": time.time()}
        (out / "convert.lock").write_text(json.dumps(lock))
        with pytest.raises(convert.ConvertError,
                           match=rf"in use by another converter .*pid {holder.pid}.*convert\.lock"):
            convert.convert(_cfg(tree, out))
    finally:
        holder.kill()
        holder.wait()
    assert (out / "manifest.json").read_bytes() == before
    (out / "convert.lock").unlink()
    convert.convert(_cfg(tree, out))
    assert not (out / "convert.lock").exists()  # released when done


# ------------------------------------------------ a huge PNG is refused before decoding
def test_huge_png_is_refused_from_its_header(monkeypatch):
    import numpy as np
    from leukemia_tf.data import images
    png = images.encode(np.zeros((30, 40, 3), np.uint8), "png")
    assert images.decode(png).shape == (30, 40, 3)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels decoded")
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(images.ImageError, match="40x30 pixels is above the 1,000-pixel limit"):
        images.decode(png)


def test_splits_with_shards_leaves_out_empty_splits():
    manifest = {"splits": {"test": {"num_examples": 0}, "train": {"num_examples": 3}},
                "shards": [{"split": "train"}]}
    assert manifest_lib.splits_with_shards(manifest) == ["train"]
