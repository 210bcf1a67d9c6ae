"""A small, fully known set of finished runs for the report's tests: 3 seeds of five methods on
classification and segmentation, with designed effects (clipped-SGD clearly above SGD on
classification; clipped-SSTM at the background baseline and never clipping on segmentation),
baselines, two manifests, a gradient-noise output and a convex check (``make_runs``).

``fake_run``: one finished run (history.csv and metrics.json, two epochs, numbers given), for
tests of collect and report that need runs of a shape of their own rather than the designed set."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from clipbench import files
from clipbench.report import claims, collect

SEEDS = (0, 1, 2)
EPOCHS = 4
STEPS_PER_EPOCH = 10
# Final val main metric per (task, method), per seed: the numbers the paired table is made of.
FINAL = {
    "classification": {"sgd": [0.50, 0.52, 0.51], "clipped_sgd": [0.56, 0.57, 0.565],
                       "sstm": [0.40, 0.45, 0.42], "clipped_sstm": [0.41, 0.44, 0.43], "adam": [0.55, 0.49, 0.60]},
    "segmentation": {"sgd": [0.30, 0.32, 0.31], "clipped_sgd": [0.31, 0.30, 0.32],
                     "sstm": [0.103, 0.104, 0.102], "clipped_sstm": [0.103, 0.102, 0.104], "adam": [0.25, 0.26, 0.27]},
    "superres": {"sgd": [28.5, 28.6, 28.4], "clipped_sgd": [28.6, 28.5, 28.7],
                 "sstm": [28.3, 28.2, 28.4], "clipped_sstm": [28.3, 28.4, 28.2], "adam": [28.9, 29.0, 28.8]},
}
METRIC = {"classification": "top1", "segmentation": "miou", "superres": "psnr"}
CLIP = {"clipped_sgd": 0.4, "clipped_sstm": 0.0}  # clipped-SSTM never clips: flagged
BATCH = 8
NOISY_LOSS = {"sgd": 0.05, "clipped_sgd": 0.01, "sstm": 0.04, "clipped_sstm": 0.04, "adam": 0.03}


def _history(task: str, method: str, seed: int, final: float) -> pd.DataFrame:
    rng = np.random.default_rng(zlib.crc32(f"{task}/{method}/{seed}".encode()))
    metric, rows = METRIC[task], []
    # A curve rising to ``final``, with a wiggle of its own per method.
    wiggle = 0.03 if method in ("sgd", "sstm") else 0.005
    for e in range(1, EPOCHS + 1):
        v = final * (0.5 + 0.5 * e / EPOCHS) + (wiggle * (-1) ** e if e < EPOCHS else 0.0)
        step = e * STEPS_PER_EPOCH
        rows += [{"step": step, "epoch": e, "split": "val", "metric": metric, "value": v},
                 {"step": step, "epoch": e, "split": "train", "metric": metric, "value": v + 0.05},
                 {"step": step, "epoch": e, "split": "val", "metric": "loss", "value": 2.0 - v},
                 {"step": step, "epoch": e, "split": "train", "metric": "loss", "value": 1.9 - v}]
        if method in ("sstm", "clipped_sstm"):
            rows.append({"step": step, "epoch": e, "split": "val_x", "metric": metric, "value": v - 0.01})
    for step in range(1, EPOCHS * STEPS_PER_EPOCH + 1):
        loss = 2.0 - step / 40 + NOISY_LOSS[method] * rng.standard_normal()
        rows.append({"step": step, "epoch": (step - 1) // STEPS_PER_EPOCH + 1, "split": "train_step",
                     "metric": "loss", "value": loss})
    return pd.DataFrame(rows)


def make_runs(root: Path, label_of_baseline: str | None = None) -> dict:
    """Write runs, summary, baselines, manifests, noise and heavytail outputs under ``root``."""
    runs = []
    for task, by_method in FINAL.items():
        for method, finals in by_method.items():
            for seed, final in zip(SEEDS, finals):
                run = root / "runs" / task / method / f"seed{seed}"
                h = _history(task, method, seed, final)
                files.write_text(run / "history.csv", h.to_csv(index=False))
                last = h[h["epoch"] == EPOCHS]
                final_ = {s: {m: float(v) for m, v in last[last["split"] == s].groupby("metric")["value"].last().items()}
                          for s in ("train", "val", "val_x") if (last["split"] == s).any()}
                telemetry = {"clip_fraction": CLIP[method], "clip_scale_mean": 0.9} if method in CLIP else {}
                if method == "clipped_sgd":
                    telemetry["clip_entry_fraction"] = 0.002
                files.write_json(run / "metrics.json", {
                    "task": task, "method": method, "seed": seed, "status": "ok", "final": final_,
                    "epochs": EPOCHS, "steps": EPOCHS * STEPS_PER_EPOCH, "telemetry": telemetry,
                    "batch_size": BATCH, "batch_multiplier": 4 if method == "adam" else 1,
                    "timing": {"wall_time_s": 8.0, "images_per_s": 100.0,
                               # one run without per-epoch times: the report copes
                               **({} if (method, seed) == ("adam", 2) else
                                  {"epoch_end_wall_s": [2.0 * e for e in range(1, EPOCHS + 1)]})},
                    "versions": {"python": "3.x", "torch": "2.14.1", "gpu": None}})
                runs.append(run)
    summary = collect.collect(runs, root / "summary.csv")
    baselines = root / "baselines"
    files.write_json(baselines / "classification.json", {"task": "classification", "rows": [
        {"method": "chance", "label": label_of_baseline or "chance (no training)", "phrase": "chance",
         "metrics": {"top1": 0.1, "top5": 0.5}}]})
    files.write_json(baselines / "segmentation.json", {"task": "segmentation", "rows": [
        {"method": "background", "label": "background everywhere (no training)", "phrase": "predicting background",
         "metrics": {"miou": 0.103, "pixel_acc": 0.62}}]})
    files.write_json(baselines / "superres.json", {"task": "superres", "rows": [
        {"method": "bicubic", "label": "bicubic (no training)", "phrase": "bicubic", "metrics": {"psnr": 28.32}}]})
    manifests = []
    for ds in ("imagenet100", "voc2012"):
        files.write_json(root / "prepared" / ds / "manifest.json", {"dataset": ds, "root": "data", "source": "synthetic"})
        manifests.append(root / "prepared" / ds / "manifest.json")
    noise = _noise(root / "noise")
    heavy = _heavytail(root / "heavytail")
    config = {"run": {"tasks": list(FINAL), "methods": list(FINAL["classification"]), "seeds": list(SEEDS)},
              "engine": {"device": "cpu"}}
    return {"runs": runs, "summary": summary, "summary_csv": root / "summary.csv", "baselines": baselines,
            "manifests": manifests, "noise": noise, "heavytail": heavy, "config": config}


def _png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [1, 4, 9])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def _noise(root: Path) -> Path:
    for task, alpha, heavy in (("classification", 1.95, False), ("segmentation", 1.4, True)):
        _png(root / task / "norms.png")
        files.write_json(root / task / "noise.json", {
            "task": task, "alpha": alpha, "alpha_ci": [alpha - 0.1, alpha + 0.1], "kurtosis": 3.2 if not heavy else 9.5,
            "points": [{"label": "init", "step": 0, "alpha": alpha, "alpha_ci": [alpha - 0.1, alpha + 0.1],
                        "kurtosis": 3.2, "norm_mean": 1.5, "norm_sd": 0.2, "gauss_norm_mean": 1.4,
                        "gauss_norm_sd": None, "n_batches": 64, "n_coords": 4096, "n_samples": 64 * 4096}],
            "claims": [claims.make("tail_index", task, ["initialisation"], "alpha", alpha, (alpha - 0.1, alpha + 0.1),
                                   64 * 4096, 0.1, "heavy_tailed" if heavy else "undecided",
                                   f"The gradient noise of {task} is {'heavy' if heavy else 'not heavy'}-tailed "
                                   f"(alpha {alpha}).")],
            "clip_levels": {"clipped_sgd": {"key": "clip_level", "value": 0.05, "quantile": 0.5},
                            "clipped_sstm": {"key": "B", "value": 0.3, "quantile": 0.5}},
            "clip_plan": {"clipped_sgd": 0.45, "clipped_sstm": 0.004},
            "figures": ["norms.png"]})
    return root


def _heavytail(root: Path) -> Path:
    rows = [{"noise": n, "method": m, "step": s, "q50": 1 / s, "q90": 2 / s, "q99": 5 / s}
            for n in ("gaussian", "pareto") for m in ("sgd", "clipped_sgd", "sstm", "clipped_sstm") for s in (1, 10, 100)]
    files.write_text(root / "quantiles.csv", pd.DataFrame(rows).to_csv(index=False))
    _png(root / "quantiles.png")
    files.write_json(root / "summary.json", {
        "settings": {"runs": 200, "steps": 100},
        "final": {n: {m: {"q50": 0.01, "q90": 0.02, "q99": 0.05 if "clipped" in m else 0.5, "multiplier": 10.0,
                          "noise_free": 1e-4, "clip_fraction": 0.3 if "clipped" in m else None}
                      for m in ("sgd", "clipped_sgd", "sstm", "clipped_sstm")} for n in ("gaussian", "pareto")},
        "claims": [claims.make("convex", "heavytail", ["clipped_sstm", "sstm"], "q99", 10.0, (6.0, 14.0), 200, 2.0,
                               "better", "Under heavy-tailed noise the q99 of clipped-SSTM is 10 times below that of "
                                         "SSTM.")]})
    return root


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def fake_run(root, task, method, seed, status="ok", values=(0.5, 0.6)):
    run = root / task / method / f"seed{seed}"
    metric = {"classification": "top1", "segmentation": "miou"}[task]
    rows = [{"step": 10 * e, "epoch": e, "split": split, "metric": metric, "value": v + 0.01 * e}
            for e, v in enumerate(values, start=1) for split in ("train", "val")]
    files.write_text(run / "history.csv", pd.DataFrame(rows).to_csv(index=False))
    final = {split: {metric: rows[-1]["value"]} for split in ("train", "val")} if status == "ok" else {}
    files.write_json(run / "metrics.json", {"task": task, "method": method, "seed": seed, "status": status,
                                         "final": final, "epochs": 2, "steps": 20, "wall_time_s": 1.0,
                                         "images_per_s": 10.0,
                                         "telemetry": {"clip_fraction": 0.125, "clip_scale_mean": 0.75}
                                         if method.startswith("clipped") else {}})
    return run
