"""Gather every run's ``metrics.json`` into the tidy ``results/summary.csv``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipbench import io

COLUMNS = ["task", "method", "seed", "split", "metric", "value", "status",
           "epochs", "steps", "wall_time_s", "images_per_s", "run_dir"]


def run_dirs(runs: str | Path) -> list[Path]:
    """Every finished run under ``runs`` (those with a metrics.json)."""
    return sorted(p.parent for p in Path(runs).glob("*/*/seed*/metrics.json"))


def collect(runs: list[Path], out: str | Path) -> pd.DataFrame:
    """Summarise exactly the given run folders (the workflow passes its own run matrix)."""
    rows = []
    for run in runs:
        run = Path(run)
        m = io.read_json(run / "metrics.json")
        base = {k: m.get(k) for k in ("task", "method", "seed", "status", "epochs", "steps")}
        timing = m.get("timing") or m  # the engine keeps machine-dependent numbers under "timing"
        base.update({k: timing.get(k) for k in ("wall_time_s", "images_per_s")})
        base["run_dir"] = str(run)
        for split, metrics in (m.get("final") or {}).items():
            for metric, value in metrics.items():
                rows.append({**base, "split": split, "metric": metric, "value": value})
        if not m.get("final"):
            # A run that diverged before its first evaluation still appears, with no value.
            rows.append({**base, "split": None, "metric": None, "value": None})
    df = pd.DataFrame(rows, columns=COLUMNS)
    io.write_text(out, df.to_csv(index=False))
    return df


def load_histories(runs: list[Path]) -> pd.DataFrame:
    """The given runs' ``history.csv`` in one frame, with task, method and seed columns."""
    frames = []
    for run in runs:
        run = Path(run)
        path = run / "history.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        h = pd.read_csv(path)
        m = io.read_json(run / "metrics.json")
        h["task"], h["method"], h["seed"] = m["task"], m["method"], m["seed"]
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=["step", "epoch", "split", "metric", "value", "task", "method", "seed"])
    return pd.concat(frames, ignore_index=True)
