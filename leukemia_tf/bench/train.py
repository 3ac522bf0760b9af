"""Training-step benchmarks: images/s of the real train step, its FLOP utilisation of
this machine, and the step settings side by side.

`train_rates` builds the model and train step as `training.run` does (the same
optimizer, loss, metrics, precision policy and compile settings) and times it fed by the
real pipeline (after its cache is filled) and by one device-resident synthetic batch.
`sweep_rows` lists the settings the sweep compares (jit, steps_per_execution, precision,
threads); each row runs in its own process, since thread pools are set at start-up.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from leukemia_tf import config as C
from leukemia_tf.bench import limits
from leukemia_tf.data import pipeline
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data.pipeline import reader
from leukemia_tf.model import registry as models
from leukemia_tf.training import distribution, objectives, step_settings

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """One row of the training-step table."""
    model: str = "resnet_small"
    precision: str = "float32"
    jit_compile: str = "auto"
    steps_per_execution: int = 1
    inter_op_threads: int = 0
    intra_op_threads: int = 0

    @property
    def name(self) -> str:
        threads = (f"/threads{self.inter_op_threads}:{self.intra_op_threads}"
                   if self.inter_op_threads or self.intra_op_threads else "")
        return (f"train/{self.model}/{self.precision}/jit_{self.jit_compile}"
                f"/spe{self.steps_per_execution}{threads}")


def parse_threads(text: str) -> Tuple[int, int]:
    """`inter:intra` (0 = TensorFlow's choice) -> (inter, intra)."""
    inter, _, intra = text.partition(":")
    return int(inter or 0), int(intra or 0)


def sweep_rows(models: Sequence[str], precisions: Sequence[str], jit: Sequence[str],
               spe: Sequence[int], threads: Sequence[str]) -> List[StepSettings]:
    """Every combination, bfloat16 only where this CPU or GPU runs it natively."""
    native_bf16 = distribution.resolve_precision("auto") == "mixed_bfloat16"
    rows = []
    for m, p, j, s, t in itertools.product(models, precisions, jit, spe, threads):
        if "bfloat16" in p and not native_bf16:
            continue
        rows.append(StepSettings(m, p, j, int(s), *parse_threads(t)))
    return rows


def _synthetic_batch(batch: int, image_size: int):
    """One random batch on the training device, repeated: no input cost at all."""
    rng = np.random.default_rng(0)
    one = (tf.constant(rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8)),
           tf.constant(rng.integers(0, 2, (batch, 1)).astype(np.float32)),
           tf.ones([batch], tf.float32))
    ds = tf.data.Dataset.from_tensors(one).repeat()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        ds = ds.apply(tf.data.experimental.prefetch_to_device(gpus[0].name))
    return ds


def _time_steps(step, its: Dict[str, object], per_call: int, steps: int, rounds: int,
                profile_dir: str = "") -> Tuple[Dict[str, List[float]], List[float]]:
    """Blocks of calls alternate between the inputs (A B B A ...) so drift cancels."""
    for it in its.values():  # trace and warm up on every input
        for _ in range(2):
            step(it)["loss"].numpy()
    if profile_dir:
        tf.profiler.experimental.start(profile_dir)
        try:
            for _ in range(5):
                step(next(iter(its.values())))["loss"].numpy()
        finally:
            tf.profiler.experimental.stop()
    calls = max(2, math.ceil(steps / per_call))  # about `steps` steps per input
    rounds = max(1, min(rounds, calls))
    block = math.ceil(calls / rounds)
    times: Dict[str, List[float]] = {name: [] for name in its}
    per_round = []
    names = list(its)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            for _ in range(block):
                start = time.perf_counter()
                step(its[name])["loss"].numpy()
                times[name].append(time.perf_counter() - start)
        if len(names) == 2:
            per_round.append(sum(times[names[1]][-block:]) / sum(times[names[0]][-block:]))
    return times, per_round


def _build(cfg: C.Config, steps_per_epoch: int, precision: str):
    import tf_keras as keras  # noqa: F401  (the policy is set by the caller)
    model = models.build_model(cfg.model, cfg.data.image_size)
    kwargs = step_settings.compile_kwargs(cfg.train, precision)
    model.compile(optimizer=objectives.make_optimizer(cfg, steps_per_epoch, precision),
                  loss=objectives.make_loss(cfg), metrics=objectives.make_metrics(), **kwargs)
    return model, kwargs


def train_rates(records_dir: str, settings: StepSettings, image_size: int, batch: int,
                steps: int, rounds: int, augment: bool, synthetic_only: bool = False,
                flops_seconds: float = 2.0, profile_dir: str = "") -> dict:
    """Images/s of the train step fed by the real pipeline (cache filled first) and by a
    device-resident synthetic batch; FLOPs per image and this machine's dense FLOP/s,
    so `flop_utilisation` is the fraction of the machine the step uses."""
    import tf_keras as keras
    s = settings
    t = C.TrainConfig(batch_size=batch, mixed_precision=s.precision, jit_compile=s.jit_compile,
                      steps_per_execution=s.steps_per_execution,
                      inter_op_threads=s.inter_op_threads, intra_op_threads=s.intra_op_threads)
    step_settings.apply_threads(t)  # first: a spawned measurement has not started TF yet
    keras.mixed_precision.set_global_policy(s.precision)
    try:
        cfg = C.Config(data=C.DataConfig(records_dir=records_dir, image_size=image_size),
                       model=C.ModelConfig(name=s.model,
                                           augment=C.AugmentConfig(enabled=augment)),
                       train=t)
        manifest = manifest_lib.load(records_dir)
        n = manifest_lib.count_examples(manifest, manifest_lib.Selection("train"))
        model, compiled = _build(cfg, max(1, n // batch), s.precision)
        its, cache = _batches(cfg, manifest, n, synthetic_only)
        per_call = s.steps_per_execution
        times, per_round = _time_steps(model.make_train_function(), its, per_call, steps,
                                       rounds, profile_dir)
        out = _rates(times, per_call, batch)
        main = out["synthetic" if synthetic_only else "pipeline"]
        out.update(settings=dataclasses.asdict(s), jit_compile_resolved=compiled["jit_compile"],
                   steps=sum(len(v) for v in times.values()) * per_call // len(times),
                   batch=batch, cache=cache, model=s.model, precision=s.precision,
                   params=int(model.count_params()), images_per_sec=main["images_per_sec"])
        if not synthetic_only:
            out["ratio"] = main["images_per_sec"] / out["synthetic"]["images_per_sec"]
            out["ratio_of_means"] = (main["mean_steps_per_sec"]
                                     / out["synthetic"]["mean_steps_per_sec"])
            out["round_ratios"] = per_round
        out.update(_flops(model, image_size, batch, s.precision, flops_seconds))
        for name in times:
            out[name]["flop_utilisation"] = limits.utilisation(
                out["train_flops_per_image"], out[name]["images_per_sec"],
                out["machine"]["peak_flops_per_sec"])
        out["flop_utilisation"] = out[
            "synthetic" if synthetic_only else "pipeline"]["flop_utilisation"]
        return out
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _batches(cfg: C.Config, manifest: dict, n: int, synthetic_only: bool):
    """({"pipeline": the real pipeline with its cache filled, "synthetic": one
    device-resident batch repeated}, the cache used); only "synthetic" when asked."""
    batch = cfg.train.batch_size
    its = {"synthetic": iter(_synthetic_batch(batch, cfg.data.image_size))}
    if synthetic_only:
        return its, "none"
    sel = manifest_lib.Selection("train")
    cache = reader.cache_plan(cfg.data, [("train", n)])["train"][0]
    counts = manifest_lib.label_counts(manifest, cfg.data.records_dir, sel)
    real = pipeline.make_dataset(cfg.data, sel, training=True, batch_size=batch,
                                 manifest=manifest, cache=cache,
                                 weights=objectives.class_weights(counts))
    its = {"pipeline": iter(real), **its}
    for _ in range(math.ceil(n / batch) + 1):  # the first epoch fills the cache
        next(its["pipeline"])
    return its, cache


def _rates(times: dict, per_call: int, batch: int) -> dict:
    """Steps/s and images/s per feed from the timed calls (median: robust to bursts of
    other load on the machine; the mean beside it)."""
    out = {}
    for name, ts in times.items():
        med = float(np.median(ts))
        out[name] = {"steps_per_sec": per_call / med, "images_per_sec": batch * per_call / med,
                     "mean_steps_per_sec": per_call * len(ts) / sum(ts)}
    return out


def _flops(model, image_size: int, batch: int, precision: str, seconds: float) -> dict:
    """The model's FLOPs per image and the machine's dense FLOP/s in the compute dtype
    (float32, and bfloat16 too under mixed_bfloat16: the faster counts)."""
    out = limits.model_flops(model, image_size)
    conv = limits.heaviest_conv(model)
    dtypes = ["float32"] + (["bfloat16"] if "bfloat16" in precision else []) + (
        ["float16"] if "float16" in precision else [])
    machine = {d: limits.machine_flops(d, conv, batch, min_seconds=seconds) for d in dtypes}
    best = max(machine.values(), key=lambda m: m["peak_flops_per_sec"])
    out["machine"] = {"by_dtype": machine, "peak_flops_per_sec": best["peak_flops_per_sec"],
                      "peak_dtype": best["dtype"]}
    return out
