"""The report's statistics: intervals over seeds, paired differences, stability, time to target.

Intervals are Student-t 95% intervals over seeds (mean ± t_{0.975, n−1} · sd/√n). Methods of
one task share each seed's initial weights and batch order (common random numbers), so a
difference between two methods is taken seed by seed (paired) and its interval is the t
interval of those per-seed differences. With n seeds the t quantile is large (4.30 at n=3):
three seeds detect only large effects; ``run.seeds`` raises n.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

LEVEL = 0.95


def t_interval(values, level: float = LEVEL) -> dict:
    """Mean and ``level`` t interval of ``values`` (None and NaN dropped); no interval for n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(float(v))], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "half": None, "n": 0, "sd": None}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "lo": None, "hi": None, "half": None, "n": 1, "sd": None}
    sd = float(x.std(ddof=1))
    half = float(st.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "half": half, "n": n, "sd": sd}


def paired_difference(a: pd.Series, b: pd.Series) -> dict:
    """a − b over the seeds both have (Series indexed by seed); its t interval, and whether it excludes 0."""
    common = sorted(set(a.dropna().index) & set(b.dropna().index))
    d = t_interval([float(a[s]) - float(b[s]) for s in common])
    excludes = d["lo"] is not None and (d["lo"] > 0 or d["hi"] < 0)
    return {**d, "excludes_zero": bool(excludes), "seeds": common}


def total_variation(values) -> float | None:
    """Σ|v_{e+1} − v_e| over epochs: how much a curve moves, up and down."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.abs(np.diff(v)).sum()) if len(v) >= 2 else None


def detrended_sd(steps, values) -> float | None:
    """Sd of the training loss over the last quarter of steps after removing its linear trend."""
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    if len(v) < 4:
        return None
    tail = s >= s.min() + 0.75 * (s.max() - s.min())
    s, v = s[tail], v[tail]
    if len(v) < 3:
        return None
    slope, icept = np.polyfit(s, v, 1)
    return float(np.std(v - (slope * s + icept), ddof=1))


def time_to_target(epochs: pd.DataFrame, target: float, higher_is_better: bool) -> dict:
    """First epoch row (epoch, step, wall time) whose value reaches ``target``; Nones when never reached.

    ``epochs`` has columns step, value and optionally epoch and wall_time_s, in epoch order.
    """
    reached = epochs["value"] >= target if higher_is_better else epochs["value"] <= target
    if not reached.any():
        return {"epoch": None, "step": None, "wall_time_s": None}
    row = epochs[reached].iloc[0]
    wall = row.get("wall_time_s") if "wall_time_s" in epochs else None
    epoch = row.get("epoch") if "epoch" in epochs else None
    return {"epoch": None if epoch is None else int(epoch), "step": int(row["step"]),
            "wall_time_s": None if wall is None or pd.isna(wall) else float(wall)}


def target_value(best: float, baseline: float | None, share: float, higher_is_better: bool) -> float:
    """The baseline plus ``share`` of the best final value's gain over it: a target every method
    must earn, not one the untrained model already meets. Without a baseline the gain is
    counted from 0 (higher is better) or the target is best / share (lower is better)."""
    if baseline is not None:
        return baseline + share * (best - baseline)
    return share * best if higher_is_better else best / share
