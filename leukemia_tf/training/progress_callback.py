"""What a user sees while a model trains: progress within each epoch, a line per phase,
and the summary at the end.

In a terminal each epoch gets a tqdm bar (step/steps, loss, ETA of the epoch); in a log
file or CI console (stream not a terminal) the same progress is a plain line every
`interval` seconds: epoch, step/steps, images/s, ETA of the epoch and of the run. A bar's
carriage returns would turn a log into one enormous line, hence the two forms (as in
leukemia_tf.progress). Phases that are otherwise silent get a line each: the decode and
cache fill of epoch 1, every validation pass, the export and the final scoring.

Keras' own `fit` output is off while this callback prints (`verbose=0` to fit);
TrainConfig.keras_progress brings it back instead.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

import tf_keras as keras

from leukemia_tf.progress import _isatty


def duration(seconds: Optional[float]) -> str:
    """`75.2` -> "1m15s"; `3725` -> "1h02m"; None -> "?"."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class EpochProgress(keras.callbacks.Callback):
    """Progress of `model.fit`: bar or periodic lines per epoch, phase lines, epoch lines.

    Args:
      steps: training steps per epoch.
      epochs: the run's last epoch (1-based; a resumed run starts later).
      global_batch: images per step, for images/s.
      num_val: validation images (named in the validation pass line), or None.
      cache_fill: epoch 1 reads, decodes and caches the training images (it says so).
      stream: where to write (default sys.stdout, looked up when created).
      interval: seconds between plain lines when `stream` is not a terminal.
      bar: force the tqdm bar on/off (default: when `stream` is a terminal).
    """

    def __init__(self, steps: int, epochs: int, global_batch: int,
                 num_val: Optional[int] = None, cache_fill: bool = False,
                 stream: Optional[TextIO] = None, interval: float = 30.0,
                 bar: Optional[bool] = None):
        super().__init__()
        self.steps, self.epochs, self.global_batch = int(steps), int(epochs), global_batch
        self.num_val, self.cache_fill, self.interval = num_val, cache_fill, interval
        self.stream = stream if stream is not None else sys.stdout
        self.use_bar = _isatty(self.stream) if bar is None else bar
        self._bar = None
        self._epoch = 0
        self._epoch_times = []
        self._run_start = self._epoch_start = self._last_line = self._val_start = 0.0
        self._step = 0

    def say(self, text: str) -> None:
        """One line on the stream (above the bar, if one is drawn)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def phase(self, text: str) -> None:
        """A line naming a phase of the run (export, final scoring, ...)."""
        self.say(f"[{time.strftime('%H:%M:%S')}] {text}")

    def on_train_begin(self, logs=None):
        self._run_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch + 1, 0
        self._epoch_start = self._last_line = time.perf_counter()
        if self._epoch == 1 and self.cache_fill:
            self.phase(f"epoch 1/{self.epochs}: reading, decoding and caching the training "
                       "images as they are first used (slower; later epochs read the cache)")
        if self.use_bar:
            from tqdm import tqdm
            self._bar = tqdm(total=self.steps, desc=f"epoch {self._epoch}/{self.epochs}",
                             unit="step", file=self.stream, leave=False, smoothing=0.1,
                             dynamic_ncols=True)

    def _run_eta(self, epoch_eta: Optional[float]) -> Optional[float]:
        """Seconds left in the run: this epoch's remainder plus the later epochs, each
        as long as the last full epoch (epoch 1 fills the cache: it is not typical)."""
        if epoch_eta is None:
            return None
        typical = self._epoch_times[-1] if self._epoch_times else None
        if typical is None:  # within the first epoch of this invocation: its own pace
            typical = (time.perf_counter() - self._epoch_start) + epoch_eta
        return epoch_eta + typical * (self.epochs - self._epoch)

    def on_train_batch_end(self, batch, logs=None):
        self._step = batch + 1
        loss = (logs or {}).get("loss")
        if self._bar is not None:
            self._bar.update(1)
            if loss is not None:
                self._bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_line < self.interval:
            return
        self._last_line = now
        elapsed = now - self._epoch_start
        rate = self._step / elapsed if elapsed > 0 else 0.0
        epoch_eta = (self.steps - self._step) / rate if rate > 0 else None
        loss_text = "" if loss is None else f", loss {float(loss):.4f}"
        self.say(f"epoch {self._epoch}/{self.epochs} step {self._step}/{self.steps}"
                 f"{loss_text}, {rate * self.global_batch:.1f} img/s, epoch ETA "
                 f"{duration(epoch_eta)}, run ETA {duration(self._run_eta(epoch_eta))}")

    def on_test_begin(self, logs=None):
        self._val_start = time.perf_counter()
        if self._bar is not None:
            self._bar.set_description_str(f"epoch {self._epoch}/{self.epochs} validating")
        else:
            what = f" ({self.num_val} images)" if self.num_val else ""
            self.say(f"epoch {self._epoch}/{self.epochs}: validation pass{what}")

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        seconds = time.perf_counter() - self._epoch_start
        self._epoch_times.append(seconds)
        logs = logs or {}
        keys = ("loss", "weighted_f1", "val_loss", "val_weighted_f1")
        shown = [f"{k} {float(logs[k]):.4f}" for k in keys if k in logs]
        val = time.perf_counter() - self._val_start if self._val_start else None
        left = seconds * (self.epochs - self._epoch)
        self.say(f"epoch {self._epoch}/{self.epochs} done in {duration(seconds)}"
                 f"{f' (validation {duration(val)})' if val is not None else ''}: "
                 f"{', '.join(shown)}; run ETA {duration(left)}")
        self._val_start = 0.0

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def display_for(cfg, chief: bool, steps: int, num_val: int, plan: dict
                ) -> Optional[EpochProgress]:
    """The run's progress display, or None: not the chief, `verbose=0`, or Keras' own
    output asked for (`keras_progress`)."""
    t = cfg.train
    if not chief or not t.verbose or getattr(t, "keras_progress", False):
        return None
    return EpochProgress(steps, t.epochs, t.batch_size, num_val=num_val,
                         cache_fill=plan.get("train", ("none",))[0] != "none")


def keras_verbose(cfg, chief: bool) -> int:
    """`verbose` for model.fit: Keras prints only when asked to instead of the display."""
    t = cfg.train
    return t.verbose if chief and getattr(t, "keras_progress", False) else 0


def phase(display: Optional[EpochProgress], text: str) -> None:
    """A phase line on the display (nothing when there is none)."""
    if display is not None:
        display.phase(text)


def _patient_rows(per_patient: list) -> list:
    """(patient, truth, cells, fraction called ALL, call, correct) from the trainer's
    per-patient records; a patient is called ALL when most of its cells are (a tie by
    the mean probability), as in evaluation.patients."""
    rows = []
    for r in per_patient:
        label, accuracy = int(r["label"]), float(r["accuracy"])
        frac = accuracy if label == 1 else 1.0 - accuracy
        call = int(frac > 0.5 or (frac == 0.5 and r["mean_probability"] >= 0.5))
        rows.append((str(r["patient_id"]), label, int(r["images"]), frac, call))
    return rows


_MONITOR_PHRASES = {"val_auc": "highest validation ROC AUC",
                    "val_loss": "lowest validation loss",
                    "val_weighted_f1": "highest validation weighted F1",
                    "last": "the last epoch: --monitor=last chooses none"}


def monitor_phrase(monitor: str) -> str:
    """How `train.monitor` chose the exported epoch, in words."""
    return _MONITOR_PHRASES[monitor]


def format_summary(cfg, summary: dict, max_patients: int = 20) -> str:
    """The end-of-training summary: best epoch, the selection split's weighted F1 and
    ROC AUC with bootstrap intervals, the per-patient table, where the model is and how
    to get the report."""
    from leukemia_tf.evaluation import metrics
    t, d = cfg.train, cfg.data
    names = {0: "hem", 1: "ALL"}
    v = summary.get("validation", {})
    ci = summary.get("validation_ci")
    lines = ["", "SUMMARY",
             f"  best epoch {summary.get('best_epoch', '?')} of {t.epochs} "
             f"({monitor_phrase(t.monitor)})",
             f"  on {d.val_split}: the selection split (it chose the best epoch, so these "
             "numbers are optimistic; evaluate a held-out split for an unbiased estimate)",
             f"    weighted F1  {metrics.format_ci(ci, 'weighted_f1', 3)}",
             f"    ROC AUC      {metrics.format_ci(ci, 'roc_auc', 3)}",
             f"    images       {v.get('num_examples', '?')} ({v.get('support_all', '?')} ALL, "
             f"{v.get('support_hem', '?')} hem)"]
    if ci and ci.get("note"):
        lines.append(f"    note: {ci['note']}")
    for w in metrics.small_n_warnings(v, ci) if v else []:
        lines.append(f"    WARNING: {w}")
    per_patient = summary.get("per_patient") or []
    if per_patient and metrics.known_patients([r["patient_id"] for r in per_patient]):
        rows = _patient_rows(per_patient)
        right = sum(call == label for _, label, _, _, call in rows)
        lines += [f"  per patient ({right} of {len(rows)} called right; a patient is called "
                  "ALL when most of its cells are; worst first):",
                  f"    {'patient':<10}{'truth':<7}{'cells':>6}{'called ALL':>12}  correct"]
        for pid, label, cells, frac, call in rows[:max_patients]:
            lines.append(f"    {pid:<10}{names[label]:<7}{cells:>6}{frac:>12.0%}  "
                         f"{'yes' if call == label else 'NO'}")
        if len(rows) > max_patients:
            lines.append(f"    ... {len(rows) - max_patients} more in summary.json")
    else:
        lines.append("  per patient: patient ids unknown for this split")
    md = t.model_dir.rstrip("/")
    ips = summary.get("train_images_per_sec")
    lines += [f"  model: {md}/export (SavedModel), {md}/model.keras",
              f"  training: {f'{ips:.1f} images/s' if ips else 'speed not measured'}, "
              f"{duration(summary.get('seconds'))} in all",
              f"  report: leukemia-evaluate --model_dir={md} --records_dir={d.records_dir} "
              f"--split=<split> writes {md}/eval/<split>/report.md"]
    return "\n".join(lines)


def print_summary(cfg, summary: dict, stream: Optional[TextIO] = None) -> None:
    """Prints `format_summary` (chief, verbose > 0) on `stream` (default stdout)."""
    if cfg.train.verbose and summary.get("chief", True):
        print(format_summary(cfg, summary), file=stream or sys.stdout, flush=True)
