"""Build any of the compared optimizers from a method name and a flat config dict."""

from __future__ import annotations

import torch

from .clipped_sgd import ClippedSGD
from .clipped_sstm import ClippedSSTM

__all__ = ["METHODS", "ENGINE_KEYS", "build_optimizer"]

METHODS = ("sgd", "adam", "clipped_sgd", "clipped_sstm", "sstm")

# Keys the training engine reads from the same method config; not the optimizer's.
ENGINE_KEYS = frozenset({"batch_multiplier", "schedule"})

_FACTORIES = {
    "sgd": (torch.optim.SGD, ("lr", "momentum", "weight_decay", "nesterov")),
    "adam": (torch.optim.Adam, ("lr", "betas", "eps", "weight_decay")),
    "clipped_sgd": (ClippedSGD, ("lr", "momentum", "clipping", "clip_level", "clip_target", "weight_decay")),
    "clipped_sstm": (ClippedSSTM, ("a", "L", "B", "clipping", "nu", "ratio_bound", "ratio_bound_mode",
                                    "indexing")),
    # SSTM without clipping: clipped-SSTM with clipping "none" (B is then unused).
    "sstm": (ClippedSSTM, ("a", "L", "B", "nu", "ratio_bound", "ratio_bound_mode", "indexing")),
}

# Settings a method fixes; its config may not override them.
_FIXED = {"sstm": {"clipping": "none"}}


def build_optimizer(name: str, params, cfg: dict | None = None) -> torch.optim.Optimizer:
    """``build_optimizer("clipped_sgd", model.parameters(), {"lr": 1e-3, ...})``.

    Unknown methods and unknown keys are errors (a typo must not silently fall back
    to a default); the engine-level keys in ``ENGINE_KEYS`` are dropped.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown optimizer method {name!r} (known: {', '.join(METHODS)})")
    cls, known = _FACTORIES[name]
    kwargs = {}
    fixed = _FIXED.get(name, {})
    for key, value in (cfg or {}).items():
        if key in ENGINE_KEYS:
            continue
        if key in fixed:
            if value != fixed[key]:
                raise ValueError(f"method {name!r} has {key} {fixed[key]!r}, not {value!r}")
            continue
        if key not in known:
            raise ValueError(f"unknown option {key!r} for method {name!r} (known: {', '.join(known)})")
        kwargs[key] = tuple(value) if key == "betas" else value
    return cls(params, **kwargs, **fixed)
