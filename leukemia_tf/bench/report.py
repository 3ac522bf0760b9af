"""Benchmark results: machine info, ratios, targets and the printed table."""
from __future__ import annotations

import os
import platform
from typing import Dict, List, Optional

import tensorflow as tf

from leukemia_tf import io
from leukemia_tf.bench.rates import CPU_WORK, REFERENCE


def machine_info() -> dict:
    import psutil
    import tf_keras
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in
                      io.read_text("/proc/cpuinfo").splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": model, "ram_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "tf_version": tf.__version__, "tf_keras_version": tf_keras.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def _rate(m: dict, name: str) -> Optional[float]:
    return m[name]["images_per_sec"] if name in m else None


def ratios(m: Dict[str, dict]) -> Dict[str, float]:
    """The project's pipeline against each peer and reference, where both were measured."""
    out = {}
    ss, fp = _rate(m, "pipeline_steady_state"), _rate(m, "pipeline_first_pass")
    for peer in ("image_dataset_from_directory", "seed_numpy", "decode_ceiling"):
        if _rate(m, peer):
            for name, mine in (("steady_state", ss), ("first_pass", fp)):
                if mine:
                    out[f"{name}_vs_{peer}"] = mine / _rate(m, peer)
    if ss:
        out["steady_state_vs_reference_image_dataset_from_directory"] = (
            ss / REFERENCE["image_dataset_from_directory"])
        out["steady_state_vs_h100_seed_cnn"] = ss / REFERENCE["h100_seed_cnn_bf16"]
        for kind in CPU_WORK:
            work = _rate(m, f"pipeline_steady_state_cpu_{kind}")
            if work:
                out[f"cpu_{kind}_vs_steady_state"] = work / ss
    for name, r in m.items():
        if name.startswith("train/"):
            out[f"{name}/pipeline_vs_synthetic"] = r["ratio"]
        for read in ("read_files", "read_files_warm"):
            if name.startswith("convert_") and _rate(m, read):
                out[f"{name}_vs_{read}"] = r["images_per_sec"] / _rate(m, read)
    return out


def targets(m: Dict[str, dict], r: Dict[str, float]) -> List[dict]:
    """The issue's targets that these measurements can decide: target, measured, pass."""
    rows = []

    def add(name, op, target, measured):
        if measured is not None:
            ok = measured >= target if op == ">=" else measured < target
            rows.append({"name": name, "target": f"{op} {target:g}",
                         "measured": round(measured, 3), "pass": bool(ok)})
    add("steady state img/s", ">=", 40000, _rate(m, "pipeline_steady_state"))
    add("steady state / image_dataset_from_directory", ">=", 40,
        r.get("steady_state_vs_image_dataset_from_directory"))
    add("steady state / one H100 on seed CNN (13,000)", ">=", 3,
        r.get("steady_state_vs_h100_seed_cnn"))
    add("first pass / decode ceiling (stored encoding)", ">=", 0.9,
        r.get("first_pass_vs_decode_ceiling"))
    for name, x in m.items():
        if name.startswith("train/"):
            add(f"{name}: pipeline / synthetic input", ">=", 0.95, x["ratio"])
    if "pipeline_first_pass" in m:
        add("peak RSS streaming, no cache (MB)", "<", 3072, m["pipeline_first_pass"]["peak_rss_mb"])
    if "pipeline_steady_state" in m:
        s = m["pipeline_steady_state"]
        add("peak RSS cached - cached bytes (MB)", "<", 1536, s["peak_rss_mb"] - s["cache_mb"])
    for name, x in r.items():
        if name.startswith("convert_"):
            enc, _, read = name.partition("_vs_")
            cache = "warm page cache" if read.endswith("warm") else (
                "from disk" if m[read].get("cold_cache") else "page cache")
            add(f"{enc} / read files ({cache})", ">=", 0.8, x)
    return rows


def format_table(result: dict) -> str:
    """The printed report: measurements, ratios, targets."""
    m = result["measurements"]
    st = result["settings"]
    mc = result["machine"]
    lines = [f"leukemia-bench {result['command']}  {result['date']}  {mc['cpu_model']} "
             f"x{mc['cpus_usable']}, {mc['ram_gb']} GB, TF {mc['tf_version']}",
             f"{st['num_train_images']} training images, stored {st['stored_encoding']}"
             f"@{st['stored_size']}, output {st['image_size']}px, batch {st['batch_size']}",
             "", f"{'measurement':<44}{'img/s':>11}{'peak RSS MB':>13}{'load':>6}  notes"]
    for name, x in m.items():
        notes = []
        if "bytes_per_image" in x:
            notes.append(f"{x['bytes_per_image'] / 1024:.0f} KiB/img")
        if "rss_growth_mb_per_1000" in x:
            notes.append(f"RAM/1000 img: {x['rss_growth_mb_per_1000']:.0f} MB RSS growth, "
                         f"{x['held_mb_per_1000']:.0f} MB held")
        if x.get("cache_mb"):
            notes.append(f"cache {x['cache_mb']:.0f} MB")
        if len(x.get("runs_images_per_sec", ())) > 1:
            notes.append("runs " + "/".join(f"{v:.0f}" for v in x["runs_images_per_sec"]))
        if "ratio" in x:
            notes.append(f"{x['pipeline']['steps_per_sec']:.2f} vs "
                         f"{x['synthetic']['steps_per_sec']:.2f} steps/s synthetic (median "
                         f"step); ratio of means {x['ratio_of_means']:.3f}")
        for enc, e in x.get("by_encoding", {}).items():
            notes.append(f"{enc}: {e['images_per_sec']:.0f}")
        lines.append(f"{name:<44}{x['images_per_sec']:>11.1f}{x['peak_rss_mb']:>13.0f}"
                     f"{x['load_1m']:>6.1f}  {'; '.join(notes)}")
    if result["ratios"]:
        lines += ["", f"{'ratio':<56}{'value':>10}"]
        lines += [f"{k:<56}{v:>10.3f}" for k, v in result["ratios"].items()]
    if result["targets"]:
        lines += ["", f"{'target':<56}{'target':>10}{'measured':>12}  pass"]
        lines += [f"{t['name']:<56}{t['target']:>10}{t['measured']:>12g}  "
                  f"{'PASS' if t['pass'] else 'MISS'}" for t in result["targets"]]
    return "\n".join(lines)
