"""Checkpoints that resume a run exactly, and load with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from clipbench.io import atomic_path


# Engine keys that change how fast a run goes, or what it does on failure, but not its numbers:
# a checkpoint stays valid when only these change.
NEUTRAL_ENGINE_KEYS = ("threads", "num_workers", "gpus", "fail_on_divergence", "checkpoint_every_steps", "dvclive",
                       "clip_stats")


def spec_hash(spec: dict) -> str:
    """Fingerprint of the settings that decide a run's numbers; a checkpoint resumes only its own run."""
    spec = copy.deepcopy(spec)
    for key in NEUTRAL_ENGINE_KEYS:
        spec.get("engine", {}).pop(key, None)
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        # weights_only loading accepts tensors and plain containers, not numpy arrays.
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file cannot happen with atomic writes, but a foreign one can
        raise RuntimeError(f"cannot load checkpoint {path}: {exc}; delete it to start the run afresh") from exc
