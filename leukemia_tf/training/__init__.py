"""Training: `run(cfg)` trains, checkpoints, exports and summarises one model.

    from leukemia_tf import training
    summary = training.run(cfg)

Split by concern, in the order a run uses them:
  inputs.py        config and records checks before anything is written
  rundir.py        the model dir a run owns: config check, lock, resume, --overwrite
  distribution.py  devices, strategy, precision, the chief, the start-up log
  objectives.py    optimizer, loss, metrics (WeightedF1)
  step_settings.py jit_compile auto|on|off, steps_per_execution, TensorFlow's thread pools
  callbacks.py     NaN guard, progress, history.csv, best checkpoint, backup
  progress_callback.py  what the user sees: bar / log lines per epoch, phases, SUMMARY
  loop.py          run(cfg)
"""
from leukemia_tf.training.distribution import (  # noqa: F401
    cpu_has_bf16, is_chief, make_strategy, resolve_precision, split_cpu, strategy_name)
from leukemia_tf.training.errors import (  # noqa: F401
    InputError, RunDirError, TrainingError, expected_error)
from leukemia_tf.training.loop import run  # noqa: F401
from leukemia_tf.training.objectives import (  # noqa: F401
    WeightedF1, make_loss, make_metrics, make_optimizer)
