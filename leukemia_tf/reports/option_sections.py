"""Files and report sections of the inference options: patients.csv, the patient-level
table, the reliability diagram, the shortcut probe beside the CNN, and the notes saying
which options ran (and which are transductive).
"""
from __future__ import annotations

from typing import List, Sequence

import pandas as pd

from leukemia_tf import io
from leukemia_tf.metrics import calibration, patients
from leukemia_tf.reports import charts
from leukemia_tf.wording import count

PATIENTS_CSV = "patients.csv"
RELIABILITY_PNG = "reliability.png"
# A patient is flagged when the entropy of its cells' calls reaches this many bits:
# 0.5 bits is a fraction called ALL between about 0.11 and 0.89.
DISAGREEMENT_FLAG = 0.5
MOST_DISAGREEING = 3


def patient_frame(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """`patients.patient_table` (with labels when every cell has one) plus its
    `disagreement` in bits, most disagreeing first."""
    labeled = "label" in frame and (frame["label"] >= 0).all()
    table = patients.patient_table(frame["patient_id"], frame["probability"],
                                   frame["label"] if labeled else None, threshold)
    return patients.disagreement(table)


def _row(r, flagged: bool) -> str:
    call = "ALL" if r.call else "hem"
    cells = [r.patient, str(r.cells), f"{r.fraction_called_all:.2f}",
             f"{r.mean_probability:.3f}", call]
    if hasattr(r, "truth"):
        cells += ["ALL" if r.truth else "hem", "yes" if r.correct else "**no**"]
    cells.append(f"{r.disagreement:.2f}" + (" **MIXED**" if flagged else ""))
    return "| " + " | ".join(cells) + " |"


def patient_section(table: pd.DataFrame, accuracy) -> List[str]:
    """The patient-level calls: one row per patient, most disagreeing first."""
    labeled = "truth" in table
    header = ["patient", "cells", "fraction called ALL", "mean P(ALL)", "call"]
    header += ["truth", "correct"] if labeled else []
    header += ["disagreement (bits)"]
    flagged = table["disagreement"] >= DISAGREEMENT_FLAG
    worst = table[table["disagreement"] > 0].head(MOST_DISAGREEING)["patient"].tolist()
    lines = ["## Patient-level calls", "",
             "A patient is called ALL when most of its cells are (a tie goes by the mean "
             "probability); disagreement is the entropy of its cells' calls (0: all agree, "
             f"1: half and half); **MIXED** marks >= {DISAGREEMENT_FLAG} bits.", ""]
    if labeled:
        lines += [f"Patient-level accuracy: {accuracy:.4f} ({int(table['correct'].sum())} "
                  f"of {count(len(table), 'patient')} called right).", ""]
    lines += [("Most disagreeing patients: " + ", ".join(worst) + ".") if worst
              else "Every patient's cells agree.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_row(r, f) for r, f in zip(table.itertuples(index=False), flagged)]
    return lines + [""]


def calibration_section(frame: pd.DataFrame, cal: dict, out_dir: str) -> List[str]:
    """ECE / Brier / NLL (before and after the temperature when one was applied) and the
    reliability diagram of the final probabilities, written to out_dir."""
    bins = calibration.reliability_bins(frame["probability"], frame["label"])
    charts.plot_reliability(bins, io.join(out_dir, RELIABILITY_PNG),
                            title="reliability of the reported probabilities")
    rows = [("reported probabilities", cal)]
    if "uncalibrated" in cal:
        rows = [("before the temperature", cal["uncalibrated"]),
                ("after the temperature", cal["calibrated"])] + rows
    lines = ["## Calibration", "",
             f"ECE: {cal['ece_bins']} equal bins of top-label confidence max(p, 1 - p) over "
             "[0.5, 1]; Brier: mean squared error of P(ALL).", "",
             "| probabilities | ECE | Brier | NLL |", "|---|---|---|---|"]
    lines += [f"| {name} | {c['ece']:.4f} | {c['brier']:.4f} | {c['nll']:.4f} |"
              for name, c in rows]
    return lines + ["", f"![reliability diagram]({RELIABILITY_PNG})", ""]


def probe_section(result: dict) -> List[str]:
    """The CNN beside the shortcut probe on the same cells."""
    p = result["shortcut_probe"]

    def auc(v):
        return "n/a" if v is None else f"{v:.4f}"
    return ["## Shortcut probe", "",
            "What the network adds over \"ALL cells are larger\": a logistic regression on "
            f"seven hand features per cell ({', '.join(p['features'])}), fitted on "
            f"{p['fitted_on']}, scored on the same cells as the CNN.", "",
            "| model | weighted F1 | ROC AUC |", "|---|---|---|",
            f"| CNN | {result['weighted_f1']:.4f} | {auc(result.get('roc_auc'))} |",
            f"| shortcut probe | {p['weighted_f1']:.4f} | {auc(p.get('roc_auc'))} |", ""]


def write(out_dir: str, frame: pd.DataFrame, result: dict, notes: Sequence[str]) -> str:
    """Write patients.csv and reliability.png into out_dir where they apply; returns the
    Markdown of the options' report sections (empty when none applies)."""
    lines: List[str] = []
    if notes:
        lines += ["## Inference options", ""] + [f"- {n}" for n in notes] + [""]
    before = result.get("before_options")
    if before:
        auc = "n/a" if before["roc_auc"] is None else f"{before['roc_auc']:.4f}"
        lines += [f"The model alone (before these options): weighted F1 "
                  f"{before['weighted_f1']:.4f}, ROC AUC {auc}, accuracy "
                  f"{before['accuracy']:.4f}; `probability_model` in predictions.csv.", ""]
    if patients.patient_ids_known(frame):
        table = patient_frame(frame, result["threshold"])
        io.write_csv(io.join(out_dir, PATIENTS_CSV), table)
        lines += patient_section(table, result.get("patients", {}).get("accuracy"))
        lines += [f"- [{PATIENTS_CSV}]({PATIENTS_CSV}): the patient-level calls", ""]
    if result.get("calibration"):
        lines += calibration_section(frame, result["calibration"], out_dir)
    if result.get("shortcut_probe"):
        lines += probe_section(result)
    return "\n".join(lines)
