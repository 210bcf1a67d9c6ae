"""Decoded images kept in memory across epochs, in the process that reads them.

A small dataset read in the training process (``num_workers: 0``, the embedded default) is
decoded again at every epoch, for every evaluation and for every BatchNorm recomputation: in
the default's segmentation runs that was about a tenth of a job. The cache keeps what a file
decodes to (a PIL image, arrays) under a byte budget, so each file is decoded once per job;
the pixels, the random draws and so the results are the same.

It does not fill in a DataLoader worker: a worker's copy would die with the worker (and
multiply the memory by the number of workers), and workers are what a large dataset uses
anyway. Once the budget is spent it stops adding: an epoch reads every file once, so
evicting old entries for new ones would never hit.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

# Decoded megabytes kept per process: the default's data take ~15 MB; an ImageNet-sized set
# fills the budget with its first files and decodes the rest as before.
BUDGET_ENV, BUDGET_MB = "CLIPBENCH_DECODED_CACHE_MB", 512


def budget_from_env() -> int:
    """The budget in bytes, from ``CLIPBENCH_DECODED_CACHE_MB`` (0 turns the cache off)."""
    raw = os.environ.get(BUDGET_ENV, str(BUDGET_MB))
    if not raw.strip().isdigit():
        raise ValueError(f"{BUDGET_ENV}={raw!r}: the decoded-image cache's budget must be a whole number "
                         f"of MB (0 turns the cache off; unset: {BUDGET_MB})")
    return int(raw) * 2**20


def _nbytes(value: Any) -> int:
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(map(_nbytes, value))
    raise TypeError(f"cannot size a {type(value).__name__} for the decoded cache")


def _copy(value: Any) -> Any:
    """A copy the caller may change without changing the cache."""
    if isinstance(value, Image.Image):
        return value.copy()
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return tuple(map(_copy, value))


class DecodedCache:
    """``budget``: bytes; None reads :func:`budget_from_env` at the first store, in the process
    that stores (a job forked from the job server has its own environment, not the server's)."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget, self.used = budget, 0
        self._values: dict[Any, Any] = {}

    def get(self, kind: str, paths: tuple, decode: Callable[[], Any]) -> Any:
        """``decode()``'s value for the files ``paths`` (what ``kind`` of decoding), decoded once
        as long as none of the files changes (its size and modification time are in the key)."""
        try:
            key = (kind, *((str(p), *_identity(p)) for p in paths))
        except OSError:  # a missing file: decode() names it
            return decode()
        value = self._values.get(key)
        if value is not None:
            return _copy(value)
        value = decode()
        if self.budget is None:
            self.budget = budget_from_env()
        size = _nbytes(value)
        if self.used + size <= self.budget and torch.utils.data.get_worker_info() is None:
            self._values[key] = _copy(value)
            self.used += size
        return value

    def clear(self) -> None:
        self._values.clear()
        self.used = 0


CACHE = DecodedCache()


def _identity(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class Cached:
    """A loader of one path (``decode``) through :data:`CACHE`. A class, not a closure: a
    DataLoader worker started by spawn or forkserver receives its dataset pickled."""

    def __init__(self, decode: Callable[[str], Any]) -> None:
        self.decode = decode

    def __call__(self, path):
        return CACHE.get(self.decode.__qualname__, (path,), lambda: self.decode(path))
