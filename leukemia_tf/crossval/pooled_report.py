"""The files of a pooled study: pooled.csv / pooled.md (one row per recipe and variant),
oof.csv (every held-out cell's probability per seed) and per_patient.csv; and the
comparison of several studies (`compare`): paired differences and ensembles.
"""
from __future__ import annotations

import platform
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from leukemia_tf import io
from leukemia_tf.crossval import pooled
from leukemia_tf.reports.report import fmt, markdown_table

_SHOWN = ["recipe", "variant", "weighted_f1", "roc_auc", "ece", "patients_right",
          "worst_patient", "minutes", "load"]


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in io.read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001 - not Linux: say what Python knows
        pass
    return platform.processor() or "unknown CPU"


def runs_by_seed(run_dirs: Dict[Tuple[int, int], str]) -> Dict[int, List[dict]]:
    """{(seed, fold): run dir} -> {seed: [read runs]}."""
    out: Dict[int, List[dict]] = {}
    for (seed, _), path in sorted(run_dirs.items()):
        out.setdefault(seed, []).append(pooled.read_run(path))
    return out


def recipe_rows(recipe: str, by_seed: Dict[int, List[dict]]) -> Tuple[list, dict]:
    """(rows of pooled.csv for one recipe, {variant: pooled frame})."""
    runs = [r for rs in by_seed.values() for r in rs]
    seeds = sorted(by_seed)
    minutes = float(np.mean([r["minutes"] for r in runs]))
    load = float(np.mean([r["load"][0] for r in runs]))
    rows, frames = [], {}
    for variant in pooled.variant_names(runs):
        frame = pooled.pooled(by_seed, variant)
        frames[variant] = frame
        s = pooled.summarize(frame, seeds)
        worst = min(s["per_patient"].items(), key=lambda kv: kv[1])
        rows.append({"recipe": recipe, "variant": variant, **{k: v for k, v in s.items()
                                                              if k != "per_patient"},
                     "worst_patient": f"{worst[0]}: {worst[1]:.2f}",
                     "per_patient": s["per_patient"], "minutes": minutes, "load": load})
    return rows, frames


def _cell(row: dict, key: str) -> str:
    if row.get(key) is None:
        return "n/a"
    if key in ("weighted_f1", "roc_auc"):
        return (f"{row[key]:.3f} ± {fmt(row.get(f'{key}_sd'), 3)} "
                f"[{fmt(row.get(f'{key}_low'), 3)}, {fmt(row.get(f'{key}_high'), 3)}]")
    if key == "patients_right":
        return f"{row[key]:.1f} of {row['patients']}"
    if key in ("minutes", "load"):
        return f"{row[key]:.1f}"
    if key == "ece":
        return f"{row[key]:.3f}"
    return str(row[key])


def write(out_dir: str, rows: list, frames: Dict[Tuple[str, str], pd.DataFrame],
          notes: Sequence[str] = ()) -> dict:
    """pooled.csv, pooled.md, oof.csv (plain variant of each recipe), per_patient.csv."""
    paths = {k: io.join(out_dir, f) for k, f in
             (("csv", "pooled.csv"), ("md", "pooled.md"), ("oof", "oof.csv"),
              ("per_patient", "per_patient.csv"))}
    flat = [{k: v for k, v in r.items() if k != "per_patient"} for r in rows]
    io.write_csv(paths["csv"], pd.DataFrame(flat))
    per_patient = pd.DataFrame([{"recipe": r["recipe"], "variant": r["variant"],
                                 **r["per_patient"]} for r in rows])
    io.write_csv(paths["per_patient"], per_patient)
    oof = [f.assign(recipe=recipe, variant=v) for (recipe, v), f in frames.items()
           if v in ("plain", "epoch:last")]
    if oof:
        io.write_csv(paths["oof"], pd.concat(oof, ignore_index=True))
    io.write_text(paths["md"], markdown(rows, notes))
    return paths


def markdown(rows: list, notes: Sequence[str] = ()) -> str:
    """The pooled table: mean ± sd over seeds [95% patient-bootstrap interval]."""
    first = rows[0] if rows else {}
    lines = ["# Pooled out-of-fold results", "",
             f"{first.get('cells', 0)} held-out cells of {first.get('patients', 0)} patients, "
             f"{first.get('seeds', 0)} seeds; each cell scored once per seed by the fold "
             "model that never saw its patient. Weighted F1 and ROC AUC: mean ± sd over "
             "seeds [95% interval of the seed mean, resampling patients]. Patients right: "
             "majority call, mean over seeds. Minutes: per training run (training, "
             "per-epoch scoring, variants); load: 1-minute load average after each run, "
             f"mean. CPU: {cpu_name()}.", ""]
    lines += [f"- {n}" for n in notes]
    table = [[_cell(r, k) if k not in ("recipe", "variant", "worst_patient") else r[k]
              for k in _SHOWN] for r in rows]
    lines += ["", markdown_table(_SHOWN, table), ""]
    return "\n".join(lines)
