"""A trained task's section as the page shows it: the final-metric table (with the seeds the
audit kept), the paired differences, stability and time to target, baselines and flags, the
learning-curve figures, and every claim they state; plus the page's first answer per task and
the stability figure across tasks."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipbench.report import compare, dynamics, figures, tables
from clipbench.report.names import METRIC_LABEL, main_metric, shown_tasks, task_label, task_notes


def sections(summary: pd.DataFrame, history: pd.DataFrame, walls: pd.DataFrame, baselines: str | Path | None,
             out: Path, margins: dict, config: dict | None, audited: dict, workers: int = 1) -> list[dict]:
    """One section per task shown, in the page's order; its curve figures are drawn under
    ``out/figures`` by ``workers`` processes (training-free baselines from
    ``baselines/<task>.json`` as dashed lines)."""
    shown = shown_tasks(summary["task"])
    baseline_rows = {t: tables.baseline_rows(baselines, t) for t in shown}
    figs = figures.curve_figures(history, out / "figures", baselines=baseline_rows, workers=workers)
    return [section(t, summary, history, walls, baseline_rows[t], figs.get(t, []), out, margins, config, audited)
            for t in shown]


def section(task: str, summary, history, walls, baselines: list[dict], figs: list[Path], out: Path,
            margins: dict, config: dict | None, audited: dict) -> dict:
    """What the templates show of ``task``; ``audited`` (``audit.audit``'s) gives each row the
    seeds used, asked for and left out, and its failed runs."""
    rows = tables.final_table(summary, task)
    twin_of = compare.twins(config, task, summary.loc[summary["task"] == task, "method"])
    paired = compare.paired_table(summary, task, margins, config)
    stability = dynamics.stability(history, task, margins, twin_of)
    metric = main_metric(task)
    base_value = next(((b["metrics"].get(metric) or {}).get("mean") for b in baselines
                       if (b["metrics"].get(metric) or {}).get("mean") is not None), None)
    ttt = dynamics.time_to_target(history, summary, walls, task, base_value, margins)
    flags = compare.baseline_claims(summary, task, baselines, margins) + compare.clipping_claims(summary, task, twin_of)
    compare.flag_rows(rows, flags)
    for row in rows:
        cell = audited["cells"].get((task, row["method"]), {})
        row["seeds"] = cell.get("used", row["seeds"])
        row["asked"] = cell.get("asked", row["seeds"])
        row["left_out"] = cell.get("left_out", [])
        row["failed"] = sum(f["task"] == task and f["method"] == row["method"] for f in audited["failed"])
    pub = tables.published()
    return {
        "name": task,
        "rows": rows,
        "metrics": tables.metric_names(rows, task),
        "main_metric": metric,
        "has_x": any(r["val_x"] for r in rows),
        "published": pub.get(task),
        "unknowns": (pub.get("unknowns") or {}).get(task, []),
        "baselines": baselines,
        "per_class": tables.per_class_table(rows),
        "notes": task_notes(task),
        "paired": paired,
        "stability": stability,
        "time_to_target": ttt,
        "claims": [r["claim"] for r in paired["rows"]] + [p["claim"] for p in stability["pairs"]] + flags
        + ttt["claims"],
        "figures": [figures.figure(p, out, _caption(task, p)) for p in _main_first(figs, task, metric)],
    }


def answers(tasks: list[dict]) -> list[dict]:
    """Per task, did clipping help: the twin claims on the main metric, the page's first answer."""
    return [{"name": t["name"], "metric": t["paired"]["metric"],
             "claims": [r["claim"] for r in t["paired"]["rows"] if r["kind"] == "twin"]} for t in tasks]


def stability_figure(tasks: list[dict], out: Path) -> dict | None:
    """Every task's runs' stability measures in one figure, or None when there is nothing to draw."""
    path = figures.stability_figure({t["name"]: t["stability"]["runs"] for t in tasks}, out / "figures")
    return figures.figure(path, out) if path else None


def _caption(task: str, path: Path) -> str:
    metric = path.stem[len(task) + 1:]
    thesis = (tables.published().get("figures") or {}).get(task, {}).get(metric)
    what = f"{task_label(task)}: {METRIC_LABEL.get(metric, metric)}, mean over seeds with a 95% t band"
    return f"{what}. Regenerates {thesis}." if thesis else f"{what}. No counterpart in the thesis."


def _main_first(paths: list[Path], task: str, main: str | None) -> list[Path]:
    """The figure of the task's main metric first, as the thesis shows them."""
    return sorted(paths, key=lambda p: (p.stem != f"{task}_{main}", p.stem))
