"""`run(cfg)`: check, claim the model dir, train, export and summarise one model.

The order is the contract: everything that can fail from a bad flag or bad records
(config, manifest, shards, model build, model dir ownership) fails before anything is
written; config.json is written once the model is built and the lock is held; weights are
exported only when finite; summary.json is written last and marks the run finished.
"""
from __future__ import annotations

import logging
import time

import tensorflow as tf
import tf_keras as keras

from leukemia_tf import io, provenance, signals
from leukemia_tf.config import Config
from leukemia_tf.data import duplicates, grouping, shard_check
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.data import pipeline
from leukemia_tf.data.pipeline import parser, reader
from leukemia_tf.metrics import classification as metrics
from leukemia_tf.inference import scoring, stored_calibration
from leukemia_tf.model import export, registry
from leukemia_tf.training import callbacks as cb
from leukemia_tf.training import distribution as dist
from leukemia_tf.training import preflight
from leukemia_tf.training import objectives, rundir, step_settings
from leukemia_tf.training import console
from leukemia_tf.training.trainer_errors import InputError, RunDirError
from leukemia_tf.wording import count

log = logging.getLogger("leukemia_tf.training")


def _setup(cfg: Config):
    t = cfg.train
    step_settings.apply_threads(t)  # before the runtime starts (split_cpu starts it)
    if t.strategy != "multi_worker":
        dist.split_cpu(t.cpu_devices)
    strategy = dist.make_strategy(t.strategy)
    if cfg.data.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.data.seed)
    precision = dist.resolve_precision(t.mixed_precision, cfg.model.name)
    keras.mixed_precision.set_global_policy(precision)
    if t.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"global batch {t.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")
    return strategy, precision


def _claim(cfg: Config, strategy, chief: bool, lock: rundir.Lock, data) -> rundir.State:
    """Chief: lock and prepare the model dir. Every worker learns whether it may go on."""
    state, failure = None, None
    if chief:
        try:
            records = provenance.records_record(
                cfg.data.records_dir, data.manifest_sha256,
                {"train": (data.train_sel.name, data.num_train),
                 "validation": (data.val_sel.name, data.num_val)})
            state = rundir.take(cfg, lock, records)
        except Exception as e:  # noqa: BLE001 - re-raised below, after the vote
            failure = e
    if dist.is_multi_worker(strategy):
        if not dist.all_agree(strategy, failure is None):
            if failure is None:
                raise RunDirError(f"the chief worker refused to start in "
                                  f"{cfg.train.model_dir}: see its log")
            raise failure
    elif failure is not None:
        raise failure
    return state or rundir.State("resume")


def make_callbacks(cfg: Config, chief: bool):
    """(callback list, guard, throughput) in the order their saves must happen."""
    t = cfg.train
    guard, throughput = cb.NanGuard(), cb.Throughput(t.batch_size)
    out = [guard, throughput, cb.BestCheckpoint(t.model_dir, t.monitor, chief, guard)]
    if chief:
        out.append(cb.CsvHistory(io.join(t.model_dir, "history.csv")))
        if t.tensorboard:
            out.append(keras.callbacks.TensorBoard(
                t.tensorboard_dir or io.join(t.model_dir, "logs"), update_freq="epoch"))
    if t.early_stopping_patience:  # a validation monitor (`last` is refused with it)
        key, mode = rundir.MONITOR_KEYS[t.monitor]
        out.append(keras.callbacks.EarlyStopping(key, mode=mode,
                                                 patience=t.early_stopping_patience))
    # Keras counts backup frequency in calls of the train function (steps_per_execution
    # steps each): converted so backup_every_steps stays in steps.
    every = t.backup_every_steps and max(1, t.backup_every_steps // t.steps_per_execution)
    out.append(cb.Backup(io.join(t.model_dir, rundir.BACKUP),
                         every or cb.Backup.EPOCH_ENDS_ONLY, guard))
    return out, guard, throughput


def _nan_message(cfg: Config, nan_at) -> str:
    md = cfg.train.model_dir
    epoch, step, loss = nan_at
    kept = []
    if rundir.has_backup(md):
        kept.append(f"the last good backup is in {io.join(md, rundir.BACKUP)} (same flags "
                    "resume from it)")
    best = rundir.best_state(md)
    if best:
        kept.append(f"the best weights are in {io.join(md, rundir.BEST)} (epoch "
                    f"{best['epoch']}, {best['monitor']} {best['best']:.4f})")
    return (f"training stopped: the loss became {loss} at step {step} of epoch {epoch}; "
            f"nothing was exported. {'; '.join(kept) or 'No finite weights were saved'}. "
            "Try a lower --learning_rate, --mixed_precision=float32, or check the records "
            f"with leukemia-convert --output_dir={cfg.data.records_dir} --verify; other "
            "settings need --overwrite or a new --model_dir.")


def _fit(cfg, model, data, steps, weights, plan, chief, display=None, extra=()):
    batch = cfg.train.batch_size
    # --deterministic: a resumed run reads the training stream on from the backup's step,
    # as the uninterrupted run would (passing over what was read: from the cache, or
    # decoded again without one). Otherwise it starts a fresh stream.
    done = rundir.backup_steps(cfg.train.model_dir) if cfg.data.deterministic else 0

    def train_fn(input_context):
        return pipeline.make_dataset(cfg.data, data.train_sel, training=True,
                                     batch_size=batch, manifest=data.manifest,
                                     cache=plan["train"][0], input_context=input_context,
                                     weights=weights,
                                     skip=done * batch // input_context.num_input_pipelines)
    train_input = train_fn
    val_ds = pipeline.make_dataset(cfg.data, data.val_sel, training=False, batch_size=batch,
                                   manifest=data.manifest, cache=plan["validation"][0])
    if cfg.train.steps_per_execution > 1:  # Keras then needs the number of val batches
        val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(
            -(-data.num_val // cfg.train.batch_size)))
    callbacks, guard, throughput = make_callbacks(cfg, chief)
    callbacks.insert(0, preflight.manifest_pin(cfg.data.records_dir, data.manifest_sha256))
    # The caller's callbacks before the backup: an epoch whose extra work was cut short
    # is repeated on resume, not skipped.
    callbacks[-1:-1] = list(extra) if chief else []
    callbacks += [display] if display is not None else []
    try:
        with signals.deferred():  # a signal stops at the next step's end (cb.Backup)
            history = model.fit(keras.utils.experimental.DatasetCreator(train_input),
                                epochs=cfg.train.epochs, steps_per_epoch=steps,
                                validation_data=val_ds, callbacks=callbacks,
                                verbose=console.keras_verbose(cfg, chief))
    except tf.errors.DataLossError as e:
        shards = [s for sel in (data.train_sel, data.val_sel)
                  for s in manifest_lib.shards_for(data.manifest, cfg.data.records_dir, sel)]
        named = shard_check.corrupt_shard_error(shards, error=InputError)
        if named is None:
            raise
        raise named from e
    if guard.tripped:
        raise FloatingPointError(_nan_message(cfg, guard.nan_at))
    return history, throughput


def _export(cfg, strategy, model, chief, manifest, display=None):
    """Load the best weights (if any), refuse non-finite ones, export (chief) with the
    records' preprocessing spec (canvas, size, resize method)."""
    md = cfg.train.model_dir
    if dist.is_multi_worker(strategy):
        dist.barrier(strategy)  # the chief's best checkpoint is complete before anyone reads it
    rundir.load_best(model, md)
    if not cb.weights_finite(model):
        raise FloatingPointError(f"the weights to export are not finite; nothing was "
                                 f"exported to {md}")
    # The exported copy is a plain single-device model: a SavedModel cannot hold functions
    # over distributed variables, and scoring it needs no other replica or worker. Reading
    # the weights is collective under multi-worker, so every worker takes part.
    plain = registry.build_model(cfg.model, cfg.data.image_size)
    plain.set_weights(model.get_weights())
    if chief:
        _say(display, f"exporting the best weights to {md} (model.keras, export/)")
        spec = parser.records_spec(manifest, cfg.data.image_size)
        export.export_model(plain, md, spec)
        if cfg.train.serving_dir:  # the platform's model dir (AIP_MODEL_DIR)
            _say(display, f"exporting the servable model to {cfg.train.serving_dir} "
                 "(SavedModel, model.keras)")
            export.export_model(plain, cfg.train.serving_dir, spec, at_root=True)
    return plain


def run(cfg: Config, callbacks=(), inputs: preflight.Inputs = None) -> dict:
    """Train `cfg.model` on `cfg.data`, export it and return the summary.

    `callbacks`: more Keras callbacks for the chief (a study's per-epoch scoring,
    crossval.heldout), called after each epoch's best-weights save and before its
    backup. `inputs`: the records as `preflight.prepare` checked them for this `cfg`
    (the entry point checks them before TensorFlow loads); None: checked here.

    Writes (chief only) into cfg.train.model_dir: train.lock (while running),
    config.json, trained_on.json, history.csv, best/, backup/ (the last state), logs/,
    export/ (SavedModel), model.keras, summary.json. A model dir whose run already
    finished with the same settings is left as it is: the stored summary is returned
    with status "finished".

    Raises:
      ValueError: invalid settings. TrainingError (RunDirError, InputError): the model
      dir or the records cannot be used. FloatingPointError: the loss diverged.
      signals.Stopped: SIGTERM or SIGINT (`leukemia_tf.signals`). Training stops at the
      next step's end, after a backup of that step; preparation, export and scoring stop
      at once. The lock is released; the message names where the run stopped, and the
      same command resumes from there.
    """
    phase = ["before training"]
    with signals.handled():
        try:
            return _run(cfg, callbacks, phase, inputs)
        except signals.Stopped as e:
            e.where = e.where or phase[0]
            raise


def _run(cfg: Config, callbacks, phase: list, inputs) -> dict:
    """`run` inside the signal handlers; `phase[0]` says what it is doing."""
    t, d = cfg.train, cfg.data
    preflight.check_config(cfg)
    start = time.time()
    strategy, precision = _setup(cfg)
    signals.reinstall()  # after the strategy: multi-worker start-up replaces SIGTERM's
    chief = dist.is_chief(strategy)
    state = rundir.inspect(cfg)
    if state.status == "finished":
        log.info("%s already holds a finished run of these settings (%s): nothing to do; "
                 "--overwrite trains it again", t.model_dir, rundir.SUMMARY)
        return {**state.summary, "status": "finished", "chief": chief}
    data = inputs if inputs is not None else preflight.prepare(cfg)
    steps = t.steps_per_epoch or data.num_train // t.batch_size
    weights = objectives.class_weights(grouping.label_counts(data.manifest, data.train_sel, d))
    plan = _cache_plan(cfg, data)
    warnings = dist.log_startup(strategy, precision, t.batch_size, steps)
    for w in duplicates.leak_warnings(data.leaked_groups, d.train_folds, d.val_split):
        log.warning("%s", w)
        warnings.append(w)
    model = _build(cfg, strategy, steps, precision)
    for line in console.model_lines(cfg, model, precision):
        log.info("%s", line)
    lock = rundir.Lock(t.model_dir)
    try:
        state = _claim(cfg, strategy, chief, lock, data)
        if state.status == "finished":  # finished by another trainer while we started
            return {**rundir.read_summary(t.model_dir), "status": "finished", "chief": chief}
        display = console.display_for(cfg, chief, steps, data.num_val, plan)
        if display is None and chief and plan.get("train", ("none",))[0] != "none":
            log.info("the first epoch of this run reads, decodes and preprocesses %s once "
                     "and caches them (slower); later epochs read the cache",
                     count(data.num_train, "training image"))
        phase[0] = "while training"
        history, throughput = _fit(cfg, model, data, steps, weights, plan, chief,
                                   display, callbacks)
        preflight.check_pinned(d.records_dir, data.manifest_sha256)
        phase[0] = "while exporting (the export is redone)"
        plain = _export(cfg, strategy, model, chief, data.manifest, display)
        summary = _run_summary(cfg, strategy, precision, chief, steps, throughput, plan,
                               weights, data, model, warnings)
        if not chief:
            return summary
        _say(display, f"scoring the exported model on {console.scored_split(cfg)}, "
             f"{count(data.num_val, 'image')}, and bootstrapping intervals")
        phase[0] = "while scoring the exported model (export and scoring are redone)"
        _score(cfg, data, plain, summary)
        summary["seconds"] = round(time.time() - start, 1)
        summary["history"] = {k: [float(x) for x in v] for k, v in history.history.items()}
        io.write_json(io.join(t.model_dir, rundir.SUMMARY), summary)
        console.print_summary(cfg, summary)
        return summary
    finally:
        if lock.held:  # a failed save's temporaries (weights_temp/) are ours to remove
            rundir.remove_temporaries(t.model_dir)
        lock.release()


def _run_summary(cfg: Config, strategy, precision: str, chief: bool, steps: int, throughput,
                 plan: dict, weights: dict, data, model, warnings: list) -> dict:
    """summary.json's facts about the run (the scores are added by `_score`)."""
    t = cfg.train
    return {"status": "ok", "model": cfg.model.name, "strategy": dist.strategy_name(strategy),
            "replicas": strategy.num_replicas_in_sync, "precision": precision,
            "chief": chief, "epochs": t.epochs, "steps_per_epoch": steps,
            **_progress_summary(throughput, t.model_dir),
            "cache": {k: v[0] for k, v in plan.items()}, "class_weights": weights,
            "num_train": data.num_train, "num_val": data.num_val,
            "val_split": cfg.data.val_split, "monitor": t.monitor,
            "params": int(model.count_params()),
            "warnings": warnings}


def _build(cfg: Config, strategy, steps: int, precision: str) -> keras.Model:
    with strategy.scope():
        model = registry.build_model(cfg.model, cfg.data.image_size)
        model.compile(optimizer=objectives.make_optimizer(cfg, steps, precision, model),
                      loss=objectives.make_loss(cfg), metrics=objectives.make_metrics(),
                      **step_settings.compile_kwargs(cfg.train, precision))
    return model


def _progress_summary(throughput: cb.Throughput, model_dir: str) -> dict:
    """Where this invocation started (epochs from 1), its speed and the best epoch."""
    out = {"first_epoch": throughput.first_epoch,
           "resumed_from_step": throughput.resumed_from_step,
           "train_images_per_sec": throughput.images_per_sec}
    best = rundir.best_state(model_dir)
    if best:
        out["best_epoch"] = best["epoch"]
    return out


def _cache_plan(cfg: Config, data) -> dict:
    plan = reader.cache_plan(cfg.data, [("train", data.num_train),
                                        ("validation", data.num_val)])
    shown = {"train": "the training folds", "validation": console.scored_split(cfg)}
    for name, (mode, why) in plan.items():
        log.info("cache for %s: %s (%s)", shown.get(name, name), mode, why)
    return plan


def _say(display, text: str) -> None:
    """A phase line on the display, or in the log when there is no display (once)."""
    if display is not None:
        display.phase(text)
    else:
        log.info("%s", text)


def _score(cfg: Config, data, plain, summary: dict) -> None:
    """Exact validation metrics of the exported weights (sklearn ROC AUC: `roc_auc`), on
    the records the run trained on; the records' and model.keras's sha256 (`provenance`)."""
    predict_fn = scoring.keras_predict_fn(plain)
    eval_ds = pipeline.make_dataset(cfg.data, data.val_sel, training=False,
                                    batch_size=cfg.train.batch_size, manifest=data.manifest,
                                    with_metadata=True)
    scores = scoring.score_dataset(predict_fn, eval_ds)
    provenance.check_records(  # the records may be converted again while they are read
        cfg.train.model_dir, cfg.data.records_dir, error=InputError,
        remedy=f"the exported model was scored on other records, so {rundir.SUMMARY} and "
               "calibration.json were not written; restore the records it trained on and "
               "run the same command to finish, or --overwrite")
    summary["validation"] = metrics.classification_metrics(scores["label"],
                                                           scores["probability"])
    summary["weighted_f1"] = summary["validation"]["weighted_f1"]
    summary["validation_ci"] = metrics.confidence_intervals(
        scores["label"], scores["probability"], scores["patient_id"])
    summary["calibration"] = stored_calibration.fit_and_store(
        cfg.train.model_dir, scores, cfg.data.val_split)
    labeled = scores[scores["label"] >= 0].assign(
        prediction=lambda f: (f["probability"] >= 0.5).astype(int))
    if len(labeled):  # per held-out patient (grouped CV reports the worst one)
        summary["per_patient"] = metrics.per_patient(labeled).to_dict("records")
    summary.update(provenance.run_facts(cfg.train.model_dir))
