"""What a benchmark run measures and how long (`BenchConfig`), and the names its flags
take: importable without TensorFlow, so `leukemia-bench --help` and bad flags answer
before TensorFlow loads (the measurements themselves are bench/plan.py).
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

from leukemia_tf import config
from leukemia_tf.data.images import ENCODINGS

COMMANDS = ("input", "peers", "train", "convert")
# Per-example CPU augmentation variants of the input steady state (bench/rates.py).
CPU_WORK = ("flip_rot90", "rotate")
# Stored encodings whose first epoch `convert` times (bench/encodings.py).
FIRST_PASS_ENCODINGS = ("png0", "png1", "png6", "raw", "bmp", "png1@out", "raw@out",
                        "bmp@out")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how long; the CLI fills it from flags."""
    work_dir: str = "bench_out/work"   # synthetic trees, records and conversions go here
    data_dir: str = ""                 # C-NMC tree; empty: a synthetic one in work_dir
    records_dir: str = ""              # records of data_dir; empty: converted into work_dir
    num_images: int = 0                # synthetic tree size, all splits (0: the default 510)
    full: bool = False                 # synthetic tree with the real counts (~15,000 images)
    synthetic_seed: int = 0
    # stored encoding when converting for the records
    encoding: str = config.declared("png", choices=ENCODINGS)
    image_size: int = 224              # output size of every pipeline compared
    batch_size: int = 256
    min_seconds: float = 10.0          # each rate is timed at least this long ...
    min_batches: int = 20              # ... and over at least this many batches
    isolate: bool = True               # one process per measurement (own peak RSS)
    repeats: int = 2                   # runs of each rate, interleaved; the fastest counts
    cpu_work: Tuple[str, ...] = CPU_WORK
    # enc[level][@size|@out] (rates.parse_encoding): png0/png1/png6 are zlib levels, @out
    # pre-resized to image_size; the rest are originals at their own size.
    ceiling_encodings: Tuple[str, ...] = ("bmp", "png0", "png1", "png6", "jpeg", "raw",
                                          "png1@out", "raw@out", "bmp@out")
    ceiling_sample: int = 256          # images re-encoded for the per-encoding ceilings
    seed_numpy_limit: int = 2000       # at most this many images for the seed approach
    models: Tuple[str, ...] = ("seed_cnn", "resnet_small")
    precisions: Tuple[str, ...] = ("float32", "mixed_bfloat16")
    train_batch_size: int = 32
    train_steps: int = 48              # timed steps per input, in train_rounds blocks
    train_rounds: int = 8              # blocks alternate pipeline/synthetic (A B B A ...)
    train_augment: bool = True
    # train: the step settings of the default rows
    jit_compile: str = config.declared(
        "auto", choices=config.choices(config.TrainConfig, "jit_compile"))
    steps_per_execution: int = 1
    flops_seconds: float = 2.0         # train: each dense FLOP/s probe runs this long
    sweep: bool = False                # train: also the step-settings table (synthetic input)
    sweep_jit: Tuple[str, ...] = ("off", "on")
    sweep_steps_per_execution: Tuple[int, ...] = (1, 4, 16)
    sweep_precisions: Tuple[str, ...] = ("float32", "mixed_bfloat16")  # bf16 where native
    sweep_threads: Tuple[str, ...] = ("0:0",)  # inter:intra op threads, 0 = TF's choice
    profile_dir: str = ""              # train: a tf.profiler trace of 5 steps per row here
    encodings: Tuple[str, ...] = ENCODINGS
    first_pass_encodings: Tuple[str, ...] = FIRST_PASS_ENCODINGS
    convert_workers: int = 0           # 0 = all cores, as the converter's default
    cold_cache: bool = True            # convert: read the sources from disk (page cache evicted)
    json_out: str = ""                 # the CLI writes the results JSON here (empty: none)
