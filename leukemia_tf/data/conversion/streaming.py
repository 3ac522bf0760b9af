"""Bounded, parallel reading for the converter: stream inputs to workers, hash inputs.

Why: a C-NMC conversion reads about 9 GB. Reading it all before encoding (what
`pool.imap` over a list of bytes did for URL sources) needs that much memory; here at most
a few dozen inputs are in flight, whatever the dataset size. No TensorFlow is imported
here: URLs go through `leukemia_tf.io` (tf.io.gfile) in this process's threads only.
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from leukemia_tf import io
from leukemia_tf.progress import Progress


class Ready:
    """An already computed result with the AsyncResult interface."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


def read_url(path: str):
    try:
        return io.read_bytes(path), None
    except Exception as e:  # tf.errors.OpError or OSError: a per-file problem, recorded
        return None, f"cannot read file: {getattr(e, 'message', None) or e}"


def stream(fn: Callable, tasks: Iterable[tuple], pool, window: int) -> Iterator[tuple]:
    """`fn(task)` results in task order, with at most ~3 * `window` inputs in memory.

    Why not `pool.imap`: it consumes its whole input at once, and a URL input's bytes
    had to be read into this process first (9 GB for C-NMC). Here local inputs are read
    by the workers themselves; URL inputs are read by `window` threads of this process
    (tf.io.gfile releases the GIL; a forked worker must not use TensorFlow, and a
    ram:// file system exists only in this process, which rules out a 'spawn' pool),
    and a read ahead waits until the oldest result has been taken: backpressure.
    """
    tasks = iter(tasks)
    readers = concurrent.futures.ThreadPoolExecutor(window)
    reading, running = collections.deque(), collections.deque()
    try:
        while True:
            while len(reading) + len(running) < 2 * window:
                task = next(tasks, None)
                if task is None:
                    break
                remote = task[2] is None and io.is_url(task[1])
                reading.append((task, readers.submit(read_url, task[1]) if remote else None))
            while reading and len(running) < window:
                task, future = reading.popleft()
                if future is not None:
                    data, error = future.result()
                    if error is not None:
                        running.append(Ready((task[0], None, error, None)))
                        continue
                    task = (task[0], task[1], data, task[3])
                running.append(pool.apply_async(fn, (task,)) if pool is not None
                               else Ready(fn(task)))
            if not running:
                return
            yield running.popleft().get()
    finally:
        readers.shutdown(wait=True, cancel_futures=True)


def file_sha256(path: str) -> Tuple[str, int]:
    """(sha256 hex, size) of a file, read in 8 MB chunks."""
    h, n = hashlib.sha256(), 0
    with io.open_file(path, "rb") as f:
        while True:
            chunk = f.read(8 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def hash_inputs(paths: List[str], threads: int, progress: bool, interval: float
                ) -> Dict[str, Optional[str]]:
    """sha256 of every input (None when unreadable), hashed by parallel threads.

    This is the price of reuse by content: a re-run reads every input of every shard it
    might reuse (hashlib and file reads release the GIL, so threads scale).
    """
    bar = Progress(len(paths), "convert: hashing inputs", enabled=progress,
                   interval=interval)

    def one(path):
        try:
            return file_sha256(path)[0]
        except Exception:  # unreadable now: the shard is re-encoded and the error named then
            return None
    out = {}
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for path, sha in zip(paths, pool.map(one, paths)):
            out[path] = sha
            bar.update(1)
    seconds = bar.seconds()
    bar.close(f"hashed {len(paths)} inputs in {seconds:.1f} s "
              f"({len(paths) / max(seconds, 1e-9):.0f} img/s)" if paths else "")
    return out
