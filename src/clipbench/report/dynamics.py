"""How each run moved, not only where it ended: stability and time to target.

Per run: the total variation of the validation main metric over epochs, the sd of the
training loss over the last quarter of its steps after removing the linear trend
(``history.csv`` split ``train_step``, metric ``loss``), and the first epoch at which the
validation main metric reaches the target: the trivial baseline plus a share of the best final
gain over it, its cost counted in training samples (steps × samples per step, so methods
with larger batches are not favoured) and wall time.
Per method these become means with t intervals; clipped methods are paired with their
unclipped twins seed by seed, as the final metrics are.
"""
from __future__ import annotations

import pandas as pd

from clipbench.report import claims, stats
from clipbench.report.compare import higher_is_better, paired_diffs
from clipbench.report.names import METRIC_LABEL, TWIN, main_metric, method_label, ordered_methods

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


def stability(history: pd.DataFrame, task: str, section: dict | None = None,
              twin_of: dict[str, str] | None = None) -> dict:
    """Per method: each measure's mean and interval; per clipped method vs its twin: a
    ``stability`` claim per measure, its margin a share (``report.relative_margin``) of the twin's mean."""
    section = section or claims.margins(None)
    runs = per_run(history, task)
    methods = ordered_methods(runs["method"])
    rows = [{"method": m, "label": method_label(m),
             **{k: stats.t_interval(runs.loc[runs["method"] == m, k]) for k in MEASURES}} for m in methods]
    pairs = []
    for clipped, twin in (TWIN if twin_of is None else twin_of).items():
        if clipped not in methods or twin not in methods:
            continue
        a, b = (runs[runs["method"] == m].set_index("seed") for m in (clipped, twin))
        for key in MEASURES:
            diffs, _ = paired_diffs(a[key], b[key])
            reference = stats.t_interval(b[key])["mean"]
            # A share of the twin's value, but never below the margin of the quantity's own units
            # (the main metric for its total variation, the loss for its sd): a curve that barely
            # moves must not make a 0.001 dB difference a direction.
            floor = (section.get("margins") or {}).get(main_metric(task) if key == "total_variation" else "loss", 0.0)
            margin = max(float(section["relative_margin"]) * abs(reference or 0.0), float(floor))
            what = MEASURES[key].format(metric=METRIC_LABEL.get(main_metric(task), main_metric(task)))
            claim = claims.compare("stability", task, [clipped, twin], key,
                                   diffs, margin,
                                   "oscillation", what, method_label(clipped), method_label(twin), digits=3,
                                   relative_margin=float(section["relative_margin"]), twin_mean=reference)
            pairs.append({"a": clipped, "b": twin, "measure": key, "claim": claim})
    return {"rows": rows, "pairs": pairs, "runs": runs}


def time_to_target(history: pd.DataFrame, summary: pd.DataFrame, walls: pd.DataFrame, task: str,
                   baseline: float | None = None, section: dict | None = None) -> dict:
    """Per method: training samples and wall time until val main metric first reaches the
    target, the baseline plus ``report.target_share`` of the best method's final gain over it
    (a ``target`` claim each: the mean over the seeds that reached it)."""
    section = section or claims.margins(None)
    share = float(section["target_share"])
    metric, hib = main_metric(task), higher_is_better(task)
    final = summary[(summary["task"] == task) & (summary["split"] == "val") & (summary["metric"] == metric)]
    means = final.groupby("method")["value"].mean().dropna()
    if means.empty:
        return {"target": None, "rows": [], "claims": []}
    best = float(means.max() if hib else means.min())
    target = stats.target_value(best, baseline, share, hib)
    h = history[(history["task"] == task) & (history["split"] == "val") & (history["metric"] == metric)]
    w = walls[walls["task"] == task][["method", "seed", "epoch", "wall_time_s"]]
    h = h.merge(w, on=["method", "seed", "epoch"], how="left") if not w.empty else h.assign(wall_time_s=None)
    per_step = summary[summary["task"] == task].drop_duplicates(["method", "seed"])[["method", "seed", "samples_per_step"]] \
        if "samples_per_step" in summary else pd.DataFrame(columns=["method", "seed", "samples_per_step"])
    h = h.merge(per_step, on=["method", "seed"], how="left")
    rows, records = [], []
    what = f"val {METRIC_LABEL.get(metric, metric)} {claims.fmt(target, 4)}"
    for method in ordered_methods(h["method"]):
        hits = [(stats.time_to_target(g.sort_values("epoch"), target, hib), g["samples_per_step"].iloc[0])
                for _, g in h[h["method"] == method].groupby("seed")]
        reached = [(x, per) for x, per in hits if x["step"] is not None]
        samples = [x["step"] * per for x, per in reached if per is not None and pd.notna(per)]
        walls_s = [x["wall_time_s"] for x, _ in reached if x["wall_time_s"] is not None]
        row = {"method": method, "label": method_label(method), "seeds": len(hits), "reached": len(reached),
               "step": stats.t_interval([x["step"] for x, _ in reached]),
               "samples": stats.t_interval(samples) if samples else None,
               "wall_time_s": stats.t_interval(walls_s) if walls_s else None}
        rows.append(row)
        records.append(_target_claim(task, method, metric, what, row))
    return {"target": target, "best": best, "baseline": baseline, "share": share, "metric": metric,
            "rows": rows, "claims": records}


def _target_claim(task: str, method: str, metric: str, what: str, row: dict) -> dict:
    label, n, total = method_label(method), row["reached"], row["seeds"]
    cost = row["samples"] or {"mean": None, "lo": None, "hi": None}
    if n == 0:
        verdict, sentence = "not_reached", f"{label} did not reach {what} in any of its {total} seed(s)."
    else:
        wall = row["wall_time_s"]
        spent = f"{cost['mean']:.0f} training samples" if cost["mean"] is not None else f"step {row['step']['mean']:.0f}"
        if cost.get("lo") is not None and cost["hi"] > cost["lo"]:
            spent += f" (95% interval {max(cost['lo'], 0):.0f}–{cost['hi']:.0f})"
        if wall and wall.get("mean") is not None:
            spent += f" and {wall['mean']:.1f} s of training"
        verdict = "reached" if n == total else "undecided"
        sentence = f"{label} reached {what} in {n} of {total} seed(s), after {spent} (mean over those seeds)."
    return claims.make("target", task, [method], metric, cost["mean"], (cost.get("lo"), cost.get("hi")), n, None,
                       verdict, sentence, seeds=total, step=row["step"]["mean"] if n else None)
