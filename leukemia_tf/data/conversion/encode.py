"""The converter's per-image work: read, hash, check and encode one source file.

`work` and `encode_one` run in forked worker processes, so this module imports numpy,
Pillow (through `images`) and `leukemia_tf.io` on local paths only, never TensorFlow;
`finish_one` is the parent's half of pre-resizing, where TensorFlow may run.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Tuple

from leukemia_tf import io
from leukemia_tf.data import images


def encode_one(task: Tuple[int, str, Optional[bytes], dict]):
    """Read, hash, check and encode one source file (worker process: no TensorFlow).

    Without pre-resizing the image is stored as decoded, at its own size: the canvas rule
    and the resize are applied by `preprocess.to_model_input` when the records are read,
    the one implementation serving uses too. With pre-resizing (`image_size` > 0) the
    decoded pixels go back to the parent, which runs that same function (TensorFlow
    cannot run in these forked workers) and encodes the result (`finish_one`).

    Returns (index, result dict or None, error reason or None).
    """
    index, path, data, s = task
    try:
        if data is None:
            data = io.read_bytes(path)
        sha = hashlib.sha256(data).hexdigest()
        pixels = images.decode(data)
        result = {"sha256": sha, "source_shape": list(pixels.shape[:2]),
                  "height": int(pixels.shape[0]), "width": int(pixels.shape[1])}
        if s["image_size"]:
            result["pixels"] = pixels
            return index, result, None
        # "bmp" keeps the source file's bytes: they are exactly the decoded pixels.
        result["encoded"] = images.encode(pixels, s["encoding"], s["jpeg_quality"],
                                          s["png_compression"],
                                          original=data if data[:2] == b"BM" else None)
        return index, result, None
    except images.ImageError as e:
        return index, None, str(e)
    except OSError as e:
        return index, None, f"cannot read file: {e}"


def finish_one(result: Optional[dict], s: dict) -> Optional[dict]:
    """Parent side of pre-resizing: the model-input pixels via `preprocess`, encoded."""
    if result is None or "pixels" not in result:
        return result
    from leukemia_tf.data import preprocess  # lazy: TensorFlow, parent process only, never workers
    spec = preprocess.Spec(canvas_size=s["canvas_size"], image_size=s["image_size"])
    out = preprocess.function_for(spec)(result.pop("pixels")).numpy()
    result["encoded"] = images.encode(out, s["encoding"], s["jpeg_quality"],
                                      s["png_compression"])
    result["height"] = result["width"] = s["image_size"]
    return result


def work(task: Tuple[int, str, Optional[bytes], dict]):
    """Worker: read a local input itself, encode it; returns (index, result, error, sha256).

    Runs in a forked process: numpy, Pillow and `leukemia_tf.io` on local paths only,
    never TensorFlow (URL inputs arrive as bytes read by the parent: `streaming.stream`).
    """
    index, path, data, settings = task
    if data is None:
        if io.is_url(path):  # a forked worker must not start TensorFlow's file systems
            return index, None, "internal error: URL input reached a worker unread", None
        try:
            data = io.read_bytes(path)
        except OSError as e:
            return index, None, f"cannot read file: {e.strerror or e}", None
    _, result, error = encode_one((index, path, data, settings))
    sha = result["sha256"] if result is not None else hashlib.sha256(data).hexdigest()
    return index, result, error, sha
