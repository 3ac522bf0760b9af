"""First epoch per stored encoding: the tree converted with each encoding the converter
offers (png at zlib levels 0/1/6, raw, bmp, jpeg; originals or pre-resized), and the
project's first pass (read, decode, preprocess; no cache) over each, beside
image_dataset_from_directory on the same images and the in-memory decode ceiling of the
same bytes.

Conversions are made once per tree and setting in the work dir and reused; they are not
timed here (`leukemia-bench convert` times the converter).
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Sequence

from leukemia_tf import io
from leukemia_tf.bench.rates import parse_encoding, pipeline_rate
from leukemia_tf.bench.settings import FIRST_PASS_ENCODINGS  # noqa: F401  (its home)
from leukemia_tf.data import convert
from leukemia_tf.data import manifest as manifest_lib


def records_for(tree: str, work_dir: str, text: str, image_size: int, workers: int) -> str:
    """The tree converted as `text` (see rates.parse_encoding), made once in work_dir."""
    enc, level, size = parse_encoding(text, image_size)
    key = hashlib.sha1(os.path.abspath(tree).encode()).hexdigest()[:8]
    name = f"{enc}{level if enc == 'png' else ''}" + (f"-{size}px" if size else "-originals")
    out = io.join(work_dir, f"records-{name}-{key}")
    if not io.exists(io.join(out, manifest_lib.MANIFEST)):
        convert.convert(convert.ConvertConfig(tree, out, encoding=enc, png_compression=level,
                                              image_size=size, num_workers=workers,
                                              progress=False))
    return out


def first_pass_rate(records_dir: str, image_size: int, batch: int, min_batches: int,
                    min_seconds: float) -> dict:
    """The project's first pass over `records_dir` and its stored bytes per image."""
    out = pipeline_rate(records_dir, image_size, batch, "none", min_batches, min_seconds)
    manifest = manifest_lib.load(records_dir)
    shards = manifest_lib.shards_for(manifest, records_dir, manifest_lib.Selection("train"))
    out["bytes_per_image"] = (sum(s["bytes"] for s in shards)
                              / max(1, sum(s["num_examples"] for s in shards)))
    return out


def first_pass_jobs(tree: str, work_dir: str, encodings: Sequence[str], image_size: int,
                    batch: int, min_batches: int, min_seconds: float,
                    workers: int) -> Dict[str, tuple]:
    """{first_pass/<encoding>: job}, converting what is not converted yet."""
    jobs = {}
    for text in encodings:
        records_dir = records_for(tree, work_dir, text, image_size, workers)
        jobs[f"first_pass/{text}"] = (first_pass_rate, records_dir, image_size, batch,
                                      min_batches, min_seconds)
    return jobs
