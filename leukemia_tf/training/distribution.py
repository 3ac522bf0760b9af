"""Where a run computes: devices, tf.distribute strategy, precision policy, the chief.

Everything here is decided once at start and logged in one block (`log_startup`), so a
user can see what the trainer found: which devices, which strategy with how many
replicas, which precision, and how the global batch is split.
"""
from __future__ import annotations

import logging
import re
from importlib import metadata
from typing import List, Sequence

import tensorflow as tf

from leukemia_tf import cluster, io
from leukemia_tf.config import TrainConfig, choices

log = logging.getLogger("leukemia_tf.training")


def split_cpu(num_devices: int) -> None:
    """Expose the CPU as `num_devices` logical devices (test MirroredStrategy without GPUs)."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:  # runtime already initialised; fine if already split
        if len(tf.config.list_logical_devices("CPU")) < num_devices:
            raise RuntimeError(f"cannot split the CPU into {num_devices} devices: {e}") from e


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto | default | one_device | mirrored | multi_worker -> a tf.distribute strategy.

    TF_CONFIG is checked first (`cluster.check`); the multi-worker strategy is created
    under `cluster.PeerWatchdog`, which ends the process with one line naming the silent
    peers when the cluster is not complete in time (a first collective proves it is)."""
    tf_config = cluster.parse()
    cluster.check(tf_config)
    workers = cluster.workers(tf_config)
    # MultiWorkerMirroredStrategy configures collectives at runtime start-up: create it
    # before anything (even listing logical devices) initialises the TF context.
    if name == "multi_worker" or (name == "auto" and workers > 1):
        if workers < 1:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG with a cluster "
                             "(see README: several machines)")
        with cluster.PeerWatchdog(tf_config):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            barrier(strategy)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device" if len(gpus) == 1 else "default"
    if workers > 1:
        raise ValueError(f"TF_CONFIG describes {workers} workers but --strategy={name}; "
                         "use --strategy=multi_worker (or auto)")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(devices=[d.name for d in gpus])
        # CPU replicas (tests, CPU-only machines): CPU collectives keep process-global
        # instance keys, so a second strategy in one process would collide with the
        # first; reducing through one device avoids collectives altogether.
        return tf.distribute.MirroredStrategy(
            devices=[d.name for d in tf.config.list_logical_devices("CPU")],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}")


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The --strategy value that names this strategy."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    return "default"


def cpu_has_bf16() -> bool:
    """True when the CPU advertises AVX-512-BF16 or AMX (bf16 is then faster than fp32)."""
    try:
        flags = io.read_text("/proc/cpuinfo")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


# Models whose depthwise convolutions run slower in bfloat16 than in float32 on CPUs
# (oneDNN): EfficientNet-Lite0 trained at 72 img/s in bf16 vs 138 in float32 at 128 px
# on a 2-core AMD EPYC with AMX (BUILD_NOTES, training-step table).
CPU_FLOAT32_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                      "efficientnetv2_b0")


def resolve_precision(name: str, model: str = "") -> str:
    """auto: bf16 on Ampere+ GPUs, fp16 on compute capability 7.x, bf16 on CPUs with
    AVX-512-BF16/AMX (float32 there for the depthwise-convolution models of
    CPU_FLOAT32_MODELS), else float32."""
    if name != "auto":
        if name not in choices(TrainConfig, "mixed_precision"):
            raise ValueError(f"unknown mixed precision policy {name!r}")
        return name
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        caps = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                for g in gpus]
        major = min(c[0] for c in caps)
        return "mixed_bfloat16" if major >= 8 else "mixed_float16" if major >= 7 else "float32"
    if model in CPU_FLOAT32_MODELS:
        return "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes the model dir (every single-worker run)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker gets here (an all-reduce of ones)."""
    all_agree(strategy, True)


def all_agree(strategy: tf.distribute.Strategy, ok: bool) -> bool:
    """True if every worker passed `ok=True`: a collective vote.

    Why: when the chief refuses to start (model dir locked or owned by another run), the
    other workers must stop too instead of waiting forever in the first all-reduce.
    """
    votes = strategy.run(lambda: tf.constant(1.0 if ok else 0.0))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)
    return float(total) >= strategy.num_replicas_in_sync


def cuda_packages() -> List[str]:
    """NVIDIA wheels that `pip install tensorflow[and-cuda]` (the `[gpu]` extra) brings."""
    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith(("nvidia-cudnn", "nvidia-cuda-runtime", "nvidia-cublas")):
            names.add(name)
    return sorted(names)


def startup_warnings(strategy: str, replicas: int, num_gpus: int,
                     cuda: Sequence[str]) -> List[str]:
    """One clear line per set-up that is probably not what the user meant."""
    out = []
    if strategy == "mirrored" and replicas == 1:
        out.append("--strategy=mirrored with 1 device: nothing runs in parallel; use "
                   "--strategy=default, or more GPUs (or --cpu_devices=N for tests)")
    if num_gpus == 0 and cuda:
        out.append(f"tensorflow[and-cuda] is installed ({', '.join(cuda)}) but TensorFlow "
                   "sees no GPU: training runs on the CPU; check the NVIDIA driver "
                   "(nvidia-smi) and CUDA_VISIBLE_DEVICES")
    return out


def log_startup(strategy: tf.distribute.Strategy, precision: str, global_batch: int,
                steps: int) -> List[str]:
    """Log what the run computes on; returns the warnings (also logged)."""
    gpus = tf.config.list_physical_devices("GPU")
    devices = [d.name for d in tf.config.list_logical_devices()
               if d.device_type in ("CPU", "GPU", "TPU")]
    replicas = strategy.num_replicas_in_sync
    name = strategy_name(strategy)
    log.info("devices: %s (%d GPU%s)", ", ".join(devices) or "none", len(gpus),
             "" if len(gpus) == 1 else "s")
    log.info("strategy %s, %d replica%s, precision %s, global batch %d = %d per replica, "
             "%d steps/epoch, chief=%s", name, replicas, "" if replicas == 1 else "s",
             precision, global_batch, global_batch // max(1, replicas), steps,
             is_chief(strategy))
    warnings = startup_warnings(name, replicas, len(gpus), cuda_packages() if not gpus else [])
    for w in warnings:
        log.warning("%s", w)
    return warnings
