"""How each run moved, not only where it ended: stability and time to target.

Per run: the total variation of the validation main metric over epochs, the sd of the
training loss over the last quarter of its steps after removing the linear trend
(``history.csv`` split ``train_step``, metric ``loss``), and the first epoch at which the
validation main metric reaches 90% of the best final value among the task's methods.
Per method these become means with t intervals; clipped methods are paired with their
unclipped twins seed by seed, as the final metrics are.
"""
from __future__ import annotations

import pandas as pd

from clipbench.report import stats
from clipbench.report.compare import higher_is_better
from clipbench.report.names import TWIN, main_metric, method_label, ordered_methods

MEASURES = {"total_variation": "total variation of val {metric} over epochs",
            "loss_sd": "sd of the detrended training loss, last quarter of steps"}


def per_run(history: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per (method, seed): total_variation and loss_sd."""
    metric = main_metric(task)
    h = history[history["task"] == task]
    rows = []
    for (method, seed), g in h.groupby(["method", "seed"]):
        val = g[(g["split"] == "val") & (g["metric"] == metric)].sort_values("epoch")
        loss = g[(g["split"] == "train_step") & (g["metric"] == "loss")].sort_values("step")
        rows.append({"method": method, "seed": seed,
                     "total_variation": stats.total_variation(val["value"]),
                     "loss_sd": stats.detrended_sd(loss["step"], loss["value"])})
    return pd.DataFrame(rows, columns=["method", "seed", *MEASURES])


def stability(history: pd.DataFrame, task: str) -> dict:
    """Per method: each measure's mean and interval; per clipped method vs its twin: paired
    differences and one sentence each, from those numbers."""
    runs = per_run(history, task)
    methods = ordered_methods(runs["method"])
    rows = [{"method": m, "label": method_label(m),
             **{k: stats.t_interval(runs.loc[runs["method"] == m, k]) for k in MEASURES}} for m in methods]
    pairs = []
    for clipped, twin in TWIN.items():
        if clipped not in methods or twin not in methods:
            continue
        a, b = (runs[runs["method"] == m].set_index("seed") for m in (clipped, twin))
        for key in MEASURES:
            diff = stats.paired_difference(a[key], b[key])
            pairs.append({"a": clipped, "b": twin, "measure": key, "diff": diff,
                          "sentence": _oscillation_sentence(diff, method_label(clipped), method_label(twin), key)})
    return {"rows": rows, "pairs": pairs, "runs": runs}


def _oscillation_sentence(diff: dict, a: str, b: str, key: str) -> str:
    what = "total variation of the validation metric" if key == "total_variation" else "detrended training-loss sd"
    if diff["n"] < 2:
        return f"{a} vs {b} ({what}): {diff['n']} paired seed(s), too few to say whether it oscillates less."
    span = f"{what} {a} − {b}: {diff['mean']:+.4g}, 95% t interval [{diff['lo']:+.4g}, {diff['hi']:+.4g}], {diff['n']} seeds"
    if not diff["excludes_zero"]:
        return f"{a} does not measurably oscillate less than {b} ({span}; includes 0)."
    less = diff["mean"] < 0
    return f"{a} oscillates {'less' if less else 'more'} than {b} ({span}; excludes 0)."


def time_to_target(history: pd.DataFrame, summary: pd.DataFrame, walls: pd.DataFrame, task: str,
                   fraction: float = 0.9) -> dict:
    """Per method: steps and wall time until val main metric first reaches ``fraction`` of the
    best final value among the task's methods (mean over the seeds that reached it)."""
    metric, hib = main_metric(task), higher_is_better(task)
    final = summary[(summary["task"] == task) & (summary["split"] == "val") & (summary["metric"] == metric)]
    means = final.groupby("method")["value"].mean().dropna()
    if means.empty:
        return {"target": None, "rows": []}
    best = means.max() if hib else means.min()
    target = stats.target_value(float(best), hib, fraction)
    h = history[(history["task"] == task) & (history["split"] == "val") & (history["metric"] == metric)]
    w = walls[walls["task"] == task][["method", "seed", "epoch", "wall_time_s"]]
    h = h.merge(w, on=["method", "seed", "epoch"], how="left") if not w.empty else h.assign(wall_time_s=None)
    rows = []
    for method in ordered_methods(h["method"]):
        hits = [stats.time_to_target(g.sort_values("epoch"), target, hib)
                for _, g in h[h["method"] == method].groupby("seed")]
        reached = [x for x in hits if x["step"] is not None]
        walls_s = [x["wall_time_s"] for x in reached if x["wall_time_s"] is not None]
        rows.append({"method": method, "label": method_label(method), "seeds": len(hits), "reached": len(reached),
                     "step": stats.t_interval([x["step"] for x in reached]),
                     "wall_time_s": stats.t_interval(walls_s) if walls_s else None})
    return {"target": target, "best": float(best), "fraction": fraction, "metric": metric, "rows": rows}
