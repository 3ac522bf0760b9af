"""SIGTERM or Ctrl-C during a conversion: the pool ends quietly, every written shard and
its progress record stay, the shard being written and the lock go, and the same command
converts only the rest."""
import os
import signal

import pytest

from leukemia_tf import signals
from leukemia_tf.data import convert


def _cfg(tree, out):
    return convert.ConvertConfig(tree, str(out), num_shards=2, num_workers=2, progress=False)


def test_sigterm_keeps_the_written_shards(tiny_tree, tmp_path, monkeypatch, capfd):
    out = tmp_path / "rec"
    real, written = convert._write_shard, []

    def then_preempted(cfg, out_dir, shard, results, bar):
        if len(written) == 3:  # the platform's SIGTERM, while the 4th shard is encoded
            os.kill(os.getpid(), signal.SIGTERM)
        real(cfg, out_dir, shard, results, bar)
        written.append(shard["path"])
    monkeypatch.setattr(convert, "_write_shard", then_preempted)
    with pytest.raises(signals.Stopped) as stopped:
        convert.convert(_cfg(tiny_tree, out))
    assert str(stopped.value) == ("stopped by SIGTERM with 3 of 10 shards written; the same "
                                  "command keeps them and converts the rest")
    assert stopped.value.code == 143
    assert len(written) == 3
    names = set(os.listdir(out))
    assert set(written) <= names and "convert.lock" not in names
    assert "manifest.json" not in names  # not done: nothing vouches for the dir
    progress = os.listdir(out / ".progress")
    assert sorted(progress) == sorted(f"{n}.json" for n in written)  # no temporaries
    assert "Traceback" not in capfd.readouterr().err  # the pool ended quietly
    monkeypatch.setattr(convert, "_write_shard", real)
    manifest = convert.convert(_cfg(tiny_tree, out))
    assert manifest["stats"]["reused_shards"] == 3
    assert len(manifest["shards"]) == 10
