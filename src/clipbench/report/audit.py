"""Which runs the numbers stand on, and which they do not.

A failed run (its training job crashed or was killed), a diverged run, a run of the config
that has no results, and a non-finite value (inf, NaN) are each listed with the reason; the
non-finite values are kept out of every mean, interval and verdict (set to NaN in the copy of
the summary the report computes from), so that one inf PSNR cannot make a method "best" and a
row never says "3 seeds" while its mean uses 2.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clipbench.report.names import main_metric, method_label, task_label
from clipbench.runfiles import TASK_SPLITS


def expected_runs(config: dict | None) -> set[tuple[str, str, int]]:
    """(task, method, seed) of every training run the config asks for (empty without a config)."""
    if not config or "run" not in config:
        return set()
    from clipbench import config as cfgmod

    return {(t, m, int(s)) for t in config["run"]["tasks"]
            for m in cfgmod.task_methods(config, t) for s in config["run"]["seeds"]}


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def audit(summary: pd.DataFrame, history: pd.DataFrame, config: dict | None = None):
    """(summary, history) with non-finite values set to NaN, and the audit: the runs and values
    left out, each with its reason, and per (task, method) the seeds used out of those asked for."""
    summary, history = summary.copy(), history.copy()
    runs = summary.drop_duplicates(["task", "method", "seed"])
    failed, diverged = [], []
    for _, r in runs.iterrows():
        key = {"task": r["task"], "method": r["method"], "seed": int(r["seed"]), "run_dir": r.get("run_dir")}
        if r["status"] == "failed":
            failed.append({**key, "why": _failure(r.get("run_dir"))})
        elif r["status"] == "diverged":
            rows = summary[(summary["task"] == r["task"]) & (summary["method"] == r["method"])
                           & (summary["seed"] == r["seed"]) & (summary["split"] == "val")]
            diverged.append({**key, "has_values": bool(rows["value"].notna().any())})
    have = {(r["task"], r["method"], int(r["seed"])) for _, r in runs.iterrows()}
    missing = [{"task": t, "method": m, "seed": s} for t, m, s in sorted(expected_runs(config) - have)]

    bad = summary["metric"].notna() & ~summary["value"].map(_finite)
    nonfinite = [{"task": r["task"], "method": r["method"], "seed": int(r["seed"]), "split": r["split"],
                  "metric": r["metric"], "value": str(r["value"])} for _, r in summary[bad].iterrows()]
    summary.loc[bad, "value"] = np.nan
    if not history.empty and failed:
        # A failed run's curve stops wherever it crashed: not a curve of the method.
        gone = {(f["task"], f["method"], f["seed"]) for f in failed}
        keep = [(t, m, int(s)) not in gone for t, m, s in zip(history["task"], history["method"], history["seed"])]
        history = history[keep]
    if not history.empty:
        hbad = history["split"].isin(TASK_SPLITS) & ~history["value"].map(_finite)
        history.loc[hbad, "value"] = np.nan
        curve_points = int(hbad.sum())
    else:
        curve_points = 0

    cells = {}
    expected = expected_runs(config)
    for (task, method), g in runs.groupby(["task", "method"]):
        asked = sorted({s for t, m, s in expected if (t, m) == (task, method)} | set(g["seed"].astype(int)))
        main = summary[(summary["task"] == task) & (summary["method"] == method) & (summary["split"] == "val")
                       & (summary["metric"] == main_metric(task))]
        used = sorted(int(s) for s in main.dropna(subset=["value"])["seed"].unique())
        left = [s for s in asked if s not in used]
        cells[(task, method)] = {"used": len(used), "asked": len(asked),
                                 "left_out": [f"seed {s}: {_reason(task, method, s, failed, missing, nonfinite)}"
                                              for s in left]}
    return summary, history, {
        "failed": failed, "diverged": diverged, "missing": missing, "nonfinite": nonfinite,
        "curve_points": curve_points, "cells": cells, "lines": _lines(failed, diverged, missing, nonfinite,
                                                                        curve_points)}


def _failure(run_dir) -> str:
    from pathlib import Path

    from clipbench import files, runfiles

    if not isinstance(run_dir, str):
        return "failed"
    path = Path(run_dir) / runfiles.METRICS_JSON
    f = (files.read_json(path).get("failure") or {}) if path.is_file() else {}
    log = f" (log: {f['log']})" if f.get("log") else ""
    return f"failed: {f.get('error') or 'no error recorded'}{log}"


def _reason(task, method, seed, failed, missing, nonfinite) -> str:
    for f in failed:
        if (f["task"], f["method"], f["seed"]) == (task, method, seed):
            return f["why"]
    if any((m["task"], m["method"], m["seed"]) == (task, method, seed) for m in missing):
        return "no results (its job did not run or did not finish)"
    for v in nonfinite:
        if (v["task"], v["method"], v["seed"]) == (task, method, seed) and v["metric"] == main_metric(task):
            return f"{v['split']} {v['metric']} = {v['value']} (non-finite)"
    return "no final value (diverged before its first evaluation)"


def _run(r) -> str:
    return f"{task_label(r['task'])} / {method_label(r['method'])} / seed {r['seed']}"


def _lines(failed, diverged, missing, nonfinite, curve_points) -> list[str]:
    """The sentences at the top of the report; none when every run finished with finite values."""
    out = [f"Failed, left out of every number: {_run(f)}; {f['why']}." for f in failed]
    out += [f"Asked for by the config but without results, left out of every number: {_run(m)}." for m in missing]
    out += [f"Non-finite value, left out of means, intervals and verdicts: {_run(v)}: {v['split']} {v['metric']} = "
            f"{v['value']}." for v in nonfinite]
    out += [f"Diverged (non-finite loss, gradient or parameters; its last finite evaluation is what the tables "
            f"use, and the status column says so): {_run(d)}." for d in diverged if d["has_values"]]
    out += [f"Diverged before its first evaluation, so it has no value, left out of every number: {_run(d)}."
            for d in diverged if not d["has_values"]]
    if curve_points:
        out.append(f"{curve_points} non-finite point(s) of the per-epoch curves are left out of the figures and "
                   "the time-to-target.")
    return out


# Claims over seeds, whose sentence says which of a subject's seeds were left out and why.
_OVER_SEEDS = ("paired", "baseline", "target", "stability")


def annotate(records: list[dict], audited: dict) -> None:
    """Each claim over seeds says which seeds of its methods were left out, and why."""
    cells = audited["cells"]
    for c in records:
        if c["kind"] not in _OVER_SEEDS or not c.get("task"):
            continue
        notes = [f"{method_label(m)} {why}" for m in c["subjects"] for why in cells.get((c["task"], m), {}).get("left_out", [])]
        if notes:
            c["sentence"] += f" Left out: {'; '.join(notes)}."
            c.setdefault("detail", {})["left_out"] = notes
