"""The shards evaluate and predict read, checked and named as the trainer does.

Before a selection is read, every shard of it must exist, have the manifest's size and
(local shards) its record count (`data.shard_check`); a corrupt record met
while reading (`DataLossError`, which names no file) is traced to its shard by reading
the selection's shards again (`data.shard_check`). Either way the
command ends with one line naming the shard file, never a TensorFlow traceback.
"""
from __future__ import annotations

import contextlib

import tensorflow as tf

from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data import shard_check


def check(records_dir: str, manifest: dict, sel) -> None:
    """ShardError naming the first shard of `sel` that is missing, truncated or holds
    another number of records than the manifest says."""
    shard_check.check_shards(records_dir, manifest_lib.shards_for(manifest, records_dir, sel))


@contextlib.contextmanager
def named(records_dir: str, manifest: dict, sel):
    """Inside: a DataLossError (or a shard gone since `check`) becomes the ShardError
    naming the shard."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
        shards = manifest_lib.shards_for(manifest, records_dir, sel)
        if isinstance(e, tf.errors.NotFoundError):
            check(records_dir, manifest, sel)
            raise
        error = shard_check.corrupt_shard_error(shards)
        if error is None:
            raise
        raise error from e
