"""Checkpoints that resume a run exactly, and load with ``torch.load(weights_only=True)``.

A checkpoint is one flat dict: the ``state_dict()`` of each stateful part of the run (model,
optimizer, scheduler, GradScaler), the RNG states, the run's :class:`Progress`, the spec hash
and whether the run is complete.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from clipbench.spec import NEUTRAL_ENGINE_KEYS
from clipbench.files import atomic_path


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
    # Serialised in memory first: torch's own writer turns a full disk into "RuntimeError:
    # [enforce fail at inline_container.cc] unexpected pos", a Python write into an OSError that
    # atomic_path reports as "disk full while writing <path>".
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        _write(tmp, buf.getbuffer())


def _write(path: Path, data) -> None:
    with open(path, "wb") as f:
        f.write(data)


def load(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file cannot happen with atomic writes, but a foreign one can
        raise RuntimeError(f"cannot load checkpoint {path}: {exc}; delete it to start the run afresh") from exc


@dataclass
class Progress:
    """Where a run stands, always between two optimizer steps; all of it is checkpointed.

    ``meter`` and ``clip`` are the running epoch's task meter and clipping statistics (plain
    state dicts, filled in when a checkpoint is written mid-epoch). The times are totals over
    all sessions of the run; ``completed`` is set by the last epoch's checkpoint.
    """
    completed: bool = False
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    images: int = 0
    resumes: list[int] = field(default_factory=list)
    epoch_end_wall_s: list[float] = field(default_factory=list)  # wall time at each epoch end
    history: list[dict] = field(default_factory=list)
    meter: dict | None = None
    clip: dict | None = None


def save_run(path: str | Path, parts: dict, progress: Progress, digest: str) -> None:
    """Write the run: ``parts`` maps a name to an object with ``state_dict()``, or None."""
    state = {"spec_hash": digest, "rng": rng_state()}
    state.update({name: obj.state_dict() if obj is not None else None for name, obj in parts.items()})
    state.update({f.name: getattr(progress, f.name) for f in fields(Progress)})
    save(path, state)


def restore(path: str | Path, parts: dict, digest: str, log) -> Progress | None:
    """Load the run at ``path`` into ``parts`` and the RNGs; its :class:`Progress`, or None to start afresh.

    A checkpoint of other settings is ignored (``log`` says why). Of a completed run only the
    progress is returned (``progress.completed``); nothing is loaded, so a rerun starts afresh.
    """
    state = load(path)
    if state is None:
        return None
    if state.get("spec_hash") != digest:
        log(f"{Path(path).parent}: checkpoint.pt is from other settings (spec hash {state.get('spec_hash')} "
            f"!= {digest}); starting afresh")
        return None
    progress = Progress(**{f.name: state[f.name] for f in fields(Progress) if f.name in state})
    if progress.completed:
        return progress
    for name, obj in parts.items():
        if obj is not None and state.get(name) is not None:
            try:
                obj.load_state_dict(state[name])
            except (RuntimeError, KeyError, ValueError) as exc:
                # Same settings, other layout: written by another version of the code (or copied
                # from another run). torch's message lists every key; its first line says enough.
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RuntimeError(
                    f"{path}: its {name} state does not fit this run's {name} ({first}); the "
                    f"checkpoint comes from another model or code version. Delete it to start the "
                    f"run afresh") from None
    set_rng_state(state["rng"])
    progress.resumes = list(progress.resumes) + [progress.step]
    progress.history = list(progress.history)
    return progress
