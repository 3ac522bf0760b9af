"""Training: `run(cfg)` trains, checkpoints, exports and summarises one model.

    from leukemia_tf import training
    summary = training.run(cfg)

Split by concern, in the order a run uses them:
  trainer_errors.py the trainer's expected failures (model dir, records, a lost worker) and
                   the one line its entry point prints for them
  preflight.py     config and records checks before anything is written
  rundir.py        the model dir a run owns: config check, lock, resume, --overwrite
  distribution.py  devices, strategy, precision, the chief, the start-up log
  objectives.py    optimizer, loss, metrics (WeightedF1)
  step_settings.py jit_compile auto|on|off, steps_per_execution, TensorFlow's thread pools
  callbacks.py     NaN guard, throughput (images/s), history.csv, best checkpoint, backup
  console.py       what the user sees: bar / log lines per epoch, phases, SUMMARY
  loop.py          run(cfg)

Importing the package loads no TensorFlow: its names below are looked up on first use,
so the trainer's entry point can check a model dir (rundir.py) before TensorFlow loads.
"""
import importlib

_EXPORTS = {
    "distribution": ("cpu_has_bf16", "is_chief", "make_strategy", "resolve_precision",
                     "split_cpu", "strategy_name"),
    "loop": ("run",),
    "objectives": ("WeightedF1", "make_loss", "make_metrics", "make_optimizer"),
    "trainer_errors": ("InputError", "RunDirError", "TrainingError", "expected_error"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
