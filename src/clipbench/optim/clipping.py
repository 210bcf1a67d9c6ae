"""Clipping operators shared by ClippedSGD and ClippedSSTM.

Four modes (``CLIPPINGS``):

* ``norm``: ``clip(g, λ) = min(1, λ/‖g‖₂)·g`` with ONE Euclidean norm over every
  tensor handed in (for an optimizer: all its parameters, across param groups);
* ``layer``: the same, with a separate norm per tensor;
* ``coordinate``: each entry clamped to ``[-λ, λ]``;
* ``none``: identity.

The scale is computed as ``λ / max(‖g‖, λ)``: it is exactly 1 when nothing is
clipped (so an unclipped step is bit-identical to plain SGD), it never divides
by zero (λ > 0), and it stays a tensor, so no host synchronisation is needed on
CUDA.  A non-finite norm gives scale 0 or NaN: under AMP, ``GradScaler.step``
skips such steps before the optimizer sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = [
    "CLIPPINGS",
    "check_clipping",
    "check_positive",
    "sq_norm",
    "global_norm",
    "norm_scale",
    "clip_one",
    "ClipRecord",
    "ClippedOptimizer",
    "CACHE_BLOCK",
    "cache_blocks",
]

CLIPPINGS = ("norm", "layer", "coordinate", "none")


def check_clipping(clipping: str) -> str:
    if clipping not in CLIPPINGS:
        raise ValueError(f"Invalid clipping: {clipping!r} (must be one of {', '.join(CLIPPINGS)})")
    return clipping


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be > 0)")
    return float(value)


def sq_norm(t: Tensor) -> Tensor:
    """Squared Euclidean norm of one tensor, as a 0-dim tensor.

    On CPU a BLAS dot product is about 3x faster than ``vector_norm`` and, thanks
    to its blocked accumulation, also more accurate in float32.
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
        flat = t.view(-1)
        return torch.dot(flat, flat)
    return torch.linalg.vector_norm(t, dtype=torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None).square()


def _acc_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def global_norm(tensors: Sequence[Tensor], *, foreach: bool = False) -> Tensor:
    """One Euclidean norm over all ``tensors`` (0-dim tensor, float32 or float64)."""
    if not tensors:
        return torch.zeros(())
    acc = _acc_dtype(tensors)
    if foreach:
        norms = torch._foreach_norm(list(tensors))
        return torch.linalg.vector_norm(torch.stack([n.to(acc) for n in norms]))
    # .to() costs a dispatch even when it changes nothing: convert only what differs.
    return torch.stack([sq if sq.dtype == acc else sq.to(acc) for sq in map(sq_norm, tensors)]).sum().sqrt()


def norm_scale(norm: Tensor, level: float) -> Tensor:
    """``min(1, level/norm)`` as a tensor, exactly 1 when ``norm <= level``, 1 for norm 0."""
    clamped = torch.clamp_min(norm, level)
    return torch.div(torch.full_like(clamped, level), clamped)


def clip_one(t: Tensor, clipping: str, level: float, norm: Tensor | None) -> Tensor:
    """The readable spec of one tensor's clip: ``norm`` is the norm that decides its scale
    (the global one for ``norm``, the tensor's own for ``layer``); the input is never modified."""
    if clipping == "coordinate":
        return t.clamp(-level, level)
    if clipping == "none":
        return t
    return t * norm_scale(norm, level).to(t.dtype)


# --- helpers for the optimizers' implementation paths -------------------------

IMPLS = ("reference", "loop", "foreach")


def resolve_impl(impl: str | None, foreach: bool | None, tensors: Sequence[Tensor]) -> str:
    """Pick the update path.

    ``reference`` is the readable per-tensor spec; ``loop`` is the per-tensor in-place
    path with fused kernels (fastest on CPU, where tensors stay in cache between ops);
    ``foreach`` uses multi-tensor kernels (fewest launches on CUDA).  ``foreach=None``
    picks ``foreach`` when every tensor is on CUDA, ``loop`` otherwise.
    """
    if impl is not None:
        if impl not in IMPLS:
            raise ValueError(f"Invalid impl: {impl!r} (must be one of {', '.join(IMPLS)})")
        return impl
    if foreach is not None:
        return "foreach" if foreach else "loop"
    return "foreach" if tensors and all(t.device.type == "cuda" for t in tensors) else "loop"


def impl_global_norm(tensors: Sequence[Tensor], impl: str) -> Tensor:
    """The global norm as each path computes it (``reference``: plain ``vector_norm``s)."""
    if impl == "reference":
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))
    return global_norm(tensors, foreach=impl == "foreach")


def impl_layer_norm(t: Tensor, impl: str) -> Tensor:
    return torch.linalg.vector_norm(t) if impl == "reference" else sq_norm(t).sqrt()


class Scratch:
    """One reusable buffer per (device, dtype), as large as the largest tensor seen.

    It lets the fast paths write a clipped gradient without allocating per step and
    without modifying ``p.grad``; it is workspace, not optimizer state (not saved).
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        # Views by dtype, device and shape: a step asks for the same shapes every time,
        # and a slice plus a view per call was a third of a small tensor's step (CPU).
        self._views: dict[tuple, Tensor] = {}

    def like(self, t: Tensor) -> Tensor:
        vkey = (t.dtype, t.is_cpu, t.get_device(), t.shape)
        view = self._views.get(vkey)
        if view is not None:
            return view
        key = (t.device, t.dtype)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < t.numel():
            buf = self._bufs[key] = torch.empty(t.numel(), device=t.device, dtype=t.dtype)
            self._views = {k: v for k, v in self._views.items() if k[:3] != vkey[:3]}  # the old buffer's
        view = self._views[vkey] = buf[: t.numel()].view(t.shape)
        return view


# Entries per block (2 MiB of float32): a chain of elementwise ops over one block finds its
# operands still in cache, so a temporary (a clipped gradient, a clamped buffer) costs no
# trip to memory.  On ResNet-18's parameters (2-core EPYC, 1 MiB L2) the gain was 5-10 % of
# the step in one micro-benchmark and within the noise in another; blocks of 64K entries were
# slower than none (per-op dispatch, and a block too small to split between threads).
CACHE_BLOCK = 1 << 19


def cache_blocks(*tensors):
    """Aligned flat slices of ``tensors`` (``None`` passes through), one block at a time.

    Elementwise work only: every slice covers the same entries of every tensor.  Tensors
    that are small, not contiguous or not on the CPU come back whole, in one tuple.
    """
    live = [t for t in tensors if t is not None]
    n = live[0].numel()
    if n <= CACHE_BLOCK or live[0].device.type != "cpu" or not all(t.is_contiguous() for t in live):
        yield tensors
        return
    flat = [None if t is None else t.view(-1) for t in tensors]
    for a in range(0, n, CACHE_BLOCK):
        yield tuple(None if f is None else f[a:a + CACHE_BLOCK] for f in flat)


# --- per-step clipping telemetry ----------------------------------------------------------


class ClipRecord:
    """What clipping did in one optimizer step, kept as tensors (recording costs no host sync).

    ``clipped``: whether clipping changed the update; ``scale``: the mean clip scale over
    tensors (``norm``/``layer``); ``entry_fraction``: the share of entries clamped
    (``coordinate``); ``grad_norm``: the gradient's norm where it is computed anyway.
    ``None`` where a mode has no such number or the step was not sampled.
    ``as_dict()`` converts lazily (the sync happens only when someone reads it).
    """

    __slots__ = ("grad_norm", "scale", "clipped", "entry_fraction", "extra")

    def __init__(self, grad_norm=None, scale=None, clipped=None, entry_fraction=None, **extra) -> None:
        self.grad_norm, self.scale, self.clipped, self.entry_fraction = grad_norm, scale, clipped, entry_fraction
        self.extra = extra

    def as_dict(self) -> dict:
        def conv(v):
            if isinstance(v, Tensor):
                return bool(v.item()) if v.dtype == torch.bool else float(v.item())
            return v

        out = {k: conv(getattr(self, k)) for k in ("grad_norm", "scale", "clipped", "entry_fraction")}
        out.update({k: conv(v) for k, v in self.extra.items()})
        return out


def step_record(clipping: str, levels: Sequence[float], *, norm: Tensor | None = None,
                layer_norms: Sequence[Tensor] = (), clamped: Sequence[Tensor] = (),
                of_grad: bool = True, **extra) -> ClipRecord:
    """The record of one step, measured on what was actually clipped.

    ``levels``: λ of each tensor, in the order of ``layer_norms`` (``layer``: the norm of
    what each tensor's scale came from) or ``clamped`` (``coordinate``: the quantity clamped;
    empty on steps that are not sampled).  ``norm``: the global norm (``norm`` mode).
    ``of_grad``: whether those norms are the gradient's (not a momentum buffer's), so that
    the gradient's norm comes with them for free.
    """
    if clipping == "norm" and norm is not None and levels:
        # One norm for every tensor: each distinct λ's scale counted once per tensor that has it
        # (no per-tensor stack: that cost ~7 % of a ResNet-18 step on CPU).
        counts: dict[float, int] = {}
        for lam in levels:
            counts[lam] = counts.get(lam, 0) + 1
        total = sum(norm_scale(norm, lam) * c for lam, c in counts.items())
        return ClipRecord(norm, total / len(levels), norm > min(counts), **extra)
    if clipping == "layer" and layer_norms:
        # One stack of the per-tensor norms, reused: per-tensor ops cost ~12 % of a step.
        acc = _acc_dtype(layer_norms)
        norms = torch.stack([n if n.dtype == acc else n.to(acc) for n in layer_norms])
        grad_norm = norms.square().sum().sqrt() if of_grad else None
        distinct = set(levels)
        if len(distinct) == 1:  # the usual case: no λ tensor copied to the device
            lam = distinct.pop()
            scales, clipped = norm_scale(norms, lam), (norms > lam).any()
        else:
            lam = torch.tensor(levels, dtype=acc, device=norms.device)
            scales, clipped = lam / torch.maximum(norms, lam), (norms > lam).any()
        return ClipRecord(grad_norm, scales.mean(), clipped, **extra)
    if clipping == "coordinate" and clamped:
        # v > λ or v < -λ is exactly where the clamp changes an entry (NaN: neither); two
        # comparisons read the tensor twice but write no float temporary (faster than |v| > λ).
        counts = torch.stack([torch.count_nonzero(t > lam) + torch.count_nonzero(t < -lam)
                              for t, lam in zip(clamped, levels)]).sum()
        total = sum(t.numel() for t in clamped)
        return ClipRecord(None, None, counts > 0, counts.double() / max(total, 1), **extra)
    return ClipRecord(**extra)


class ClippedOptimizer(Optimizer):
    """What ClippedSGD and ClippedSSTM share: optimizer-wide settings that survive
    pickling and deepcopy, a scratch workspace, and the last step's clipping record.

    The record is kept unless ``telemetry=False`` (for measuring its cost): ``norm``/``layer``
    statistics reuse the norms clipping computes anyway; ``coordinate`` needs one more read of
    the clamped quantity, so it is measured on every ``stats_every``-th step only (the others
    report ``None``).
    """

    _settings: tuple[str, ...] = ("clipping", "foreach", "impl", "stats_every", "telemetry")

    def _init_settings(self, clipping: str, foreach, impl, stats_every: int, telemetry: bool = True) -> None:
        self.clipping = check_clipping(clipping)
        if isinstance(stats_every, bool) or not isinstance(stats_every, int) or stats_every < 1:
            raise ValueError(f"Invalid stats_every: {stats_every!r} (must be an integer >= 1)")
        if not isinstance(telemetry, bool):
            raise ValueError(f"Invalid telemetry: {telemetry!r} (must be True or False)")
        self.foreach, self.impl, self.stats_every, self.telemetry = foreach, impl, stats_every, telemetry
        resolve_impl(impl, foreach, [])  # validates impl
        self._scratch = Scratch()
        self._stats = ClipRecord()

    def __getstate__(self) -> dict:
        # torch's Optimizer pickles only defaults/state/param_groups; keep the settings too.
        state = super().__getstate__()
        state.update({k: getattr(self, k) for k in self._settings})
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("telemetry", True)  # pickled before the switch existed
        super().__setstate__(state)
        self._scratch = Scratch()
        self._stats = ClipRecord()

    def _samples(self, step: int) -> bool:
        """Whether step number ``step`` (from 0) measures the coordinate statistics."""
        return self.telemetry and self.clipping == "coordinate" and step % self.stats_every == 0

    def _record(self, *args, **kwargs) -> None:
        self._stats = step_record(*args, **kwargs) if self.telemetry else ClipRecord()

    @property
    def last_clip_stats(self) -> dict:
        """The last step's :class:`ClipRecord` as a dict (reading it syncs on CUDA)."""
        return self._stats.as_dict()
