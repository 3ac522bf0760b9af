"""Shards checked against their manifest before they are read, and the shard behind a
corrupt record found after the fact.

Every shard a command reads must exist, have the manifest's size and, for local shards,
the manifest's record count. Counting walks the TFRecord length headers (12 bytes read per
record, no payload), so it costs milliseconds; remote shards (gs://) are checked by size
only, because each header would be one more request. A corrupt record met while reading
(`DataLossError`, which names no file) is traced to its shard by reading the shards again.
The trainer and the evaluate/predict stages share these checks; each passes the error
class its users catch.
"""
from __future__ import annotations

import struct
from typing import List, Optional, Sequence, Tuple, Type

from leukemia_tf import io
from leukemia_tf.errors import UserError


class ShardError(UserError):
    """A shard is missing, truncated, corrupt or disagrees with the manifest."""


def check_shards(records_dir: str, shards: Sequence[dict],
                 error: Type[UserError] = ShardError) -> None:
    """Each shard exists, has the manifest's size and (local) its record count; else
    `error` naming the shard."""
    for shard in shards:
        path = shard["full_path"]
        if not io.exists(path):
            raise error(f"shard {path} is missing (listed in {records_dir}/manifest.json)")
        size = io.size(path)
        if "bytes" in shard and size != shard["bytes"]:
            raise error(f"shard {path} is {size} bytes, the manifest says "
                        f"{shard['bytes']}: truncated or replaced; convert again")
        if io.is_url(path):
            continue
        count, problem = count_records(path)
        if problem:
            raise error(f"shard {path} is corrupt or truncated: {problem}")
        if count != shard["num_examples"]:
            raise error(f"shard {path} holds {count} records, the manifest says "
                        f"{shard['num_examples']}: the manifest does not match the "
                        "shards; convert again")


def count_records(path: str) -> Tuple[int, Optional[str]]:
    """(records, problem) from the TFRecord framing: 8-byte length, 4-byte CRC, payload,
    4-byte CRC. Reads 12 bytes per record; CRCs are not checked (training does)."""
    total = io.size(path)
    n, pos = 0, 0
    with io.open_file(path, "rb") as f:
        while pos < total:
            header = f.read(12)
            if len(header) < 12:
                return n, f"a partial record header at byte {pos}"
            (length,) = struct.unpack("<Q", header[:8])
            pos += 12 + length + 4
            if pos > total:
                return n, f"record {n} runs past the end of the file ({total} bytes)"
            f.seek(pos)
            n += 1
    return n, None


def corrupt_shard_error(shards: List[dict], error: Type[UserError] = ShardError
                        ) -> Optional[UserError]:
    """Re-read `shards` to find the one behind a DataLossError: `error` naming it, or
    None if all read fine."""
    import tensorflow as tf  # lazy: this module loads without TensorFlow
    for shard in shards:
        n = 0
        try:
            for _ in tf.data.TFRecordDataset(shard["full_path"]):
                n += 1
        except tf.errors.DataLossError as e:
            return error(f"shard {shard['full_path']} is corrupt after {n} good records "
                         f"({e.message.splitlines()[0]}): convert again")
    return None
