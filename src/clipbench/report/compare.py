"""Comparisons the report states in words: method against method (paired by seed), method
against its task's trivial baseline, and clipped method against its unclipped twin.

Every sentence is made here from the numbers, so the page never says more than they do.
"""
from __future__ import annotations

import pandas as pd

from clipbench.report import stats
from clipbench.report.names import METRIC_LABEL, TWIN, main_metric, method_label, ordered_methods
from clipbench.tasks import registry

# A clipped run that clipped in fewer than this share of its steps was its unclipped twin.
INACTIVE_CLIPPING = 0.01


def higher_is_better(task: str) -> bool:
    try:
        return registry.get(task).higher_is_better
    except ValueError:
        return True


def _by_seed(summary: pd.DataFrame, task: str, metric: str, split: str = "val") -> dict[str, pd.Series]:
    d = summary[(summary["task"] == task) & (summary["split"] == split) & (summary["metric"] == metric)]
    return {m: g.groupby("seed")["value"].mean() for m, g in d.groupby("method")}


def paired_table(summary: pd.DataFrame, task: str) -> dict:
    """Clipped method − its twin, and every method − the task's best, on the val main metric."""
    metric, hib = main_metric(task), higher_is_better(task)
    series = _by_seed(summary, task, metric)
    means = {m: s.mean() for m, s in series.items() if s.notna().any()}
    if not means:
        return {"metric": metric, "best": None, "rows": [], "n_seeds": 0}
    best = (max if hib else min)(means, key=means.get)
    methods = ordered_methods(means)
    pairs = [(a, b) for a, b in TWIN.items() if a in means and b in means]
    # Against the best: each method once (a twin pair that includes the best already says it).
    pairs += [(m, best) for m in methods if m != best and (m, best) not in pairs and (best, m) not in pairs]
    rows = []
    for a, b in pairs:
        diff = stats.paired_difference(series[a], series[b])
        la, lb = method_label(a), method_label(b)
        rows.append({"a": a, "b": b, "label": f"{la} − {lb}", "kind": "twin" if TWIN.get(a) == b else "best",
                     "diff": diff, "sentence": stats.verdict(diff, hib, la, lb)})
    return {"metric": metric, "best": best, "best_label": method_label(best), "rows": rows,
            "n_seeds": max(int(s.notna().sum()) for s in series.values())}


def baseline_flag(interval: dict, baseline: float, hib: bool) -> bool:
    """Whether a method's final mean is within noise of (or behind) a baseline value.

    With an interval (≥ 2 seeds): the interval reaches the baseline. With one seed there is
    no noise estimate: flagged only when the value is at or behind the baseline.
    """
    if interval.get("mean") is None or baseline is None:
        return False
    if interval.get("lo") is not None:
        return interval["lo"] <= baseline if hib else interval["hi"] >= baseline
    return interval["mean"] <= baseline if hib else interval["mean"] >= baseline


def flag_rows(rows: list[dict], baselines: list[dict], summary: pd.DataFrame, task: str) -> None:
    """Add ``flags`` (sentences) to ``tables.final_table`` rows: no better than a baseline,
    and clipping that was (nearly) never active."""
    metric, hib = main_metric(task), higher_is_better(task)
    runs = summary[(summary["task"] == task) & (summary["split"] == "run") & (summary["metric"] == "clip_fraction")]
    for row in rows:
        flags = []
        interval = row["metrics"].get(metric) or {}
        for b in baselines:
            value = (b["metrics"].get(metric) or {}).get("mean")
            if value is not None and baseline_flag(interval, value, hib):
                flags.append(f"no better than {b['phrase']}: its val {METRIC_LABEL.get(metric, metric)} ends "
                             f"within noise of {b['phrase']} ({value:.3f}).")
        twin = TWIN.get(row["method"])
        fractions = runs.loc[runs["method"] == row["method"], "value"].dropna()
        idle = int((fractions < INACTIVE_CLIPPING).sum())
        if twin and idle:
            flags.append(f"clipping was active in < 1% of steps in {idle} of {len(fractions)} run(s): "
                         f"there it behaved as its unclipped twin, {method_label(twin)}.")
        row["flags"] = flags
