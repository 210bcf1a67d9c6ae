"""Predicted clipping before training: which share of its steps each clipped arm will clip.

From the clip statistics measured at initialisation (``init.json``, at each arm's own batch
multiplier; see :mod:`clipbench.diagnostics.measure`) and each clipped arm's level schedule:

- a constant level λ (clipped-SGD): share = P(stat > λ), stat the clipping mode's statistic
  (norm: the global norm; layer: the largest tensor norm of the step, since a step clips when
  any tensor's norm exceeds λ; coordinate: the largest |entry|). With ``clip_target: momentum``
  the norm mode scales by the raw gradient's norm (the same); layer and coordinate compare the
  momentum buffer, approximated by the buffer a constant gradient g builds up,
  g·(1 − μ^(k+1))/(1 − μ) after k + 1 steps (g/(1 − μ) at steady state);
- clipped-SSTM: λ_k = B/α_k over the run's optimizer steps (with the authors' indexing the
  first call only initializes and is not counted, as in the run's ``clip_fraction``);
  share = the mean over k of P(stat > λ_k).

P is the empirical distribution of the n measured batches at initialisation, assumed to hold
all run long (it does not: the gradients shrink as training proceeds, so the report shows the
measured share beside it). ``clip_plan.json`` holds ``{method: share}`` for the clipped methods
only (the contract); ``clip_plan_detail.json`` the levels, steps, statistics and notes.

``python -m clipbench.diagnostics.clip_plan --warn clip_plan_detail.json`` prints the warnings
(arms predicted to clip in under :data:`WARN_BELOW` of their steps) to stderr.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from clipbench.diagnostics.clip_levels import resolve_levels, statistics_at

WARN_BELOW = 0.01  # an arm predicted to clip in fewer steps than this is warned about
CLIPPED = ("clipped_sgd", "clipped_sstm")
# What of a method's settings the plan (and the measurement's multipliers) depend on: the
# workflow passes only these, so that a learning rate's change does not remeasure the noise.
PLAN_KEYS = ("optimizer", "clipping", "clip_level", "clip_target", "momentum", "B", "a", "L", "nu",
             "indexing", "batch_multiplier")
STATISTIC = {"norm": "global gradient norm", "layer": "largest per-tensor gradient norm",
             "coordinate": "largest |gradient entry|"}


def is_clipped(method: str, cfg: dict) -> bool:
    """Whether a method clips: ``clipping`` other than none, or (without that key) clipped-SGD,
    clipped-SSTM, or a method of one's own with a ``clip_level`` or ``B``."""
    if "clipping" in cfg:
        return cfg["clipping"] != "none"
    return method in CLIPPED or "clip_level" in cfg or "B" in cfg


def clipped_methods(methods: dict) -> dict:
    """The clipped methods of a task's ``{method: settings}``, each with only :data:`PLAN_KEYS`."""
    return {m: {k: v for k, v in cfg.items() if k in PLAN_KEYS}
            for m, cfg in (methods or {}).items() if is_clipped(m, cfg)}


def multipliers(methods: dict) -> list[int]:
    """The batch multipliers the clipped methods step with (1 always included)."""
    return sorted({1} | {int(cfg.get("batch_multiplier", 1) or 1) for cfg in clipped_methods(methods).values()})


def _is_sstm(method: str, cfg: dict) -> bool:
    opt = str(cfg.get("optimizer", ""))
    return method in ("clipped_sstm", "sstm") or opt.endswith("SSTM") or (
        "optimizer" not in cfg and all(k in cfg for k in ("B", "a", "L")))


def statistic(init: dict, clipping: str, multiplier: int) -> np.ndarray:
    """Per measured batch, the number the mode compares with its level (a step clips when it
    exceeds the level), at the given batch multiplier."""

    st = statistics_at(init, multiplier)
    if clipping == "norm":
        return np.asarray(st["grad_norms"], dtype=np.float64)
    if clipping == "layer":
        return np.asarray([max(t) for t in st["tensor_norms"]], dtype=np.float64)
    if clipping == "coordinate":
        return np.asarray(st["grad_max_abs"], dtype=np.float64)
    raise ValueError(f"clipping {clipping!r}: no prediction (norm, layer or coordinate)")


def optimizer_steps(n_train: int, batch_size: int, multiplier: int, epochs: int) -> int:
    """The run's optimizer steps, as the engine counts them (EpochBatchSampler.usable // m per
    epoch: whole steps of m micro-batches of batch_size)."""
    usable = (int(n_train) // int(batch_size)) // int(multiplier) * int(multiplier)
    return int(epochs) * (usable // int(multiplier))


def share_clipped(stat, levels, scales=None) -> float:
    """Mean over steps k of the share of ``stat`` · scales[k] above levels[k] (empirical P)."""
    stat = np.sort(np.asarray(stat, dtype=np.float64).ravel())
    levels = np.asarray(levels, dtype=np.float64).ravel()
    if stat.size == 0 or levels.size == 0:
        return 0.0
    thr = levels if scales is None else levels / np.asarray(scales, dtype=np.float64).ravel()
    # stat > thr  <=>  not (stat <= thr): the count of stat ≤ thr by a sorted search.
    above = stat.size - np.searchsorted(stat, thr, side="right")
    return float(np.mean(above / stat.size))


def plan_method(method: str, cfg: dict, init: dict, n_train: int, batch_size: int, epochs: int) -> dict:
    """One clipped arm's prediction: ``share`` and what it came from."""
    from clipbench.optim.clipped_sstm import sstm_alpha

    cfg, resolved = resolve_levels(method, cfg, init)
    clipping = cfg.get("clipping", "norm")
    m = int(cfg.get("batch_multiplier", 1) or 1)
    stat = statistic(init, clipping, m)
    steps = optimizer_steps(n_train, batch_size, m, epochs)
    notes = ["assumes the distribution measured at initialisation holds all run long (it does not: "
             "compare the measured clip_fraction)",
             f"statistic: the {STATISTIC[clipping]} of {statistics_at(init, m)['measured']} "
             f"({stat.size} batches)"]
    out = {"clipping": clipping, "batch_multiplier": m, "steps": steps, "statistic": STATISTIC[clipping],
           "stat_min": float(stat.min()), "stat_median": float(np.median(stat)), "stat_max": float(stat.max()),
           "resolved": resolved}
    scales = None
    if _is_sstm(method, cfg):
        indexing = cfg.get("indexing", "thesis")
        a, L, nu, B = float(cfg["a"]), float(cfg["L"]), float(cfg.get("nu", 1.0)), float(cfg["B"])
        # thesis: call k clips at B/α(k); authors: call 0 only initializes, call k ≥ 1 clips at B/α(k − 1).
        counted = steps if indexing == "thesis" else max(steps - 1, 0)
        alphas = np.array([sstm_alpha(j, a, L, nu, indexing) for j in range(counted)], dtype=np.float64)
        levels = B / alphas if counted else np.zeros(0)
        out.update(schedule="sstm", B=B, indexing=indexing, counted_steps=counted,
                   level_first=float(levels[0]) if counted else None,
                   level_last=float(levels[-1]) if counted else None)
        notes.append(f"level λ_k = B/α_k over the run's {counted} clipping steps"
                     + ("" if indexing == "thesis" else " (the authors' indexing: the first call only initializes)")
                     + "; share = mean over k of P(stat > λ_k)")
    else:
        level = float(cfg.get("clip_level", 1.0))
        target, mu = cfg.get("clip_target", "grad"), float(cfg.get("momentum", 0.0) or 0.0)
        levels = np.full(max(steps, 1), level)
        out.update(schedule="constant", level=level, clip_target=target, momentum=mu)
        if "clip_level" not in cfg:
            notes.append("no clip_level: ClippedSGD's default 1.0 assumed")
        if target == "momentum" and mu > 0 and clipping in ("layer", "coordinate"):
            k = np.arange(1, levels.size + 1, dtype=np.float64)
            scales = -np.expm1(k * np.log(mu)) / (1 - mu)  # (1 − μ^k)/(1 − μ)
            notes.append(f"clip_target momentum: the buffer compared with the level is approximated by that of a "
                         f"constant gradient, g (1 - mu^k)/(1 - mu) after k steps (g/(1 - mu) = {1 / (1 - mu):.4g} g "
                         "at steady state); the noise part of a real buffer averages out, so this overstates "
                         "its spread")
        elif target == "momentum" and clipping == "norm":
            notes.append("clip_target momentum with norm clipping: the scale comes from the raw gradient's "
                         "global norm, as with clip_target grad")
    out["share"] = share_clipped(stat, levels, scales)
    out["notes"] = notes
    return out


def plan(task: str, methods: dict, init: dict, n_train: int, batch_size: int, epochs: int,
         warn_below: float = WARN_BELOW) -> tuple[dict, dict]:
    """``clip_plan.json`` ({method: share}, clipped methods only) and ``clip_plan_detail.json``."""
    detail = {}
    for method, cfg in clipped_methods(methods).items():
        detail[method] = plan_method(method, cfg, init, n_train, batch_size, epochs)
    shares = {m: d["share"] for m, d in detail.items()}
    warnings = [warning(task, m, d) for m, d in detail.items() if d["share"] < warn_below]
    return shares, {"task": task, "n_train": int(n_train), "batch_size": int(batch_size), "epochs": int(epochs),
                    "warn_below": warn_below, "methods": detail, "warnings": warnings,
                    "note": "predicted from the noise at initialisation, before training; settings from the "
                            "config (a tuned task's chosen settings may differ)"}


def warning(task: str, method: str, d: dict) -> str:
    if d.get("schedule") == "sstm":
        level = (f"its level falls from {d['level_first']:.4g} to {d['level_last']:.4g}"
                 if d.get("level_first") is not None else "it has no clipping step")
    else:
        level = f"its level is {d['level']:.4g}"
        if d.get("clip_target") == "momentum" and d.get("momentum", 0) > 0 and d["clipping"] != "norm":
            level += " (compared with the momentum buffer, ~g/(1-mu))"
    return (f"clipbench WARNING: {task}/{method} is predicted to clip in {100 * d['share']:.2f}% of its "
            f"{d['steps']} steps: {level}, while the {d['statistic']} measured at initialisation "
            f"(batch x{d['batch_multiplier']}) ranges {d['stat_min']:.4g} to {d['stat_max']:.4g}"
            f" (median {d['stat_median']:.4g}). Clipping will hardly act; lower its level to compare "
            "clipped with unclipped.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipbench.diagnostics.clip_plan",
                                description="print a clip plan's warnings to stderr")
    p.add_argument("--warn", required=True, help="a clip_plan_detail.json")
    args = p.parse_args(argv)
    from clipbench import files

    for line in files.read_json(args.warn).get("warnings") or []:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
