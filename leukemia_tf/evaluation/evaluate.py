"""Evaluate an exported model on a labeled split: metrics, per-patient table, plots, report.

Every image of the split is scored exactly once (pipeline without drop_remainder or
repeat; scoring refuses duplicates), optionally averaged over TTA views.

Each evaluation gets its own folder, `<eval root>/<split>[-<tta>][-thr_<how>]/` (root:
`<run dir>/eval` or --out_dir), so evaluating fold0 never erases the validation report;
`<eval root>/index.md` lists them all. Every number carries its split's role
(split_roles): held-out, selection or trained-on. Every file goes through leukemia_tf.io.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Optional, Sequence

import pandas as pd

import leukemia_tf
from leukemia_tf import io, provenance
from leukemia_tf.config import DataConfig, EvalConfig
from leukemia_tf.data import duplicates, pipeline, preprocess
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.inference import ensemble, scoring
from leukemia_tf.metrics import classification as metrics, split_roles
from leukemia_tf.reports import charts as plots, report
from leukemia_tf.inference import options
from leukemia_tf.reports import option_sections as options_report
from leukemia_tf.inference import shards
from leukemia_tf.evaluation.destinations import run_dir
from leukemia_tf.errors import UserError
from leukemia_tf.wording import count

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a model's run dir says about how the model was made (config.json,
    summary.json); empty dicts when absent (e.g. a bare export/)."""
    path: str
    config: dict
    summary: dict

    @property
    def train_folds(self) -> Optional[tuple]:
        folds = self.config.get("data", {}).get("train_folds")
        return None if folds is None else tuple(int(f) for f in folds)

    @property
    def val_split(self) -> Optional[str]:
        return self.config.get("data", {}).get("val_split")

    def role(self, split: str) -> str:
        return split_roles.role(split, self.train_folds, self.val_split)


def load_trained(path: str) -> TrainedRun:
    """Read config.json and summary.json of a run dir (any file system); UserError
    naming the file when one is not a JSON object."""
    found = {}
    for name in ("config", "summary"):
        file = io.join(path, f"{name}.json")
        found[name] = io.read_json(file) if io.exists(file) else {}
        if not isinstance(found[name], dict):
            raise UserError(f"{file} is not a run's {name} (a JSON object expected): "
                            "restore it from a copy of the run, or train again")
    if not found["config"]:
        log.warning("no config.json in %s: split roles are unknown", path)
    return TrainedRun(path, found["config"], found["summary"])


def split_role(split: str, trained: Sequence[TrainedRun]) -> str:
    """The split's role for these models (an ensemble: the worst of its members)."""
    return split_roles.worst(t.role(split) for t in trained)


def eval_name(split: str, tta: str, method: str, threshold_split: Optional[str]) -> str:
    """The folder of one evaluation: `<split>[-<tta>][-thr_<method>_<split> | -thr_<t>]`."""
    name = split if tta == "none" else f"{split}-{tta}"
    if threshold_split:
        return f"{name}-thr_{method}_{threshold_split}"
    value = float(method)
    return name if value == 0.5 else f"{name}-thr_{value:g}"


def score_selection(predictor, records_dir: str, manifest: dict, sel: manifest_lib.Selection,
                    tta: str, batch_size: int, progress: bool = False) -> pd.DataFrame:
    """Predictions for every record of a selection, at the predictor's input size."""
    # The model's saved preprocessing (canvas, resize) must be the records' one.
    preprocess.check_records(predictor.spec, manifest["settings"], records_dir)
    shards.check(records_dir, manifest, sel)  # a bad shard is named, as the trainer does
    data = DataConfig(records_dir=records_dir, image_size=predictor.image_size)
    ds = pipeline.make_dataset(data, sel, training=False, batch_size=batch_size,
                               manifest=manifest, with_metadata=True)
    expected = manifest_lib.count_examples(manifest, sel)
    name = f"fold{sel.folds[0]}" if sel.split == "train" and len(sel.folds) == 1 else sel.name
    with shards.named(records_dir, manifest, sel):
        scores = scoring.score_dataset(predictor, ds, tta=tta, progress=progress,
                                       total=expected, desc=f"score {name}")
    if len(scores) != expected:
        raise RuntimeError(f"scored {len(scores)} images of {sel.name}, manifest has {expected}")
    return scores


def resolve_threshold_split(cfg: EvalConfig, trained: Sequence[TrainedRun],
                            manifest: dict) -> Optional[str]:
    """The split a youden|f1 threshold is chosen on (None for a numeric threshold).

    auto: the selection split if it is not the reported one, else the first held-out
    fold. Never the reported split; a trained-on split only with allow_biased_threshold.
    """
    if cfg.threshold not in metrics.THRESHOLD_METHODS:
        return None
    if cfg.threshold_split != "auto":
        name = cfg.threshold_split
        manifest_lib.parse_val_split(name)   # validates the name
        if name == cfg.split:
            raise ValueError("--threshold_split must differ from --split: a threshold tuned "
                             "on the reported images overstates the result")
    else:
        folds = [f"fold{k}" for k in manifest_lib.train_folds(manifest)]
        candidates = [c for c in ["validation"] + folds
                      if c != cfg.split and not split_roles.threshold_biased(
                          c, split_role(c, trained))]
        candidates.sort(key=lambda c: split_role(c, trained) != split_roles.SELECTION)
        if not candidates:
            raise ValueError(f"--threshold={cfg.threshold} needs labeled images that are "
                             "neither reported nor trained on, and there are none for this "
                             "model: pass a numeric --threshold, or --threshold_split=fold<k> "
                             "with --allow_biased_threshold (biased)")
        name = candidates[0]
    split_roles.check_threshold_split(name, split_role(name, trained),
                                      cfg.allow_biased_threshold)
    return name


def evaluate(cfg: EvalConfig) -> dict:
    """Load the model (or the ensemble of several comma-separated model dirs: the mean of
    their probabilities) and its runs' configs, then `evaluate_predictor`."""
    paths = ensemble.split_paths(cfg.model_dir)
    if len(paths) > 1 and not cfg.out_dir:
        raise ValueError(f"an ensemble of {len(paths)} models has no run dir of its own: "
                         "give --out_dir for its evaluation folders")
    checked = provenance.check_evaluation(paths, cfg.records_dir, cfg.allow_other_records,
                                          cfg.allow_other_model)
    trained = [load_trained(run_dir(p)) for p in paths]
    predictor = ensemble.load(paths, batch_size=cfg.batch_size,
                              trust_saved_model=cfg.trust_saved_model)
    return evaluate_predictor(cfg, predictor, trained, checked)


def evaluate_predictor(cfg: EvalConfig, predictor, trained: Sequence[TrainedRun],
                       checked: Optional[dict] = None) -> dict:
    """Score, measure, plot and write one evaluation folder; returns metrics.json's content
    plus "report", "eval_dir" and "warnings" (banner texts, leakage).

    Args:
      predictor: a callable uint8 [N,S,S,3] -> [N] probabilities with `.image_size` and
        `.path` (export.Predictor, or an ensemble of them).
      trained: the run(s) the predictor comes from; their config decides split roles.
      checked: `provenance.check_evaluation`'s answer (the model files and records).
    """
    manifest = manifest_lib.load(cfg.records_dir)
    sel = manifest_lib.parse_val_split(cfg.split)
    role = split_role(cfg.split, trained)
    threshold_split = resolve_threshold_split(cfg, trained, manifest)  # before scoring
    scores = score_selection(predictor, cfg.records_dir, manifest, sel, cfg.tta,
                             cfg.batch_size, cfg.progress)
    if (scores["label"] < 0).any():
        raise ValueError(f"{cfg.split} has unlabeled images: evaluate labeled data; use "
                         "leukemia_tf.predict for the final test set")
    if threshold_split:
        tscores = score_selection(predictor, cfg.records_dir, manifest,
                                  manifest_lib.parse_val_split(threshold_split), cfg.tta,
                                  cfg.batch_size, cfg.progress)
        threshold = metrics.choose_threshold(tscores["label"], tscores["probability"],
                                             cfg.threshold)
    else:
        threshold = metrics.choose_threshold(None, None, cfg.threshold)

    scores, notes, option_metrics = options.apply_inference_options(
        predictor, scores, cfg, trained, manifest, sel, threshold)
    result = metrics.classification_metrics(scores["label"], scores["probability"], threshold)
    result.update(option_metrics, option_notes=notes)
    train_folds = trained[0].train_folds if len(trained) == 1 else None
    banner = split_roles.banner(cfg.split, role, train_folds)
    t_role = split_role(threshold_split, trained) if threshold_split else None
    result.update(
        split=cfg.split, split_role=role, fold=split_roles.split_fold(cfg.split),
        tta=cfg.tta, threshold_method=cfg.threshold, threshold_chosen_on=threshold_split,
        threshold_split_role=t_role,
        threshold_biased=bool(threshold_split) and split_roles.threshold_biased(
            threshold_split, t_role),
        model=predictor.path, image_size=predictor.image_size,
        members=list(getattr(predictor, "member_paths", [predictor.path])),
        split_warning=banner or None,
        leakage_warnings=[] if role == split_roles.TRAINED_ON or train_folds is None else
        duplicates.leak_warnings(duplicates.leaked_groups(manifest, train_folds, sel),
                                 train_folds, cfg.split),
        eval_name=eval_name(cfg.split, cfg.tta, cfg.threshold, threshold_split),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        records_manifest_sha256=manifest_sha256(cfg.records_dir),
        **provenance.facts(checked or {}, predictor))
    result["confidence_intervals"] = metrics.confidence_intervals(
        scores["label"], scores["probability"], scores["patient_id"], threshold)
    result["small_n_warnings"] = metrics.small_n_warnings(result,
                                                          result["confidence_intervals"])
    result["context"] = {**dict(run_context(cfg, predictor, trained, result)),
                         **provenance.context_rows(result)}
    return _write(cfg, scores, result, trained)


def _write(cfg: EvalConfig, scores: pd.DataFrame, result: dict,
           trained: Sequence[TrainedRun]) -> dict:
    root = cfg.out_dir or io.join(run_dir(cfg.model_dir), "eval")
    out = io.join(root, result["eval_name"])
    threshold = result["threshold"]
    scores = scores.assign(file=scores["source_path"].map(io.basename),
                           prediction=(scores["probability"] >= threshold).astype(int))
    scores = scores[["source_path", "file", "patient_id", "label", "probability", "prediction"]
                    + [c for c in scores if c.startswith("probability_")]]
    patients = metrics.per_patient(scores)
    io.write_csv(io.join(out, "predictions.csv"), scores)
    io.write_csv(io.join(out, "per_patient.csv"), patients)
    figures = {}
    history = io.join(trained[0].path, "history.csv") if len(trained) == 1 else ""
    if history and io.exists(history):
        val = trained[0].val_split or "validation"
        figures["Training curves"] = plots.plot_training_curves(
            history, io.join(out, "training_curves.png"),
            val_label=f"{val} ({trained[0].role(val)})",
            best_epoch=trained[0].summary.get("best_epoch"),
            monitor=trained[0].summary.get("monitor", "val_weighted_f1"))
    figures["Confusion matrix"] = plots.plot_confusion_matrix(
        result["confusion_matrix"], io.join(out, "confusion_matrix.png"))
    if result["roc_auc"] is not None:
        figures["ROC and PR curves (red dot: the operating point)"] = plots.plot_roc_pr(
            scores["label"], scores["probability"], io.join(out, "roc_pr.png"), threshold)
    from leukemia_tf.reports import cell_gallery as pictures
    figures.update(pictures.add_figures(cfg.records_dir, cfg.split, scores, threshold, out))
    io.write_json(io.join(out, "metrics.json"), result)
    warnings = [w for w in [result["split_warning"]] + result["leakage_warnings"]
                + result["small_n_warnings"] + result["provenance_warnings"] if w]
    if result["threshold_biased"]:
        warnings.append(f"the threshold was chosen on {result['threshold_chosen_on']} "
                        f"({result['threshold_split_role']}, allowed by "
                        "--allow_biased_threshold): it is fitted to training images")
    members = result.get("members") or [cfg.model_dir]
    name = (io.basename(run_dir(cfg.model_dir)) or cfg.model_dir if len(members) == 1
            else f"ensemble of {len(members)} models")
    title = f"{name} on {cfg.split} ({result['split_role']})"
    path = report.write_report(out, result, patients, figures, title=title,
                               context=list(result["context"].items()), banners=warnings,
                               extra_md=options_report.write(out, scores, result,
                                                             result["option_notes"])
                               + "\n\n" + _files_section(result))
    index = report.write_index(root)
    return {**result, "report": path, "index": index, "eval_dir": out, "warnings": warnings}


def _files_section(result: dict) -> str:
    return "\n".join([
        "## Files", "",
        f"Every image of {result['split']} was scored exactly once "
        f"({count(result['num_examples'], 'image')}, TTA {result['tta']}).", "",
        "- [metrics.json](metrics.json): the numbers above, with split role and context",
        "- [predictions.csv](predictions.csv): one row per image",
        "- [per_patient.csv](per_patient.csv): accuracy per patient, worst first",
        "- [all evaluations of this model](../index.md)", ""])


def manifest_sha256(records_dir: str) -> str:
    """sha256 of the records' manifest.json bytes: names the exact records evaluated."""
    return manifest_lib.fingerprint(records_dir)


def _joined(trained: Sequence[TrainedRun], get) -> str:
    values = []
    for t in trained:
        value = get(t)
        value = "n/a" if value in (None, "") else str(value)
        if value not in values:
            values.append(value)
    return " / ".join(values) if values else "n/a"


def run_context(cfg: EvalConfig, predictor, trained: Sequence[TrainedRun], result: dict):
    """(field, value) pairs of the report's run context table (also in metrics.json)."""
    def conf(section, key):
        return lambda t: t.config.get(section, {}).get(key)

    def params(t):
        p = t.summary.get("params")
        return None if p is None else f"{int(p):,}"

    if result["threshold_chosen_on"]:
        threshold = (f"{result['threshold']:.4f} ({result['threshold_method']}, chosen on "
                     f"{result['threshold_chosen_on']}: {result['threshold_split_role']})")
    else:
        threshold = f"{result['threshold']:.4f} (fixed)"
    folds = _joined(trained, lambda t: None if t.train_folds is None
                    else ", ".join(map(str, t.train_folds)))
    yield "model", f"{_joined(trained, conf('model', 'name'))} ({predictor.path})"
    yield "parameters", _joined(trained, params)
    yield "image size", f"{predictor.image_size} x {predictor.image_size} px"
    yield "epochs (best epoch)", (f"{_joined(trained, conf('train', 'epochs'))} (best "
                                  f"{_joined(trained, lambda t: t.summary.get('best_epoch'))})")
    yield "precision", _joined(trained, lambda t: t.summary.get("precision")
                               or t.config.get("train", {}).get("mixed_precision"))
    yield "strategy", _joined(trained, lambda t: t.summary.get("strategy")
                              or t.config.get("train", {}).get("strategy"))
    yield "train folds", folds
    yield "selection split (chose the best epoch)", _joined(trained, lambda t: t.val_split)
    yield "evaluated split", f"{result['split']} ({result['split_role']})"
    yield "test-time augmentation", result["tta"]
    yield "threshold (ALL if p >= t)", threshold
    yield "records", cfg.records_dir
    yield "records manifest sha256", result["records_manifest_sha256"]
    yield "leukemia_tf version", leukemia_tf.__version__
    yield "date", result["date"]
