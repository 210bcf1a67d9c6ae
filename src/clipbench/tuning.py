"""Tuning: every method searched under the same budget before it is compared.

The ``tuning:`` section of the config gives, per task, a search space per method, the number
of trials per method (one budget for all), a sampler and the tuning split: a held-out
fraction of the *training* data, so the validation set the report's tables use never picks
a setting. This module (torch-free, so the Snakefile can plan with it) turns that into

* ``trials(config, task, method)``: each trial's settings, the same on every machine;
* ``select(...)``: the best trial by the task's main metric on the held-out data;
* ``sensitivity(...)``: how wide a range of step sizes works (the report's number).

A trial's run spec and a run's with the chosen setting are built by :mod:`clipbench.spec`.
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Any

from clipbench.errors import ClipbenchError
from clipbench.tasks import registry

TUNING_DIR = "results/tuning"
CHOSEN_JSON = "chosen.json"


class TuningError(ClipbenchError, ValueError):
    """A tuning section that cannot run; the message names the key."""


def tuned_tasks(config: dict) -> list[str]:
    """The tasks of the run matrix whose settings are tuned before the seeds' runs."""
    tuning = config.get("tuning") or {}
    if not tuning.get("enabled", True):
        return []
    return [t for t in config["run"]["tasks"] if t in (tuning.get("tasks") or {})]


def task_tuning(config: dict, task: str) -> dict:
    return config["tuning"]["tasks"][task]


def trial_dir(task: str, method: str, trial: int) -> str:
    return f"{TUNING_DIR}/{task}/{method}/trial{trial}"


def chosen_path(task: str, method: str) -> str:
    return f"{TUNING_DIR}/{task}/{method}/{CHOSEN_JSON}"


# -- sampling ---------------------------------------------------------------------------------------

def _round(x: float) -> float:
    """Three significant digits: readable settings, identical wherever they are drawn."""
    return float(f"{x:.3g}")


def _grid_points(dist: dict, where: str) -> list:
    if "values" in dist:
        return list(dist["values"])
    if "points" not in dist:
        raise TuningError(f"{where}: the grid sampler needs points: N for a range (or values: [...])")
    n = int(dist["points"])
    if "log_uniform" in dist:
        lo, hi = (math.log10(v) for v in dist["log_uniform"])
        return [_round(10 ** (lo + (hi - lo) * k / max(n - 1, 1))) for k in range(n)]
    lo, hi = dist["uniform"]
    return [_round(lo + (hi - lo) * k / max(n - 1, 1)) for k in range(n)]


def _stratified(dist: dict, n: int, rng: random.Random) -> list:
    """``n`` draws, one from each of ``n`` equal strata of the range in a random order (a Latin
    hypercube across parameters): a small budget still spans the whole range."""
    if "values" in dist:
        return [rng.choice(dist["values"]) for _ in range(n)]
    log = "log_uniform" in dist
    lo, hi = dist["log_uniform"] if log else dist["uniform"]
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    strata = list(range(n))
    rng.shuffle(strata)
    out = []
    for s in strata:
        u = lo + (hi - lo) * (s + rng.random()) / n
        out.append(_round(10 ** u if log else u))
    return out


def trials(config: dict, task: str, method: str) -> list[dict[str, Any]]:
    """The settings of each trial of (task, method), in trial order.

    ``grid``: the product of each parameter's points (its size must be the budget);
    ``random``: seeded by (sampler seed, task, method) through Python's own generator, whose
    string seeding is the same on every machine and Python version.
    """
    tt = task_tuning(config, task)
    where = f"tuning.tasks.{task}.space.{method}"
    space = (tt.get("space") or {}).get(method)
    if not space:
        raise TuningError(f"{where}: no search space for method {method!r} (every method run is tuned)")
    n, names = int(tt["trials"]), sorted(space)
    if tt.get("sampler", "random") == "grid":
        grid = [_grid_points(space[p], f"{where}.{p}") for p in names]
        combos = list(itertools.product(*grid))
        if len(combos) != n:
            raise TuningError(f"{where}: the grid has {len(combos)} points, but the budget "
                              f"tuning.tasks.{task}.trials is {n}; every method gets the same budget")
        return [dict(zip(names, c)) for c in combos]
    rng = random.Random(f"{tt.get('seed', 0)}:{task}:{method}")
    columns = [_stratified(space[p], n, rng) for p in names]
    return [dict(zip(names, row)) for row in zip(*columns)]


# -- selection --------------------------------------------------------------------------------------

def trial_record(metrics: dict) -> dict:
    """One trial's row: its settings, status and tuning metric (the held-out main metric)."""
    value = (metrics.get("final") or {}).get("val", {}).get(metrics.get("main_metric"))
    ok = metrics.get("status") == "ok" and value is not None and math.isfinite(value)
    return {"trial": metrics["spec"]["trial"]["index"], "params": metrics["spec"]["trial"]["params"],
            "status": metrics.get("status"), "value": value if ok else None,
            "diverged_at_step": metrics.get("diverged_at_step"), "steps": metrics.get("steps"),
            "wall_time_s": (metrics.get("timing") or {}).get("wall_time_s")}


def select(task: str, method: str, trial_metrics: list[dict], tolerance: float = 0.05) -> dict:
    """The best trial of (task, method) by the task's main metric on the held-out data; ties
    go to the earlier trial. Every trial's row is kept for the report."""
    info = registry.get(task)
    rows = sorted((trial_record(m) for m in trial_metrics), key=lambda r: r["trial"])
    good = [r for r in rows if r["value"] is not None]
    if not good:
        raise TuningError(f"{task}/{method}: all {len(rows)} trials diverged or have no "
                          f"{info.main_metric}; widen tuning.tasks.{task}.space.{method}")
    sign = 1 if info.higher_is_better else -1
    best = max(good, key=lambda r: (sign * r["value"], -r["trial"]))
    return {"task": task, "method": method, "metric": info.main_metric,
            "higher_is_better": info.higher_is_better, "chosen": best, "trials": rows,
            "sensitivity": sensitivity(rows, info.higher_is_better, tolerance)}


# -- sensitivity ------------------------------------------------------------------------------------

def step_size(params: dict) -> tuple[str, float] | None:
    """The step size a trial used: ``lr``, or clipped-SSTM's step 1/a (it has no lr)."""
    if "lr" in params:
        return "lr", float(params["lr"])
    if "a" in params:
        return "1/a", 1.0 / float(params["a"])
    return None


def sensitivity(rows: list[dict], higher_is_better: bool = True, tolerance: float = 0.05) -> dict:
    """The width, in decades of step size, of the range around the best trial whose metric is
    within ``tolerance`` (relative) of the best.

    Trials are ordered by step size; where several share one (other parameters varied), the
    best of them stands for it. The range is the unbroken run of step sizes around the best
    that stay within the tolerance; a diverged trial breaks it. Width 0: only the best works.
    """
    by_step: dict[float, float | None] = {}
    axis = None
    for r in rows:
        found = step_size(r["params"])
        if found is None:
            continue
        axis, step = found
        value = r["value"]
        old = by_step.get(step)
        if old is None or (value is not None and (value > old if higher_is_better else value < old)):
            by_step[step] = value
    points = sorted(by_step.items())
    finite = [(s, v) for s, v in points if v is not None]
    if not finite:
        return {"axis": axis, "width_decades": None, "range": None, "tolerance": tolerance}
    sign = 1 if higher_is_better else -1
    best_i = max(range(len(points)), key=lambda i: -math.inf if points[i][1] is None else sign * points[i][1])
    best = points[best_i][1]
    limit = best - sign * tolerance * abs(best)

    def ok(i: int) -> bool:
        v = points[i][1]
        return v is not None and sign * (v - limit) >= 0

    lo = hi = best_i
    while lo > 0 and ok(lo - 1):
        lo -= 1
    while hi < len(points) - 1 and ok(hi + 1):
        hi += 1
    s_lo, s_hi = points[lo][0], points[hi][0]
    return {"axis": axis, "width_decades": math.log10(s_hi / s_lo), "range": [s_lo, s_hi],
            "best_step": points[best_i][0], "tolerance": tolerance}
