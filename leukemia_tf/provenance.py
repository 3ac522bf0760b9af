"""What a model dir says it was made from, and the checks that keep it true.

A model dir records two fingerprints (sha256):
- `trained_on.json`: the records the run trained on (records dir, manifest.json's
  fingerprint: `data.manifest.fingerprint`, its content without date, timings and source; the
  training and selection splits with their image counts), written by the trainer when
  it claims the model dir and copied into summary.json (`records`). A resume, the final
  scoring and `evaluate` compare the records' manifest.json against it and refuse other
  records in one line naming both fingerprints; evaluate scores other records only with
  `--allow_other_records`, and then says so in metrics.json and the report.
- summary.json's `model_sha256`: the model.keras the trainer exported. evaluate and predict
  refuse another file in its place; with `--allow_other_model` they score it and name
  what was really loaded (the loaded network's name and parameter count).
While a trainer holds the model dir (`train.lock`, `leukemia_tf.lock`), evaluate and
predict refuse it: the model.keras they would score is replaced when the trainer ends.
Every evaluation records the model file it scored, so eval/index.md marks a report of
another model stale.

No TensorFlow is imported here: these checks run before a model loads.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

from leukemia_tf import io
from leukemia_tf import lock as lock_lib
from leukemia_tf.data import manifest as manifest_lib
from leukemia_tf.errors import UserError

log = logging.getLogger("leukemia_tf")

TRAINED_ON = "trained_on.json"
SUMMARY = "summary.json"     # training.rundir.SUMMARY (rundir loads TensorFlow's package)
TRAIN_LOCK = "train.lock"    # training.rundir.LOCK
KERAS_FILE = "model.keras"   # model.export.KERAS_FILE
EXPORT_DIR = "export"        # model.export.EXPORT_DIR


class ProvenanceError(UserError):
    """A model dir and the records or model file it is used with do not belong together."""


def _short(sha: Optional[str]) -> str:
    return f"{sha[:12]}…" if sha else "none"


# ------------------------------------------------------------- the records a run trained on
def records_record(records_dir: str, manifest_sha256: str,
                   splits: Dict[str, Tuple[str, int]]) -> dict:
    """trained_on.json's content; `splits`: role (train, validation) -> (selection name,
    image count)."""
    return {"records_dir": records_dir, "manifest_sha256": manifest_sha256,
            "manifest": manifest_lib.manifest_path(records_dir),
            "splits": {role: {"name": name, "num_examples": int(n)}
                       for role, (name, n) in splits.items()}}


def trained_on(model_dir: str) -> Optional[dict]:
    """trained_on.json of a model dir, None when it has none (a run older than the file,
    a bare export); ProvenanceError naming it when it is not such a record."""
    path = io.join(model_dir, TRAINED_ON)
    if not io.exists(path):
        return None
    value = io.read_json(path)  # JsonFileError (one line naming it) when torn
    if not isinstance(value, dict) or not isinstance(value.get("manifest_sha256"), str):
        raise ProvenanceError(f"{path} does not say which records the run trained on "
                              "(no manifest_sha256): restore it from the run, or delete it")
    return value


def write_trained_on(model_dir: str, record: dict) -> None:
    """Record the run's records once: a resume keeps (and is checked against) the first."""
    path = io.join(model_dir, TRAINED_ON)
    if not io.exists(path):
        io.write_json(path, record)


def records_problem(model_dir: str, records_dir: str, now: Optional[str] = None
                    ) -> Optional[str]:
    """None when `records_dir`'s manifest.json is the one the run trained on (or the model
    dir records none); else what differs, naming both fingerprints and both files.
    `now`: the manifest's sha256 when the caller already pinned it."""
    recorded = trained_on(model_dir)
    if recorded is None:
        return None
    manifest = manifest_lib.manifest_path(records_dir)
    if now is None:
        now = manifest_lib.fingerprint(records_dir) if io.exists(manifest) else None
    if now == recorded["manifest_sha256"]:
        return None
    if (now is not None and io.exists(manifest)
            and io.sha256(manifest) == recorded["manifest_sha256"]):
        return None  # recorded before fingerprints left the date out: these very bytes
    return (f"{manifest} (fingerprint {_short(now)}) is not the manifest this run trained on"
            f" ({io.join(model_dir, TRAINED_ON)}: {_short(recorded['manifest_sha256'])}"
            f", {recorded.get('records_dir')})")


def check_records(model_dir: str, records_dir: str, remedy: str,
                  error=ProvenanceError, now: Optional[str] = None) -> None:
    """Raise `error` ("<what differs>: <remedy>", one line) when the records are not the
    ones the run trained on."""
    problem = records_problem(model_dir, records_dir, now)
    if problem:
        raise error(f"{problem}: {remedy}")


def run_facts(model_dir: str) -> dict:
    """summary.json's provenance, after the export: the records and the model.keras."""
    return {"records": trained_on(model_dir),
            "model_sha256": io.sha256(io.join(model_dir, KERAS_FILE))}


# ------------------------------------------------------------- the model file a run exported
def keras_file(model_path: str) -> Optional[str]:
    """The .keras file `loading.load_model` loads for `model_path`; None for a SavedModel."""
    path = str(model_path).rstrip("/") or str(model_path)
    if path.endswith(".keras"):
        return path
    candidate = io.join(path, KERAS_FILE)
    return candidate if io.exists(candidate) else None


def _summary(run_dir: str) -> dict:
    path = io.join(run_dir, SUMMARY)
    value = io.read_json(path) if io.exists(path) else {}
    return value if isinstance(value, dict) else {}


def model_problem(file: str, sha: str) -> Optional[str]:
    """None when `file` (hash `sha`) is the model.keras its run dir's summary.json
    records (or it records none); else both fingerprints and both files."""
    summary = io.join(io.dirname(file), SUMMARY)
    recorded = _summary(io.dirname(file)).get("model_sha256")
    if not recorded or recorded == sha:
        return None
    return (f"{file} (sha256 {_short(sha)}) is not the model this run exported "
            f"({summary}: model_sha256 {_short(recorded)})")


def check_models(model_paths: Sequence[str], allow_other_model: bool) -> dict:
    """No member's run is being trained (its model.keras is about to be replaced); hash
    every .keras member; ProvenanceError when one is not its run's model.keras, unless
    `allow_other_model`. Returns {"member_sha256": [...], "other_model": [...]}:
    per member, its file's sha256 (None for a SavedModel) and the mismatch (or None)."""
    for path in model_paths:
        check_not_training(run_dir(path))
    shas, others = [], []
    for path in model_paths:
        file = keras_file(path)
        sha = io.sha256(file) if file is not None and io.exists(file) else None
        problem = model_problem(file, sha) if sha else None
        if problem and not allow_other_model:
            raise ProvenanceError(f"{problem}: restore the run's model.keras, or pass "
                                  "--allow_other_model to score this file on purpose (the "
                                  "report then names the network it really holds)")
        shas.append(sha)
        others.append(problem)
    return {"member_sha256": shas, "other_model": others}


def loaded_network(predictor) -> Optional[dict]:
    """{"name", "params"} read from the network a predictor loaded (None for a SavedModel
    or an ensemble)."""
    model = getattr(predictor, "keras_model", None)
    if model is None:
        return None
    return {"name": model.name, "params": int(model.count_params())}


# ------------------------------------------------------------- evaluate
def run_dir(model_path: str) -> str:
    """The training run dir of a model dir, its export/ dir or its .keras file."""
    path = str(model_path).rstrip("/")
    if path.endswith(".keras") or io.basename(path) == EXPORT_DIR:
        return io.dirname(path)
    return path


def check_not_training(run_dir: str) -> None:
    """ProvenanceError while a live trainer holds `run_dir` (its train.lock)."""
    if lock_lib.live_holder(run_dir, TRAIN_LOCK) is not None:
        raise ProvenanceError(
            f"{run_dir} is being trained ({io.join(run_dir, TRAIN_LOCK)} is held): its "
            "model.keras is replaced when the trainer ends; wait for the trainer, or "
            "score a copy of its model.keras")


def check_evaluation(model_paths: Sequence[str], records_dir: str,
                     allow_other_records: bool, allow_other_model: bool) -> dict:
    """evaluate's checks before a model loads: no live trainer, the run's own records
    (unless allowed), the run's own model.keras (unless allowed). Returns what `facts`
    turns into metrics.json's provenance fields."""
    models = check_models(model_paths, allow_other_model)
    run_dirs = [run_dir(p) for p in model_paths]
    records, present = [], io.exists(manifest_lib.manifest_path(records_dir))
    for folder in run_dirs:  # no manifest at all: the records loader names that
        problem = records_problem(folder, records_dir) if present else None
        if problem and not allow_other_records:
            raise ProvenanceError(
                f"{problem}: evaluate on the records the model was trained on, or pass "
                "--allow_other_records to score these on purpose (the report then says so)")
        recorded = trained_on(folder)
        records.append({"trained_on_sha256": recorded and recorded["manifest_sha256"],
                        "other": problem})
    return {**models, "records_check": records}


def facts(checked: dict, predictor) -> dict:
    """metrics.json's provenance fields: the model file(s) scored, whether they are the
    run's own, the records the run trained on, and the banner lines for the report."""
    shas = checked.get("member_sha256", [])
    other_records = [r["other"] for r in checked.get("records_check", []) if r["other"]]
    other_model = [p for p in checked.get("other_model", []) if p]
    network = loaded_network(predictor) if other_model else None
    warnings = [f"scored on purpose with --allow_other_records: {p}" for p in other_records]
    warnings += [f"scored on purpose with --allow_other_model: {p}; the run context's "
                 "training facts describe the run dir, not this file" for p in other_model]
    return {"model_sha256": shas[0] if len(shas) == 1 else None, "member_sha256": shas,
            "records_trained_on_sha256": [r["trained_on_sha256"]
                                          for r in checked.get("records_check", [])],
            "other_records": bool(other_records), "other_model": bool(other_model),
            "loaded_model": network, "provenance_warnings": warnings}


def context_rows(result: dict) -> Dict[str, str]:
    """Run-context rows the report shows (over the run dir's own when another model was
    loaded)."""
    rows = {}
    network = result.get("loaded_model")
    if network:
        rows["model"] = (f"{network['name']} ({result.get('model')}; loaded, not the model "
                         "this run exported: --allow_other_model)")
        rows["parameters"] = f"{network['params']:,} (of the loaded model)"
    if result.get("model_sha256"):
        rows["model sha256"] = result["model_sha256"]
    trained = [s for s in result.get("records_trained_on_sha256") or [] if s]
    if trained:
        rows["records the model was trained on (fingerprint)"] = (
            " / ".join(dict.fromkeys(trained))
            + (" (OTHER records scored: --allow_other_records)"
               if result.get("other_records") else ""))
    return rows


# ------------------------------------------------------------- eval/index.md
def stale(eval_root: str, metrics: dict, hashes: Dict[str, Optional[str]]) -> bool:
    """True when an evaluation scored another model than the current one: the
    model.keras of the run dir holding `eval_root` (its default place), else the files
    the evaluation loaded. Evaluations that recorded no model hash are not judged.
    `hashes`: a cache of file -> sha256 for one index."""
    shas = metrics.get("member_sha256") or []
    members = metrics.get("members") or []
    if not any(shas):
        return False
    beside = io.join(io.dirname(str(eval_root).rstrip("/")), KERAS_FILE)
    if len(shas) == 1 and io.exists(beside):
        members = [beside]
    for path, sha in zip(members, shas):
        if not sha:
            continue
        if path not in hashes:
            file = keras_file(path)
            hashes[path] = io.sha256(file) if file and io.exists(file) else None
        if hashes[path] != sha:
            return True
    return False


def log_other_model(checked: dict, predictor) -> None:
    """predict's label for `--allow_other_model`: a warning naming the loaded network."""
    network = loaded_network(predictor)
    for problem in (p for p in checked.get("other_model", []) if p):
        what = f"{network['name']}, {network['params']:,} parameters" if network else "?"
        log.warning("predicting with %s (%s), allowed by --allow_other_model", problem, what)
