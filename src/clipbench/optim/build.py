"""Build any of the compared optimizers from a method name and a flat config dict.

Besides the thesis' methods, a method may name any ``torch.optim.Optimizer`` subclass by
import path (``optimizer: "torch.optim:AdamW"``); its other keys are the class's keyword
arguments, so an optimizer of the user's own needs no edit of this package.
"""

from __future__ import annotations

import importlib

import torch

from .clipped_sgd import ClippedSGD
from .clipped_sstm import ClippedSSTM

__all__ = ["METHODS", "ENGINE_KEYS", "OPTIMIZER_KEY", "build_optimizer", "import_optimizer", "make_optimizer"]

METHODS = ("sgd", "adam", "clipped_sgd", "clipped_sstm", "sstm")

# Keys the training engine reads from the same method config; not the optimizer's.
# ``twin`` names the method's unclipped twin for the report; it is no optimizer argument.
ENGINE_KEYS = frozenset({"batch_multiplier", "schedule", "twin"})
# The key of a method config that names its optimizer class ("package.module:Class").
OPTIMIZER_KEY = "optimizer"

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
    to a default); the engine-level keys in ``ENGINE_KEYS`` are dropped. A config with an
    ``optimizer`` key builds that class (see ``import_optimizer``) under any method name.
    """
    cfg = dict(cfg or {})
    if OPTIMIZER_KEY in cfg:
        return _build_named(name, params, cfg)
    if name not in _FACTORIES:
        raise ValueError(f"unknown optimizer method {name!r} (known: {', '.join(METHODS)}; "
                         f"any other method needs {OPTIMIZER_KEY}: 'package.module:Class')")
    cls, known = _FACTORIES[name]
    kwargs = {}
    fixed = _FIXED.get(name, {})
    for key, value in cfg.items():
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


def make_optimizer(method: str, params, opt_cfg: dict, stats_every: int = 20) -> torch.optim.Optimizer:
    """The optimizer as training uses it (the benchmarks build it the same way).

    ``opt_cfg`` may be a method's whole config: :func:`build_optimizer` drops the keys that are
    the engine's (``batch_multiplier``, ``schedule``). The clipped methods always report their
    clipping statistics (``last_clip_stats``); coordinate clipping counts its clamped entries
    every ``stats_every`` steps.
    """
    optimizer = build_optimizer(method, params, opt_cfg)
    if hasattr(optimizer, "stats_every"):
        optimizer.stats_every = int(stats_every)
    return optimizer


def import_optimizer(path: str, method: str = "?") -> type[torch.optim.Optimizer]:
    """The class ``path`` ("package.module:Class") names; an error naming the method's
    ``optimizer`` key when it cannot be imported or is no ``torch.optim.Optimizer``."""
    where = f"method {method!r}: {OPTIMIZER_KEY}: {path!r}"
    module_name, sep, attr = str(path).partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"{where} must look like 'package.module:Class' (e.g. 'torch.optim:AdamW')")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{where}: cannot import module {module_name!r} ({exc})") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)):
        raise ValueError(f"{where} is {obj!r}, not a subclass of torch.optim.Optimizer")
    return obj


def _build_named(name: str, params, cfg: dict) -> torch.optim.Optimizer:
    cls = import_optimizer(cfg.pop(OPTIMIZER_KEY), name)
    # YAML gives lists; optimizers take tuples for pairs such as betas.
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k not in ENGINE_KEYS}
    try:
        return cls(params, **kwargs)
    except TypeError as exc:
        raise ValueError(f"method {name!r}: {cls.__module__}.{cls.__qualname__} does not take these "
                         f"options {sorted(kwargs)}: {exc}") from exc
