"""The report's tables: our final numbers per method beside the thesis' published ones."""
from __future__ import annotations

from importlib import resources

import pandas as pd
import yaml

from clipbench.report import stats
from clipbench.report.names import PER_CLASS_PREFIX, main_metric, method_label, ordered_methods


def published() -> dict:
    return yaml.safe_load(resources.files("clipbench").joinpath("report/published.yaml").read_text())


def final_table(summary: pd.DataFrame, task: str) -> list[dict]:
    """One row per method: mean, sd and 95% t interval over seeds of each final val metric (and
    of the main metric at x, split "val_x", where the method records it), thesis value, status."""
    pub = published().get(task, {})
    df = summary[summary["task"] == task]
    rows = []
    for method in ordered_methods(df["method"]):
        d = df[df["method"] == method]
        val = d[d["split"] == "val"]
        metrics = {}
        # sort=False keeps the runs' own order, which for per-class values is the class order.
        for metric, g in val.groupby("metric", sort=False):
            metrics[metric] = stats.t_interval(g["value"])
        at_x = d[(d["split"] == "val_x") & (d["metric"] == main_metric(task))]["value"]
        run = d[d["split"] == "run"].groupby("metric")["value"].mean()
        statuses = d.drop_duplicates("seed")["status"].tolist()
        rows.append({
            "method": method,
            "label": method_label(method),
            "metrics": metrics,
            "seeds": int(d["seed"].nunique()),
            "diverged": sum(s == "diverged" for s in statuses),
            "published": pub.get("values", {}).get(method),
            "wall_time_s": d.drop_duplicates("seed")["wall_time_s"].sum(),
            "clip_fraction": run.get("clip_fraction"),
            "clip_scale_mean": run.get("clip_scale_mean"),
            "clip_entry_fraction": run.get("clip_entry_fraction"),
            "val_x": stats.t_interval(at_x) if len(at_x) else None,
            "flags": [],
        })
    return rows


def metric_names(rows: list[dict], task: str) -> list[str]:
    names = sorted({m for r in rows for m in r["metrics"] if not m.startswith(PER_CLASS_PREFIX)})
    main = main_metric(task)
    return ([main] if main in names else []) + [n for n in names if n != main]


def per_class_table(rows: list[dict], prefix: str = PER_CLASS_PREFIX) -> dict | None:
    """Per-class values (e.g. IoU) as class x method, from ``final_table``'s rows; None if there are none.

    Classes keep the order the runs recorded them in (the task's class order, as VOC tables
    list them), so the report needs no list of class names of its own.
    """
    names = list(dict.fromkeys(m for r in rows for m in r["metrics"] if m.startswith(prefix)))
    if not names:
        return None
    return {
        "methods": [r["label"] for r in rows],
        "rows": [{"name": n[len(prefix):], "values": [(r["metrics"].get(n) or {}).get("mean") for r in rows]}
                 for n in names],
    }


def baseline_rows(baselines_dir, task: str) -> list[dict]:
    """Rows of ``<baselines_dir>/<task>.json`` (from ``clipbench baseline``) shaped like ``final_table``'s."""
    import json
    from pathlib import Path

    if baselines_dir is None:
        return []
    path = Path(baselines_dir) / f"{task}.json"
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())["rows"]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a baseline file ({{'task', 'rows': [...]}} from `clipbench baseline`): {exc}") from exc
    # ``phrase`` names the baseline in a sentence ("no better than <phrase>").
    return [{"label": r.get("label", r["method"]), "phrase": r.get("phrase") or r.get("label", r["method"]),
             "metrics": {k: {"mean": v, "sd": None, "half": None, "n": 1} for k, v in r["metrics"].items()}}
            for r in rows]
