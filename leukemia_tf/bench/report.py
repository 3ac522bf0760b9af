"""Benchmark results: machine info, each figure's limits, ratios, targets, the table.

Every target is a ratio against a limit measured in the same run: absolute images/s
measure the machine (two machines of one kind differed 7x), so they are printed as
information, with the machine's description, and never passed or failed.
"""
from __future__ import annotations

import os
import platform
from typing import Dict, List, Optional

import tensorflow as tf

from leukemia_tf import io

# figure -> the measurements it is held against (when measured in the same run).
LIMITS = {
    "pipeline_first_pass": ("decode_ceiling", "image_dataset_from_directory", "seed_numpy"),
    "pipeline_steady_state": ("bare_pipeline", "image_dataset_from_directory", "seed_numpy"),
}


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
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": model, "gpus": gpus,
            "ram_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "tf_version": tf.__version__, "tf_keras_version": tf_keras.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def _rate(m: dict, name: str) -> Optional[float]:
    return m[name]["images_per_sec"] if name in m else None


def _limit_names(m: Dict[str, dict], name: str) -> List[str]:
    if name in LIMITS:
        return [k for k in LIMITS[name] if k in m]
    if name.startswith("pipeline_steady_state_cpu_"):
        return ["pipeline_steady_state"] if "pipeline_steady_state" in m else []
    if name.startswith("first_pass/") and name != "first_pass/image_dataset_from_directory":
        return [k for k in ("first_pass/image_dataset_from_directory",) if k in m]
    if name.startswith("convert_"):
        return [k for k in ("read_files", "read_files_warm") if k in m]
    return []


def attach_limits(m: Dict[str, dict]) -> None:
    """Put beside each figure (as x["limits"]) every limit measured for it: the limit's
    rate and the figure's ratio to it. Training rows: the synthetic-input step and the
    machine's dense FLOP/s (ratio = FLOP utilisation)."""
    for name, x in m.items():
        lim = {k: {"images_per_sec": _rate(m, k), "ratio": x["images_per_sec"] / _rate(m, k)}
               for k in _limit_names(m, name)}
        if name.startswith("first_pass/") and "decode_ceiling" in m:
            enc = name[len("first_pass/"):]
            ceiling = m["decode_ceiling"].get("by_encoding", {}).get(enc)
            if ceiling:
                lim["decode_ceiling/" + enc] = {
                    "images_per_sec": ceiling["images_per_sec"],
                    "ratio": x["images_per_sec"] / ceiling["images_per_sec"]}
        if name.startswith("train/"):
            if "pipeline" in x:
                lim["synthetic_input"] = {"images_per_sec": x["synthetic"]["images_per_sec"],
                                          "ratio": x["ratio"]}
            lim["machine_dense_flops"] = {
                "flops_per_sec": x["machine"]["peak_flops_per_sec"],
                "dtype": x["machine"]["peak_dtype"],
                "train_flops_per_image": x["train_flops_per_image"],
                "ratio": x["flop_utilisation"]}
        x["limits"] = lim


def _short(name: str) -> str:
    return name[len("pipeline_"):] if name.startswith("pipeline_") else name


def ratios(m: Dict[str, dict]) -> Dict[str, float]:
    """`<figure>_vs_<limit>` for every limit beside every figure (see attach_limits);
    training rows: `<row>/pipeline_vs_synthetic` and `<row>/flop_utilisation`."""
    out = {}
    for name, x in m.items():
        for limit, v in x.get("limits", {}).items():
            if name.startswith("train/"):
                key = "pipeline_vs_synthetic" if limit == "synthetic_input" else \
                    "flop_utilisation"
                out[f"{name}/{key}"] = v["ratio"]
            else:
                out[f"{_short(name)}_vs_{_short(limit)}"] = v["ratio"]
    return out


def targets(m: Dict[str, dict], r: Dict[str, float]) -> List[dict]:
    """The ratio targets these measurements can decide: target, measured, limit, pass.
    Peak RSS targets are in MB (memory, not speed)."""
    rows = []

    def add(name, op, target, measured, limit=""):
        if measured is not None:
            ok = measured >= target if op == ">=" else measured < target
            rows.append({"name": name, "target": f"{op} {target:g}", "limit": limit,
                         "measured": round(measured, 3), "pass": bool(ok)})
    add("first pass / decode ceiling (stored encoding)", ">=", 0.9,
        r.get("first_pass_vs_decode_ceiling"), "decode_ceiling")
    add("first pass / image_dataset_from_directory", ">=", 1.0,
        r.get("first_pass_vs_image_dataset_from_directory"), "image_dataset_from_directory")
    add("steady state / bare cached-tensor pipeline", ">=", 0.9,
        r.get("steady_state_vs_bare_pipeline"), "bare_pipeline")
    for name, x in m.items():
        if name.startswith("train/") and "ratio" in x:
            add(f"{name}: pipeline / synthetic input", ">=", 0.95, x["ratio"],
                "synthetic_input")
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
            add(f"{enc} / read files ({cache})", ">=", 0.8, x, read)
    return rows


def _limit_text(name: str, v: dict) -> str:
    if "flops_per_sec" in v:
        return (f"FLOP util {100 * v['ratio']:.1f}% of {v['flops_per_sec'] / 1e9:.0f} "
                f"GFLOP/s {v['dtype']}")
    return f"{name} {v['images_per_sec']:.0f} ({v['ratio']:.2f}x)"


def _notes(x: dict) -> List[str]:
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
    for enc, e in x.get("by_encoding", {}).items():
        notes.append(f"{enc}: {e['images_per_sec']:.0f}")
    return notes


def _train_table(m: Dict[str, dict]) -> List[str]:
    rows = {k: x for k, x in m.items() if k.startswith("train/")}
    if not rows:
        return []
    w = max(len(k) for k in rows) + 2
    lines = ["", f"{'training step':<{w}}{'jit':>5}{'spe':>5}{'synthetic':>11}{'pipeline':>10}"
             f"{'GFLOP/img':>11}{'GFLOP/s':>9}{'FLOP util':>11}",
             f"{'':<{w}}{'':>10}{'img/s':>11}{'img/s':>10}{'(train)':>11}{'machine':>9}"]
    for k, x in rows.items():
        pipe = f"{x['pipeline']['images_per_sec']:.1f}" if "pipeline" in x else "-"
        lines.append(f"{k:<{w}}{'on' if x['jit_compile_resolved'] else 'off':>5}"
                     f"{x['settings']['steps_per_execution']:>5}"
                     f"{x['synthetic']['images_per_sec']:>11.1f}{pipe:>10}"
                     f"{x['train_flops_per_image'] / 1e9:>11.3f}"
                     f"{x['machine']['peak_flops_per_sec'] / 1e9:>9.0f}"
                     f"{100 * x['flop_utilisation']:>10.1f}%")
    return lines


def _first_pass_table(m: Dict[str, dict]) -> List[str]:
    rows = {k: x for k, x in m.items() if k.startswith("first_pass/")}
    if not rows:
        return []
    lines = ["", f"{'first epoch by stored encoding':<46}{'KiB/img':>9}{'img/s':>10}"
                 f"{'vs idfd':>9}{'ceiling':>9}"]
    for k, x in rows.items():
        lim = x.get("limits", {})
        peer = lim.get("first_pass/image_dataset_from_directory")
        ceiling = next((v for n, v in lim.items() if n.startswith("decode_ceiling/")), None)
        kib = x.get("bytes_per_image", 0) / 1024
        vs = f"{peer['ratio']:.2f}x" if peer else "-"
        top = f"{ceiling['images_per_sec']:.0f}" if ceiling else "-"
        lines.append(f"{k:<46}{kib:>9.0f}{x['images_per_sec']:>10.1f}{vs:>9}{top:>9}")
    return lines


def format_table(result: dict) -> str:
    """The printed report: every figure with its limits, the training-step and
    first-epoch tables, ratios and ratio targets."""
    m = result["measurements"]
    st = result["settings"]
    mc = result["machine"]
    w = max([44] + [len(k) + 2 for k in m])
    lines = [f"leukemia-bench {result['command']}  {result['date']}  {mc['cpu_model']} "
             f"x{mc['cpus_usable']}{' + ' + ', '.join(mc['gpus']) if mc.get('gpus') else ''}, "
             f"{mc['ram_gb']} GB, TF {mc['tf_version']}  (absolute img/s describe this "
             "machine; targets are ratios to limits measured in this run)",
             f"{st['num_train_images']} training images, stored {st['stored_encoding']}"
             f"@{st['stored_size']}, output {st['image_size']}px, batch {st['batch_size']}",
             "", f"{'measurement':<{w}}{'img/s':>11}{'peak RSS MB':>13}{'load':>6}  "
                 "limits (ratio); notes"]
    for name, x in m.items():
        parts = [_limit_text(k, v) for k, v in x.get("limits", {}).items()] + _notes(x)
        lines.append(f"{name:<{w}}{x['images_per_sec']:>11.1f}{x['peak_rss_mb']:>13.0f}"
                     f"{x['load_1m']:>6.1f}  {'; '.join(parts)}")
    lines += _train_table(m) + _first_pass_table(m)
    if result["ratios"]:
        rw = max(56, max(len(k) for k in result["ratios"]) + 2)
        lines += ["", f"{'ratio':<{rw}}{'value':>10}"]
        lines += [f"{k:<{rw}}{v:>10.3f}" for k, v in result["ratios"].items()]
    if result["targets"]:
        tw = max(56, max(len(t["name"]) for t in result["targets"]) + 2)
        lines += ["", f"{'target (ratio to a limit of this run)':<{tw}}{'target':>10}"
                      f"{'measured':>12}  pass"]
        lines += [f"{t['name']:<{tw}}{t['target']:>10}{t['measured']:>12g}  "
                  f"{'PASS' if t['pass'] else 'MISS'}" for t in result["targets"]]
    return "\n".join(lines)
