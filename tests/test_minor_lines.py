"""Small one-line messages: bounded settings name their flag before TensorFlow loads, a
failed write names the folder (not a temporary file), a full disk at export names the
model dir."""
import errno

import pytest

from leukemia_tf import config as C
from leukemia_tf import presets
from leukemia_tf.errors import file_error


@pytest.mark.parametrize("args,line", [
    (["--dropout=1.5"], "error: --dropout must be below 1, not 1.5"),
    (["--cache_budget_gb=-1"], "error: --cache_budget_gb must be at least 0, not -1.0"),
    (["--learning_rate=nan"], "error: --learning_rate must be a finite number, not nan"),
])
def test_bounded_settings_fail_before_tensorflow(records_dir, tmp_path, args, line):
    from tests.cli.test_cli import _probe
    last, err = _probe("train", f"--records_dir={records_dir}", f"--model_dir={tmp_path}/m",
                       *args)
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert err == [line], err


def test_defaults_and_presets_pass_the_bounds():
    for name in presets.preset_names():
        C.check(presets.preset(name))
    with pytest.raises(C.ConfigError, match=r"^model.dropout must be below 1, not 1.0"):
        C.check(C.replace(C.Config(), model={"dropout": 1.0}))


def test_a_failed_write_names_the_folder_not_its_temporary():
    for name in ("/r/.progress/train-0.tfrecord.tmp-123", "/r/manifest.json.tmp-9",
                 "/r/.4242-0a1b2c3d.tmp"):
        e = OSError(errno.EROFS, "Read-only file system", name)
        assert file_error(e) == f"Read-only file system, {name.rsplit('/', 1)[0]}"
    e = OSError(errno.ENOSPC, "No space left on device", "/r/manifest.json")
    assert file_error(e) == "No space left on device, /r/manifest.json"
    import tensorflow as tf
    e = tf.errors.PermissionDeniedError(None, None, "/r/.progress/train-0.tfrecord.tmp-77; "
                                        "Read-only file system")
    assert file_error(e) == "/r/.progress; Read-only file system"


def test_a_full_disk_at_export_names_the_model_dir(tmp_path, monkeypatch):
    from leukemia_tf.model import export
    from leukemia_tf.model.registry import build_model

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as h5py: no file named
    monkeypatch.setattr(export, "_save_keras", full)
    model = build_model(C.ModelConfig(name="resnet_small", width=4,
                                      augment=C.AugmentConfig(enabled=False)), 32)
    with pytest.raises(OSError) as err:
        export.export_model(model, str(tmp_path / "m"))
    assert file_error(err.value) == f"No space left on device, {tmp_path / 'm'}"
