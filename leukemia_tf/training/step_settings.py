"""How the train step executes: XLA, steps per tf.function call, TensorFlow's threads.

None of these change what is computed (XLA may reorder float operations); they change
how fast. `resolve_jit` is the one place where `jit_compile=auto` is decided; its rule
is meant to follow the benchmark's training-step table (`leukemia-bench train --sweep`).
"""
from __future__ import annotations

import logging

import tensorflow as tf

from leukemia_tf.config import TrainConfig

log = logging.getLogger("leukemia_tf.training")
JIT = ("auto", "on", "off")


def resolve_jit(setting, device: str, precision: str) -> bool:
    """jit_compile auto|on|off (or a bool, as older config.json files hold) -> bool.

    auto: off on CPU, on on GPU/TPU (host overhead per step dominates small CNNs there).
    `precision` is part of the rule's inputs so a measured exception can be added here.
    """
    del precision  # the rule does not depend on it yet
    if isinstance(setting, bool):
        return setting
    if setting not in JIT:
        raise ValueError(f"jit_compile must be one of {', '.join(JIT)}, not {setting!r}")
    if setting != "auto":
        return setting == "on"
    return device.upper() in ("GPU", "TPU")


def device_kind() -> str:
    """GPU, TPU or CPU: the devices training would run on."""
    for kind in ("TPU", "GPU"):
        if tf.config.list_logical_devices(kind):
            return kind
    return "CPU"


def apply_threads(t: TrainConfig) -> None:
    """Set TensorFlow's inter-/intra-op thread pools (before the runtime starts)."""
    for value, setter, getter in (
            (t.inter_op_threads, tf.config.threading.set_inter_op_parallelism_threads,
             tf.config.threading.get_inter_op_parallelism_threads),
            (t.intra_op_threads, tf.config.threading.set_intra_op_parallelism_threads,
             tf.config.threading.get_intra_op_parallelism_threads)):
        if value < 0:
            raise ValueError(f"thread counts must be >= 0 (0 = TensorFlow's choice), not "
                             f"{value}")
        if value and getter() != value:
            try:
                setter(value)
            except RuntimeError as e:  # the runtime already started with other pools
                raise RuntimeError(f"cannot set TensorFlow's thread pools to {value} after "
                                   f"it started: {e}") from e


def compile_kwargs(t: TrainConfig, precision: str) -> dict:
    """jit_compile and steps_per_execution for keras.Model.compile, resolved and logged."""
    if t.steps_per_execution < 1:
        raise ValueError(f"steps_per_execution must be >= 1, not {t.steps_per_execution}")
    kind = device_kind()
    jit = resolve_jit(t.jit_compile, kind, precision)
    log.info("train step: jit_compile=%s (setting %s on %s, %s), steps_per_execution=%d, "
             "threads inter_op=%s intra_op=%s", jit, t.jit_compile, kind, precision,
             t.steps_per_execution, t.inter_op_threads or "auto",
             t.intra_op_threads or "auto")
    return {"jit_compile": jit, "steps_per_execution": t.steps_per_execution}
