"""Evaluate an exported model on a labeled split: metrics, per-patient table, plots, report.

`run(cfg)` loads the model (or an ensemble) and its runs (`trained_run`), scores the split
(`inference.scoring`), applies the inference options (`inference.options`), measures
(`metrics`) and writes the folder (`reports`).

Every image of the split is scored exactly once (pipeline without drop_remainder or
repeat; scoring refuses duplicates), optionally averaged over TTA views.

Each evaluation gets its own folder, `<eval root>/<split>[-<tta>][-thr_<how>]/` (root:
`<run dir>/eval` or --out_dir), so evaluating fold0 never erases the validation report;
`<eval root>/index.md` lists them all. Every number carries its split's role
(split_roles): held-out, selection or trained-on. Every file goes through leukemia_tf.io.
"""
from __future__ import annotations

import datetime
from typing import Optional, Sequence

import pandas as pd

from leukemia_tf import io, provenance
from leukemia_tf.config import EvalConfig, InferenceConfig
from leukemia_tf.data import duplicates
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.evaluation import destinations
from leukemia_tf.evaluation.trained_run import TrainedRun, load_trained, run_context, split_role
from leukemia_tf.inference import cells, ensemble, options, scoring
from leukemia_tf.metrics import classification as metrics
from leukemia_tf.metrics import split_roles
from leukemia_tf.reports import cell_gallery, charts, option_sections, report
from leukemia_tf.wording import count


def eval_name(split: str, tta: str, method: str, threshold_split: Optional[str],
              opts: Optional[InferenceConfig] = None) -> str:
    """The folder of one evaluation: `<split>[-<tta>][-adapt_bn_<mode>][-calibrate_<how>]
    [-vote<k>][-thr_<method>_<split> | -thr_<t>]`: every setting that changes the scores
    or the calls has its own folder, so no evaluation replaces another's report."""
    name = split if tta == "none" else f"{split}-{tta}"
    opts = opts or InferenceConfig()
    if opts.adapt_bn != "none":
        name += f"-adapt_bn_{opts.adapt_bn}"
    if opts.calibrate != "none":
        name += f"-calibrate_{opts.calibrate}"
    if opts.neighbour_vote:
        name += f"-vote{opts.neighbour_vote}"
    if threshold_split:
        return f"{name}-thr_{method}_{threshold_split}"
    value = float(method)
    return name if value == 0.5 else f"{name}-thr_{value:g}"


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


def run(cfg: EvalConfig) -> dict:
    """Load the model (or the ensemble of several comma-separated model dirs: the mean of
    their probabilities) and its runs' configs, then `evaluate_predictor`."""
    paths = ensemble.split_paths(cfg.model_dir)
    if len(paths) > 1 and not cfg.out_dir:
        raise ValueError(f"an ensemble of {len(paths)} models has no run dir of its own: "
                         "give --out_dir for its evaluation folders")
    if len(paths) == 1:
        destinations.check_not_serving(paths[0], cfg.out_dir)
    checked = provenance.check_evaluation(paths, cfg.records_dir, cfg.allow_other_records,
                                          cfg.allow_other_model)
    trained = [load_trained(provenance.run_dir(p)) for p in paths]
    predictor = ensemble.load(paths, batch_size=cfg.batch_size,
                              trust_saved_model=cfg.trust_saved_model)
    return evaluate_predictor(cfg, predictor, trained, checked)


def _threshold(cfg: EvalConfig, predictor, manifest: dict,
               threshold_split: Optional[str]) -> float:
    """The operating threshold: the fixed one, or youden|f1 on threshold_split's scores."""
    if not threshold_split:
        return metrics.choose_threshold(None, None, cfg.threshold)
    tscores = scoring.score_selection(predictor, cfg.records_dir, manifest,
                                      manifest_lib.parse_val_split(threshold_split), cfg.tta,
                                      cfg.batch_size, cfg.progress)
    return metrics.choose_threshold(tscores["label"], tscores["probability"], cfg.threshold)


def evaluate_predictor(cfg: EvalConfig, predictor, trained: Sequence[TrainedRun],
                       checked: Optional[dict] = None) -> dict:
    """Score, measure, plot and write one evaluation folder; returns metrics.json's content
    plus "report", "eval_dir" and "warnings" (banner texts, leakage).

    Args:
      predictor: a callable uint8 [N,S,S,3] -> [N] probabilities with `.image_size` and
        `.path` (loading.Predictor, or an ensemble of them).
      trained: the run(s) the predictor comes from; their config decides split roles.
      checked: `provenance.check_evaluation`'s answer (the model files and records).
    """
    manifest = manifest_lib.load(cfg.records_dir)
    sel = manifest_lib.parse_val_split(cfg.split)
    role = split_role(cfg.split, trained)
    threshold_split = resolve_threshold_split(cfg, trained, manifest)  # before scoring
    scores = scoring.score_selection(predictor, cfg.records_dir, manifest, sel, cfg.tta,
                                     cfg.batch_size, cfg.progress)
    if (scores["label"] < 0).any():
        raise ValueError(f"{cfg.split} has unlabeled images: evaluate labeled data; use "
                         "leukemia-predict for the final test set")
    threshold = _threshold(cfg, predictor, manifest, threshold_split)
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
        eval_name=eval_name(cfg.split, cfg.tta, cfg.threshold, threshold_split,
                            cfg.inference),
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
    root = cfg.out_dir or io.join(provenance.run_dir(cfg.model_dir), "eval")
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
        figures["Training curves"] = charts.plot_training_curves(
            history, io.join(out, "training_curves.png"),
            val_label=f"{val} ({trained[0].role(val)})",
            best_epoch=trained[0].summary.get("best_epoch"),
            monitor=trained[0].summary.get("monitor", "val_weighted_f1"))
    figures["Confusion matrix"] = charts.plot_confusion_matrix(
        result["confusion_matrix"], io.join(out, "confusion_matrix.png"))
    if result["roc_auc"] is not None:
        figures["ROC and PR curves (red dot: the operating point)"] = charts.plot_roc_pr(
            scores["label"], scores["probability"], io.join(out, "roc_pr.png"), threshold)
    figures.update(cell_gallery.add_figures(
        scores, threshold, out,
        lambda paths: cells.read_cells(cfg.records_dir, cfg.split, paths)))
    io.write_json(io.join(out, "metrics.json"), result)
    warnings = [w for w in [result["split_warning"]] + result["leakage_warnings"]
                + result["small_n_warnings"] + result["provenance_warnings"] if w]
    if result["threshold_biased"]:
        warnings.append(f"the threshold was chosen on {result['threshold_chosen_on']} "
                        f"({result['threshold_split_role']}, allowed by "
                        "--allow_biased_threshold): it is fitted to training images")
    members = result.get("members") or [cfg.model_dir]
    name = (io.basename(provenance.run_dir(cfg.model_dir)) or cfg.model_dir
            if len(members) == 1 else f"ensemble of {len(members)} models")
    title = f"{name} on {cfg.split} ({result['split_role']})"
    path = report.write_report(out, result, patients, figures, title=title,
                               context=list(result["context"].items()), banners=warnings,
                               extra_md=option_sections.write(out, scores, result,
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
    """The records' fingerprint (`data.manifest.fingerprint`): names the records evaluated."""
    return manifest_lib.fingerprint(records_dir)
