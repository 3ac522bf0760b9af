"""The converter touches only what it owns and reuses only what is
still true; its CLI turns expected failures into one `error:` line; progress output."""
import errno
import hashlib
import io as _io
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from leukemia_tf import io, progress
from leukemia_tf.data import cnmc, convert, images, records
from leukemia_tf.data.conversion import encode, streaming
from leukemia_tf.data import manifest as manifest_lib


def _cfg(data_dir, out, **kw):
    kw.setdefault("num_workers", 1)
    kw.setdefault("progress", False)
    kw.setdefault("num_shards", 1)
    return convert.ConvertConfig(data_dir=data_dir, output_dir=str(out), **kw)


def _examples(out, manifest, split=None):
    rows = {}
    for shard in manifest["shards"]:
        if split and shard["split"] != split:
            continue
        for raw in tf.data.TFRecordDataset(os.path.join(str(out), shard["path"])):
            ex = records.parse_example(raw)
            rows[ex["image/source_path"].numpy().decode()] = ex
    return rows


# ---------------------------------------------------------------- case 6
def test_foreign_shards_are_left_alone(tiny_tree, tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    foreign = {"cifar-00000-of-00002.tfrecord": b"other dataset",
               "train-00000-of-00001.tfrecord": b"another one"}
    for name, data in foreign.items():
        (out / name).write_bytes(data)
    manifest = convert.convert(_cfg(tiny_tree, out))
    for name, data in foreign.items():
        assert (out / name).read_bytes() == data, name
    assert all(s["path"] not in foreign for s in manifest["shards"])
    assert convert.verify(str(out))["examples"] == 19


def test_foreign_file_with_a_planned_name_is_refused(tiny_tree, tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "test-00000-of-00001.tfrecord").write_bytes(b"not ours")
    with pytest.raises(convert.ConvertError, match="no manifest or progress record") as err:
        convert.convert(_cfg(tiny_tree, out))
    assert "test-00000-of-00001.tfrecord" in str(err.value)
    assert (out / "test-00000-of-00001.tfrecord").read_bytes() == b"not ours"
    assert sorted(os.listdir(out)) == ["test-00000-of-00001.tfrecord"]


@pytest.mark.parametrize("name, data", [("manifest.json", b'{"name": "a web app"}'),
                                        ("manifest.json", b"not json"),
                                        ("examples.csv", b"id,value\n1,2\n")])
def test_a_manifest_or_examples_csv_it_did_not_write_stops_it(tiny_tree, tmp_path, name,
                                                              data):
    out = tmp_path / "rec"
    out.mkdir()
    (out / name).write_bytes(data)
    with pytest.raises(convert.ConvertError, match="this converter did not write") as err:
        convert.convert(_cfg(tiny_tree, out))
    assert str(out / name) in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(out)) == [name] and (out / name).read_bytes() == data


def test_own_shards_of_an_earlier_plan_are_removed(tiny_tree, tmp_path):
    out = tmp_path / "rec"
    first = convert.convert(_cfg(tiny_tree, out, num_shards=2))
    (out / "cifar-00000-of-00001.tfrecord").write_bytes(b"x")
    second = convert.convert(_cfg(tiny_tree, out, num_shards=1))
    shards = sorted(n for n in os.listdir(out) if n.endswith(".tfrecord"))
    assert shards == sorted([s["path"] for s in second["shards"]] +
                            ["cifar-00000-of-00001.tfrecord"])
    assert len(first["shards"]) > len(second["shards"])
    assert sorted(os.listdir(out / ".progress")) == sorted(
        s["path"] + ".json" for s in second["shards"])


# ---------------------------------------------------------------- case 7
@pytest.mark.parametrize("change, error, match", [
    ({"data_dir": "typo"}, cnmc.CnmcError, "_typo does not exist"),
    ({"shard_size_mb": 0.0}, convert.ConvertError, "--shard_size_mb=0.0"),
    ({"canvas_size": 0}, convert.ConvertError, "--canvas_size=0"),
    ({"encoding": "webp"}, convert.ConvertError, "--encoding=webp"),
])
def test_bad_flags_leave_a_finished_records_dir_usable(tiny_tree, tmp_path, change, error,
                                                       match):
    out = tmp_path / "rec"
    before = convert.convert(_cfg(tiny_tree, out))
    listing = sorted(os.listdir(out))
    kw = {"data_dir": tiny_tree, **change}
    if change.get("data_dir") == "typo":
        kw["data_dir"] = tiny_tree + "_typo"
    with pytest.raises(error, match=match):
        convert.convert(_cfg(kw.pop("data_dir"), out, **kw))
    assert sorted(os.listdir(out)) == listing
    assert manifest_lib.load(str(out))["created"] == before["created"]
    assert convert.verify(str(out))["examples"] == 19


def test_output_dir_inside_the_data_dir_is_refused(tiny_tree, tmp_path):
    for inside in (os.path.join(tiny_tree, "records"),
                   os.path.join(os.path.dirname(tiny_tree), "records"), tiny_tree):
        with pytest.raises(convert.ConvertError, match="inside the data dir"):
            convert.convert(_cfg(os.path.dirname(tiny_tree), inside))
    assert not os.path.exists(os.path.join(tiny_tree, "records"))
    assert not os.path.exists(os.path.join(os.path.dirname(tiny_tree), "records"))


# ---------------------------------------------------------------- case 8
def _rewrite_pixels(path):
    """New pixels, same file size (every C-NMC training BMP has the same size)."""
    old = open(path, "rb").read()
    pixels = images.decode_bmp(old).copy()
    pixels[:10] = 255 - pixels[:10]
    new = images.encode_bmp(pixels)
    assert len(new) == len(old) and new != old
    with open(path, "wb") as f:
        f.write(new)
    return new


def test_changed_pixels_or_labels_are_re_encoded(tiny_tree, tmp_path):
    out = tmp_path / "rec"
    first = convert.convert(_cfg(tiny_tree, out))
    n_shards = len(first["shards"])
    rel = "training_data/fold_1/hem/" + sorted(
        os.listdir(os.path.join(tiny_tree, "training_data", "fold_1", "hem")))[0]
    new = _rewrite_pixels(os.path.join(tiny_tree, rel))
    second = convert.convert(_cfg(tiny_tree, out))
    assert second["stats"]["reused_shards"] == n_shards - 1
    ex = _examples(out, second, "train")[rel]
    assert ex["image/sha256"].numpy().decode() == hashlib.sha256(new).hexdigest()
    np.testing.assert_array_equal(records.decoder("png", 450)(ex).numpy(),
                                  images.decode_bmp(new))

    csv = os.path.join(tiny_tree, cnmc.VAL_CSV)
    text = open(csv).read()
    assert "UID_5_1_1_all.bmp,1.bmp,1\n" in text
    open(csv, "w").write(text.replace("UID_5_1_1_all.bmp,1.bmp,1\n",
                                      "UID_H5_1_1_hem.bmp,1.bmp,0\n"))
    third = convert.convert(_cfg(tiny_tree, out))
    assert third["stats"]["reused_shards"] == n_shards - 1   # only the validation shard
    val = _examples(out, third, "validation")[cnmc.VAL_DIR + "/1.bmp"]
    assert val["image/class/label"].numpy() == 0
    assert val["image/patient_id"].numpy() == b"H5"

    fourth = convert.convert(_cfg(tiny_tree, out))   # unchanged inputs: everything reused
    assert fourth["stats"]["reused_shards"] == n_shards
    assert fourth["stats"]["encoded_images"] == 0 and fourth["stats"]["hashed_images"] == 19


# ---------------------------------------------------------------- case 9
@pytest.mark.parametrize("damage, warning", [("truncate", "unreadable progress record"),
                                             ("no_fields", "incomplete progress record")])
def test_damaged_progress_record_means_not_done(tiny_tree, tmp_path, caplog, damage,
                                                warning):
    out = tmp_path / "rec"
    first = convert.convert(_cfg(tiny_tree, out))
    record = out / ".progress" / (first["shards"][0]["path"] + ".json")
    text = record.read_text()
    record.write_text(text[: len(text) // 2] if damage == "truncate" else '{"bytes": 1}')
    with caplog.at_level(logging.WARNING):
        second = convert.convert(_cfg(tiny_tree, out))
    assert second["stats"]["reused_shards"] == len(first["shards"]) - 1
    assert str(record) in caplog.text and warning in caplog.text
    assert convert.verify(str(out))["examples"] == 19
    assert io.read_json(str(record))["sha256"] == second["shards"][0]["sha256"]


# ---------------------------------------------------------------- case 10
def test_dangling_symlink_is_named_or_skipped(tiny_tree, tmp_path):
    rel = "training_data/fold_0/all/UID_1_99_1_all.bmp"
    os.symlink(str(tmp_path / "gone.bmp"), os.path.join(tiny_tree, rel))
    with pytest.raises(cnmc.CnmcError, match="dangling symbolic link") as err:
        convert.convert(_cfg(tiny_tree, tmp_path / "a"))
    assert rel in str(err.value)
    manifest = convert.convert(_cfg(tiny_tree, tmp_path / "b", on_error="skip"))
    assert [s["path"] for s in manifest["skipped"]] == [rel]
    assert "dangling symbolic link" in manifest["skipped"][0]["reason"]
    assert manifest["splits"]["train"]["num_examples"] == 12


# ---------------------------------------------------------------- case 11
def _png16(values):
    from PIL import Image
    buf = _io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_16bit_png_is_scaled_not_clipped_in_the_converter(tiny_tree, tmp_path):
    grey = (np.arange(600 * 600).reshape(600, 600) * 65535 // (600 * 600 - 1))
    path = os.path.join(tiny_tree, cnmc.TEST_DIR, "4.png")
    with open(path, "wb") as f:
        f.write(_png16(grey))
    manifest = convert.convert(_cfg(tiny_tree, tmp_path / "rec"))
    ex = _examples(tmp_path / "rec", manifest, "test")[cnmc.TEST_DIR + "/4.png"]
    got = records.decoder("png", 0)(ex).numpy()  # records hold decoded originals
    want = ((grey * 255 + 32767) // 65535).astype(np.uint8)
    np.testing.assert_array_equal(got[:, :, 0], want)
    assert len(np.unique(got)) > 100   # clipping at 255 left two or three values


# ---------------------------------------------------------------- examples.csv
def test_examples_csv_writes_folds_and_labels_as_integers(tiny_tree, tmp_path):
    convert.convert(_cfg(tiny_tree, tmp_path / "rec"))
    lines = (tmp_path / "rec" / "examples.csv").read_text().splitlines()
    header = lines[0].split(",")
    folds = {r.split(",")[header.index("fold")] for r in lines[1:]}
    labels = {r.split(",")[header.index("label")] for r in lines[1:]}
    assert folds == {"0", "1", "2", ""} and labels == {"0", "1", ""}


# ---------------------------------------------------------------- streaming
def test_remote_source_streams_with_bounded_reads(tiny_tree, tmp_path):
    remote = "ram://hconv_stream/C-NMC_Leukemia"
    io.copytree(tiny_tree, remote)
    local = convert.convert(_cfg(tiny_tree, tmp_path / "local"))
    got = convert.convert(_cfg(remote, tmp_path / "remote", num_workers=2))
    assert [s["sha256"] for s in got["shards"]] == [s["sha256"] for s in local["shards"]]

    taken = []

    def tasks():
        for i in range(100):
            taken.append(i)
            yield (i, f"{remote}/no-such-{i}.bmp", None, {})
    window = 3
    results = streaming.stream(encode.work, tasks(), None, window)
    first = next(results)
    assert first[0] == 0 and "cannot read file" in first[2]
    assert len(taken) <= 2 * window + 1    # read ahead is bounded, not the whole input
    assert [r[0] for r in results] == list(range(1, 100))


# ---------------------------------------------------------------- progress
def test_progress_is_plain_lines_without_a_terminal(tiny_tree, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.setattr(convert, "PROGRESS_INTERVAL", 0.0)
    convert.convert(_cfg(tiny_tree, tmp_path / "rec", progress=True))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("convert")]
    assert lines[0].startswith("convert: 1/19 img")
    assert lines[-1].startswith("convert: encoded 19 images, reused 0 of 5 shards, in ")


@pytest.mark.parametrize("columns", [80, 0])
def test_progress_is_a_bar_in_a_terminal_with_a_width(monkeypatch, columns):
    """A terminal of width 0 (some pseudo-terminals) would show nothing of a bar: lines."""
    class Tty(_io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            return 99
    monkeypatch.setattr(progress.os, "get_terminal_size",
                        lambda fd: os.terminal_size((columns, 24)))
    stream = Tty()
    bar = progress.Progress(5, "convert", stream=stream, interval=0.0)
    for _ in range(5):
        bar.update(1)
    bar.close("done")
    assert ("\r" in stream.getvalue()) is (columns > 0) and "5/5" in stream.getvalue()
    assert stream.getvalue().splitlines()[-1] == "convert: done"


# ---------------------------------------------------------------- errors a person can act on
def _cli(argv, capsys):
    from leukemia_tf.cli import convert as convert_cli
    flags = convert_cli.FLAGS
    if "data_dir" not in flags:  # entry points define their flags when run
        convert_cli.define_flags(flags)
    flags.unparse_flags()
    flags(["convert"] + argv)
    try:
        code = convert_cli.main([])
    finally:
        flags.unparse_flags()
    return code, capsys.readouterr().err


def test_cli_expected_failures_are_one_line(tiny_tree, tmp_path, capsys):
    code, err = _cli([f"--output_dir={tmp_path}/none", "--verify"], capsys)
    assert code == 1
    assert err == f"error: no complete conversion (manifest.json not found; convert the " \
                  f"images with leukemia-convert), {tmp_path}/none/manifest.json\n"
    code, err = _cli([f"--data_dir={tiny_tree}", f"--output_dir={tmp_path}/r",
                      "--shard_size_mb=0", "--noprogress"], capsys)
    assert code == 1 and err.startswith("error: invalid settings: --shard_size_mb=0.0")
    assert err.count("\n") == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _cli([f"--data_dir={tiny_tree}", f"--output_dir={blocker}/rec",
                      "--num_shards=1", "--num_workers=1", "--noprogress"], capsys)
    assert code == 1 and err == f"error: Not a directory, {blocker}/rec\n"


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/train-00000-of-00001.tfrecord"),
     "error: No space left on device, /out/train-00000-of-00001.tfrecord\n"),
    (OSError(errno.EROFS, "Read-only file system", "/out/.progress"),
     "error: Read-only file system, /out/.progress\n"),
    (tf.errors.PermissionDeniedError(None, None, "gs://b/out: permission denied"),
     "error: gs://b/out: permission denied\n"),
])
def test_cli_disk_errors_are_one_line(tiny_tree, capsys, monkeypatch, exc, line):
    def fail(cfg):
        raise exc
    monkeypatch.setattr(convert, "convert", fail)
    code, err = _cli([f"--data_dir={tiny_tree}", "--output_dir=/out"], capsys)
    assert (code, err) == (1, line)


def test_cli_unexpected_errors_keep_their_traceback(tiny_tree, capsys, monkeypatch):
    def fail(cfg):
        raise KeyError("a bug")
    monkeypatch.setattr(convert, "convert", fail)
    with pytest.raises(KeyError, match="a bug"):
        _cli([f"--data_dir={tiny_tree}", "--output_dir=/out"], capsys)
