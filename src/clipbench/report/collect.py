"""Gather every run's ``metrics.json`` into the tidy ``results/summary.csv``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipbench import files
from clipbench.runfiles import CLIP_METRICS, HISTORY_CSV, HISTORY_FIELDS, METRICS_JSON

COLUMNS = ["task", "method", "seed", "split", "metric", "value", "status",
           "epochs", "steps", "samples_per_step", "wall_time_s", "images_per_s", "run_dir"]


def run_dirs(runs: str | Path) -> list[Path]:
    """Every finished run under ``runs`` (those with a metrics.json)."""
    return sorted(p.parent for p in Path(runs).glob(f"*/*/seed*/{METRICS_JSON}"))


def collect(runs: list[Path], out: str | Path) -> pd.DataFrame:
    """Summarise exactly the given run folders (the workflow passes its own run matrix)."""
    rows = []
    for run in runs:
        run = Path(run)
        m = files.read_json(run / METRICS_JSON)
        base = {k: m.get(k) for k in ("task", "method", "seed", "status", "epochs", "steps")}
        timing = m.get("timing") or m  # the engine keeps machine-dependent numbers under "timing"
        base.update({k: timing.get(k) for k in ("wall_time_s", "images_per_s")})
        # Training samples behind one optimizer step: what a step costs, whatever the method's batch.
        base["samples_per_step"] = m["batch_size"] * m.get("batch_multiplier", 1) if m.get("batch_size") else None
        base["run_dir"] = str(run)
        for split, metrics in (m.get("final") or {}).items():
            for metric, value in metrics.items():
                rows.append({**base, "split": split, "metric": metric, "value": value})
        # Whole-run telemetry (how often and how hard the method clipped) as split "run".
        for metric in CLIP_METRICS:
            value = (m.get("telemetry") or {}).get(metric)
            if value is not None:
                rows.append({**base, "split": "run", "metric": metric, "value": value})
        if not m.get("final"):
            # A run that diverged before its first evaluation still appears, with no value.
            rows.append({**base, "split": None, "metric": None, "value": None})
    df = pd.DataFrame(rows, columns=COLUMNS)
    files.write_text(out, df.to_csv(index=False))
    return df


def load_histories(runs: list[Path]) -> pd.DataFrame:
    """The given runs' ``history.csv`` in one frame, with task, method and seed columns."""
    frames = []
    for run in runs:
        run = Path(run)
        path = run / HISTORY_CSV
        if not path.exists() or path.stat().st_size == 0:
            continue
        h = pd.read_csv(path)
        m = files.read_json(run / METRICS_JSON)
        h["task"], h["method"], h["seed"] = m["task"], m["method"], m["seed"]
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=[*HISTORY_FIELDS, "task", "method", "seed"])
    return pd.concat(frames, ignore_index=True)


def epoch_wall_times(runs: list[Path]) -> pd.DataFrame:
    """Cumulative wall seconds at each epoch end (``timing.epoch_end_wall_s``), per run;
    empty for runs whose metrics.json does not record them."""
    rows = []
    for run in runs:
        m = files.read_json(Path(run) / METRICS_JSON)
        walls = (m.get("timing") or {}).get("epoch_end_wall_s") or []
        rows += [{"task": m["task"], "method": m["method"], "seed": m["seed"], "epoch": e, "wall_time_s": w}
                 for e, w in enumerate(walls, start=1)]
    return pd.DataFrame(rows, columns=["task", "method", "seed", "epoch", "wall_time_s"])


def _final_val(summary: pd.DataFrame) -> pd.DataFrame:
    """Final validation metrics only: per-class values and telemetry are the report's, not DVC's."""
    final = summary.dropna(subset=["metric"])
    # Finite values only: JSON has no inf or NaN (DVC would fail to read the file), and the
    # report leaves them out of its means too (report/audit.py).
    final = final[pd.to_numeric(final["value"], errors="coerce").map(lambda v: pd.notna(v) and abs(v) != float("inf"))]
    return final[(final["split"] == "val") & ~final["metric"].astype(str).str.startswith("iou_")]


def dvc_views(summary: pd.DataFrame, history: pd.DataFrame, metrics_json: str | Path, plots_dir: str | Path,
              metrics_dir: str | Path | None = None) -> None:
    """What ``dvc metrics show`` and ``dvc plots show`` read.

    ``metrics_json``: {task: {method: {"val_<main metric>": mean over seeds}}}, the metric each
    task is judged by, so ``dvc exp show`` has one numeric column per task and method
    (``classification.sgd.val_top1``) and not every metric of every method.
    ``metrics_dir/<task>/<method>.json``: every final val metric, one small file per (task,
    method), so ``dvc metrics show`` prints one row per task and method, one column per metric.
    ``plots_dir/<task>_<split>_<metric>.csv``: columns ``epoch, method, value`` (mean over
    seeds), one row per epoch and method. The long form names no method in a column header, so
    ``dvc.yaml`` plots ``x: epoch, y: value`` with the template ``.dvc/plots/by_method.json``
    (one line per method, coloured by the ``method`` column) and types no method name.
    """
    metrics: dict = {}
    for (task, method, split, metric), g in _final_val(summary).groupby(["task", "method", "split", "metric"]):
        metrics.setdefault(task, {}).setdefault(method, {})[f"{split}_{metric}"] = float(g["value"].mean())
    from clipbench.report.names import main_metric

    main = {task: {method: {k: v for k, v in values.items() if k == f"val_{main_metric(task)}"} or values
                   for method, values in by_method.items()} for task, by_method in metrics.items()}
    files.write_json(metrics_json, main)
    if metrics_dir is not None:
        for task, by_method in metrics.items():
            for method, values in by_method.items():
                files.write_json(Path(metrics_dir) / task / f"{method}.json", values)
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    epochs = history[history["split"].isin(["train", "val"]) & ~history["metric"].astype(str).str.startswith("iou_")]
    epochs = epochs[pd.to_numeric(epochs["value"], errors="coerce").abs() < float("inf")]  # NaN fails it too
    for (task, split, metric), g in epochs.groupby(["task", "split", "metric"]):
        long = (g.assign(value=pd.to_numeric(g["value"])).groupby(["epoch", "method"], as_index=False)["value"].mean()
                .sort_values(["method", "epoch"]))
        files.write_text(plots_dir / f"{task}_{split}_{metric}.csv", long[["epoch", "method", "value"]].to_csv(index=False))
