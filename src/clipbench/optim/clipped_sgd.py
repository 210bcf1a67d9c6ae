"""Clipped SGD (Algorithm 3.2 of the thesis), with momentum, in the style of torch.optim.SGD."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from .clipping import (
    ClipStats,
    Scratch,
    check_clipping,
    check_positive,
    clip_stats,
    global_norm,
    norm_scale,
    resolve_impl,
    sq_norm,
)

__all__ = ["ClippedSGD", "CLIP_TARGETS"]

CLIP_TARGETS = ("grad", "momentum")
_FUSABLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ClippedSGD(Optimizer):
    r"""SGD on a clipped stochastic gradient, with heavy-ball momentum.

    With ``d = g + weight_decay·x`` (``g`` the mini-batch gradient in ``p.grad``):

    * ``clip_target="grad"``: ``buf = μ·buf + clip(d)``, ``x -= lr·buf``;
    * ``clip_target="momentum"`` (the authors' public code): ``buf = μ·buf + d``,
      ``x -= lr·clip(buf)``, where for ``norm``/``layer`` the *scale* comes from the
      raw ``d`` (``min(1, λ/‖d‖)``) and is applied to ``buf``; ``coordinate`` clamps ``buf``.

    With ``momentum=0`` both are Algorithm 3.2, ``x -= lr·clip(d, λ)``, and no buffer is
    kept.  The first momentum step sets ``buf`` to its input, like torch's SGD (no dampening).

    Args:
        params: parameters or param groups.  ``lr``, ``momentum``, ``clip_level`` and
            ``weight_decay`` may differ per group.  ``clipping="norm"`` uses ONE norm over
            every parameter of the optimizer (all groups); each group scales by its own
            ``clip_level``: ``min(1, clip_level_group/‖d‖)``.
        clipping: ``norm`` | ``layer`` | ``coordinate`` | ``none`` (see ``clipping.py``).
        clip_level: λ > 0 (a norm for ``norm``/``layer``, a per-entry bound for ``coordinate``).
        foreach: ``None`` picks multi-tensor kernels on CUDA and the per-tensor in-place
            path on CPU; ``True``/``False`` force one.
        impl: ``"reference"`` | ``"loop"`` | ``"foreach"`` overrides ``foreach``
            (``reference`` is the plain, readable spec used by the tests).
        track_stats: ``None`` records what is free (norm, scale, clipped for ``norm`` and
            ``layer``); ``True`` also spends a pass on the norm (and max |d|) for
            ``coordinate``/``none``; ``False`` records nothing.

    ``p.grad`` is never modified.  The CPU path writes a clipped gradient into one shared
    scratch buffer the size of the largest parameter (workspace, not state); the
    ``foreach`` path allocates gradient-sized temporaries per step (cheap with the CUDA
    caching allocator).  ``weight_decay != 0`` allocates ``d`` per step, as torch's SGD does.

    AMP and accumulation: call ``scaler.scale(loss).backward()`` as often as needed,
    then ``scaler.unscale_(opt)`` and ``scaler.step(opt)``: clipping then sees the true,
    unscaled, accumulated gradient, and steps with inf/NaN gradients are skipped by the scaler.

    ``last_clip_stats`` gives the telemetry of the last step as a dict
    ``grad_norm``, ``scale``, ``clipped`` (converted from tensors only when read).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        clipping: str = "norm",
        clip_level: float = 1.0,
        clip_target: str = "grad",
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        impl: str | None = None,
        track_stats: bool | None = None,
    ) -> None:
        self.clipping = check_clipping(clipping)
        if clip_target not in CLIP_TARGETS:
            raise ValueError(f"Invalid clip_target: {clip_target!r} (must be one of {', '.join(CLIP_TARGETS)})")
        self.clip_target = clip_target
        self.foreach, self.impl, self.track_stats = foreach, impl, track_stats
        resolve_impl(impl, foreach, [])  # validates impl
        self._scratch = Scratch()
        self._stats = ClipStats()
        defaults = dict(lr=lr, momentum=momentum, clip_level=clip_level, weight_decay=weight_decay)
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __getstate__(self) -> dict:
        # torch's Optimizer pickles only defaults/state/param_groups; keep the settings too.
        state = super().__getstate__()
        state.update({k: getattr(self, k) for k in ("clipping", "clip_target", "foreach", "impl", "track_stats")})
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._scratch = Scratch()
        self._stats = ClipStats()

    @property
    def last_clip_stats(self) -> dict:
        return self._stats.as_dict()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("ClippedSGD does not support sparse gradients")
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = [g.add(p, alpha=group["weight_decay"]) for p, g in zip(params, grads)]
            work.append((group, params, grads))
        all_grads = [g for _, _, gs in work for g in gs]
        if not all_grads:
            return loss

        impl = resolve_impl(self.impl, self.foreach, all_grads)
        if impl == "loop" and not all(g.dtype in _FUSABLE for g in all_grads):
            impl = "reference"
        norm, layer_norms = _norms(all_grads, self.clipping, impl)

        scales, offset = [], 0
        for group, params, grads in work:
            lam, mu = group["clip_level"], group["momentum"]
            n = len(params)
            norms = norm if self.clipping == "norm" else layer_norms[offset : offset + n] if layer_norms else None
            offset += n
            bufs = [self.state[p].get("momentum_buffer") for p in params] if mu != 0 else None
            kw = dict(lr=group["lr"], mu=mu, lam=lam, clipping=self.clipping, target=self.clip_target, norms=norms)
            if impl == "reference":
                _sgd_reference(params, grads, bufs, **kw)
            elif impl == "foreach":
                _sgd_foreach(params, grads, bufs, **kw)
            else:
                _sgd_loop(params, grads, bufs, scratch=self._scratch, **kw)
            if bufs is not None:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
            if self.clipping == "norm":
                scales.append(norm_scale(norm, lam))
            elif self.clipping == "layer":
                scales.extend(norm_scale(x, lam) for x in norms)

        scale = torch.stack([s.to(scales[0].dtype) for s in scales]).amin() if scales else None
        if layer_norms is not None:
            norm = torch.stack([x.to(layer_norms[0].dtype) for x in layer_norms]).square().sum().sqrt()
        self._stats = clip_stats(self.clipping, min(g["clip_level"] for g in self.param_groups), norm, scale,
                                 all_grads, self.track_stats)
        return loss


def _check_group(group: dict) -> None:
    lr, mu, lam, wd = group["lr"], group["momentum"], group["clip_level"], group["weight_decay"]
    if not isinstance(lr, (int, float)) or lr < 0:
        raise ValueError(f"Invalid lr: {lr!r} (must be >= 0)")
    if not isinstance(mu, (int, float)) or not 0 <= mu < 1:
        raise ValueError(f"Invalid momentum: {mu!r} (must be in [0, 1))")
    check_positive("clip_level", lam)
    if not isinstance(wd, (int, float)) or wd < 0:
        raise ValueError(f"Invalid weight_decay: {wd!r} (must be >= 0)")


def _norms(grads: list[Tensor], clipping: str, impl: str) -> tuple[Tensor | None, list[Tensor] | None]:
    """The norms clipping needs: one global norm (``norm``) or one per tensor (``layer``)."""
    if clipping == "norm":
        if impl == "reference":
            return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])), None
        return global_norm(grads, foreach=impl == "foreach"), None
    if clipping == "layer":
        if impl == "foreach":
            return None, list(torch._foreach_norm(grads))
        if impl == "reference":
            return None, [torch.linalg.vector_norm(g) for g in grads]
        return None, [sq_norm(g).sqrt() for g in grads]
    return None, None


# --- reference path: the readable spec --------------------------------------------


def _clip_one(t: Tensor, clipping: str, lam: float, norm: Tensor | None) -> Tensor:
    if clipping == "coordinate":
        return t.clamp(-lam, lam)
    if clipping == "none":
        return t
    return t * norm_scale(norm, lam).to(t.dtype)


def _momentum(bufs: list, i: int, g: Tensor, mu: float) -> Tensor:
    if bufs[i] is None:
        bufs[i] = g.detach().clone()
    else:
        bufs[i].mul_(mu).add_(g)
    return bufs[i]


def _sgd_reference(params, grads, bufs, *, lr, mu, lam, clipping, target, norms):
    for i, (p, d) in enumerate(zip(params, grads)):
        norm = norms[i] if clipping == "layer" else norms
        if target == "grad" or mu == 0:
            upd = _clip_one(d, clipping, lam, norm)
            if mu != 0:
                upd = _momentum(bufs, i, upd, mu)
        else:
            upd = _clip_one(_momentum(bufs, i, d, mu), clipping, lam, norm)
        p.add_(upd, alpha=-lr)


# --- per-tensor in-place path (CPU default) ------------------------------------------


def _fused_momentum_step(p: Tensor, g: Tensor, bufs: list, i: int, lr, mu: float) -> None:
    """``buf = μ·buf + g; p -= lr·buf`` in one pass (``lr`` may be a 0-dim tensor: no sync)."""
    first = bufs[i] is None
    if first:
        bufs[i] = torch.empty_like(p)
    buf = bufs[i]
    if p.is_contiguous() and g.is_contiguous() and buf.is_contiguous():
        torch._fused_sgd_([p], [g], [buf], weight_decay=0.0, momentum=mu, lr=lr, dampening=0.0,
                          nesterov=False, maximize=False, is_first_step=first)
        return
    buf.copy_(g) if first else buf.mul_(mu).add_(g)
    if isinstance(lr, Tensor):
        p.addcmul_(buf, lr.to(p.dtype), value=-1)
    else:
        p.add_(buf, alpha=-lr)


def _sgd_loop(params, grads, bufs, *, lr, mu, lam, clipping, target, norms, scratch: Scratch):
    group_scale = norm_scale(norms, lam) if clipping == "norm" else None
    for i, (p, d) in enumerate(zip(params, grads)):
        s = group_scale if clipping == "norm" else norm_scale(norms[i], lam) if clipping == "layer" else None
        if s is not None and s.device.type == "cpu" and s.item() == 1.0:
            s = None  # nothing clipped: skip the multiply (a free check on CPU)
        if mu == 0:
            if clipping == "coordinate":
                p.add_(torch.clamp(d, -lam, lam, out=scratch.like(d)), alpha=-lr)
            elif s is None:
                p.add_(d, alpha=-lr)
            else:
                p.addcmul_(d, s.to(d.dtype), value=-lr)
        elif target == "grad":
            if clipping == "coordinate":
                g = torch.clamp(d, -lam, lam, out=scratch.like(d))
            elif s is None:
                g = d
            else:
                g = torch.mul(d, s.to(d.dtype), out=scratch.like(d))
            _fused_momentum_step(p, g, bufs, i, lr, mu)
        elif clipping == "coordinate":
            if bufs[i] is None:
                bufs[i] = d.detach().clone()
            else:
                torch.add(d, bufs[i], alpha=mu, out=bufs[i])
            p.add_(torch.clamp(bufs[i], -lam, lam, out=scratch.like(d)), alpha=-lr)
        else:
            _fused_momentum_step(p, d, bufs, i, lr if s is None else s * lr, mu)


# --- multi-tensor path (CUDA default) ---------------------------------------------------


def _foreach_clip(ts: list[Tensor], clipping: str, lam: float, norms) -> list[Tensor]:
    if clipping == "coordinate":
        out = torch._foreach_clamp_min(ts, -lam)
        torch._foreach_clamp_max_(out, lam)
        return out
    if clipping == "norm":
        return torch._foreach_mul(ts, norm_scale(norms, lam))
    if clipping == "layer":
        return torch._foreach_mul(ts, [norm_scale(n, lam).to(t.dtype) for n, t in zip(norms, ts)])
    return ts


def _foreach_momentum(bufs: list, gs: list[Tensor], mu: float) -> list[Tensor]:
    if any(b is None for b in bufs):
        for i in range(len(bufs)):
            _momentum(bufs, i, gs[i], mu)
    else:
        torch._foreach_mul_(bufs, mu)
        torch._foreach_add_(bufs, gs)
    return list(bufs)


def _sgd_foreach(params, grads, bufs, *, lr, mu, lam, clipping, target, norms):
    if target == "grad" or mu == 0:
        upd = _foreach_clip(grads, clipping, lam, norms)
        if mu != 0:
            upd = _foreach_momentum(bufs, upd, mu)
    else:
        upd = _foreach_clip(_foreach_momentum(bufs, grads, mu), clipping, lam, norms)
    torch._foreach_add_(params, upd, alpha=-lr)
