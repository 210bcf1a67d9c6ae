"""Per-method learning-rate schedules, stepped once per optimizer step.

The thesis keeps every learning rate constant; step, cosine and poly are options. All are a
``LambdaLR`` factor of the step count, so a schedule's whole state is ``last_epoch`` and
resumes exactly from a checkpoint.
"""
from __future__ import annotations

import math

import torch


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict | None, steps_per_epoch: int,
                    total_steps: int, where: str = "schedule") -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler ``cfg`` asks for, or None for a constant learning rate."""
    cfg = dict(cfg or {})
    name = cfg.get("name", "constant")
    if name == "constant":
        return None
    if any("lr" not in g for g in optimizer.param_groups):
        # clipped-SSTM: its step sizes alpha_k come from a and L, there is no lr to scale.
        raise ValueError(f"{where}: {type(optimizer).__name__} has no learning rate; only 'constant' is allowed")
    if name == "step":
        every = int(cfg.get("step_size", 30)) * steps_per_epoch
        gamma = float(cfg.get("gamma", 0.1))
        factors = [lambda t: gamma ** (t // every) for _ in optimizer.param_groups]
    elif name == "cosine":
        t_max = int(cfg.get("t_max") or total_steps)
        eta_min = float(cfg.get("eta_min", 0.0))
        factors = [_cosine(t_max, eta_min / g["lr"]) for g in optimizer.param_groups]
    elif name == "poly":
        power = float(cfg.get("power", 1.0))
        factors = [lambda t: max(0.0, 1.0 - t / total_steps) ** power for _ in optimizer.param_groups]
    else:
        raise ValueError(f"{where}.name: unknown schedule {name!r} (known: constant, step, cosine, poly)")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _cosine(t_max: int, floor: float):
    def factor(t: int) -> float:
        t = min(t, t_max)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / t_max))

    return factor
