"""The diagnostics sections, shown only when their outputs are present: "Gradient noise" (each
task's noise diagnostics, as ``clipbench noise`` wrote ``<noise_dir>/<task>/noise.json``) and the
convex check (``heavytail/summary.json``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from clipbench import files
from clipbench.diagnostics.heavytail import NOTES
from clipbench.report import figures
from clipbench.report.names import method_label

NOISE_KEYS = ("task", "alpha", "alpha_ci", "points", "claims")
HEAVYTAIL_KEYS = ("settings", "final", "claims")
# A point's fields the table shows; one that is missing shows as "–".
POINT_KEYS = ("label", "step", "alpha", "alpha_ci", "kurtosis", "norm_mean", "norm_sd", "gauss_norm_mean",
              "gauss_norm_sd", "n_batches")


def _figure(src: Path, out: Path, dest: str) -> dict:
    """Copy a figure next to the report as ``out/dest`` (the .tex includes it) and show it."""
    if not src.is_file():
        raise FileNotFoundError(f"{src}: figure listed in its noise output but missing")
    target = out / dest
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return figures.figure(target, out, name=src.stem)


def _require(d: dict, keys, path: Path) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")


def clip_shares(summary: pd.DataFrame, task: str) -> list[dict]:
    """The measured share of clipped steps per clipped method, mean and range over its runs."""
    d = summary[(summary["task"] == task) & (summary["split"] == "run") & (summary["metric"] == "clip_fraction")]
    return [{"method": m, "label": method_label(m), "mean": float(g["value"].mean()),
             "min": float(g["value"].min()), "max": float(g["value"].max()), "runs": len(g)}
            for m, g in d.groupby("method")]


def noise(noise_dir: str | Path | None, tasks: list[str], summary: pd.DataFrame, out: Path) -> list[dict]:
    """The gradient-noise section of each of ``tasks`` that has one (``task_noise``)."""
    return [n for n in (task_noise(noise_dir, t, summary, out) for t in tasks) if n]


def task_noise(noise_dir: str | Path | None, task: str, summary: pd.DataFrame, out: Path) -> dict | None:
    """``<noise_dir>/<task>/noise.json`` with its figures, or None when the task has none."""
    if noise_dir is None:
        return None
    path = Path(noise_dir) / task / "noise.json"
    if not path.is_file():
        return None
    data = files.read_json(path)
    _require(data, NOISE_KEYS, path)
    levels = [{"method": m, "label": method_label(m), **v} for m, v in (data.get("clip_levels") or {}).items()]
    points = [{**dict.fromkeys(POINT_KEYS), **p} for p in data.get("points") or []]
    for p in points:
        p["alpha_ci"] = p["alpha_ci"] or [None, None]
    levels = [{"key": None, "value": None, "quantile": None, **c} for c in levels]
    # Predicted before training (clip_plan.json) beside measured by the runs' telemetry.
    plan = data.get("clip_plan") or {}
    shares = clip_shares(summary, task)
    measured = {s["method"] for s in shares}
    shares += [{"method": m, "label": method_label(m), "mean": None, "min": None, "max": None, "runs": 0}
               for m in plan if m not in measured]
    for s_ in shares:
        s_["predicted"] = plan.get(s_["method"])
    return {**data, "clip_levels": levels, "points": points, "clip_shares": shares, "where": _where(data),
            "figures": [_figure(path.parent / f, out, f"figures/noise/{task}/{Path(f).name}")
                        for f in data.get("figures") or []]}


def _where(data: dict) -> str | None:
    """Which run the end of training was measured at, when not the preferred one, or why none."""
    if data.get("final_absent"):
        return f"No point at the end of training: {data['final_absent']}."
    ref = data.get("reference") or {}
    if ref.get("skipped"):
        passed = "; ".join(f"{s['run']} {s['why']}" for s in ref["skipped"])
        return f"The end of training is measured at {ref['run']}, the first run that finished ({passed})."
    return None


def heavytail(heavy_dir: str | Path | None, out: Path) -> dict | None:
    """The convex check (``summary.json``, ``quantiles.csv``, ``quantiles.png``), or None."""
    if heavy_dir is None or not (Path(heavy_dir) / "summary.json").is_file():
        return None
    heavy_dir = Path(heavy_dir)
    data = files.read_json(heavy_dir / "summary.json")
    _require(data, HEAVYTAIL_KEYS, heavy_dir / "summary.json")
    rows = [{"noise": kind, "method": m, "label": method_label(m), "q50": None, "q90": None, "q99": None,
             "clip_fraction": None, "multiplier": None, "clip_multiplier": None, "noise_free": None, **v}
            for kind, by_method in data["final"].items() for m, v in by_method.items()]
    figure = heavy_dir / "quantiles.png"
    return {"settings": data["settings"], "rows": rows, "claims": data["claims"], "arms": data.get("arms") or [],
            "notes": list(NOTES),
            "figure": _figure(figure, out, "figures/heavytail_quantiles.png") if figure.is_file() else None}
