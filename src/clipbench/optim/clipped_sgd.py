"""Clipped SGD (Algorithm 3.2 of the thesis), with momentum, in the style of torch.optim.SGD."""

from __future__ import annotations

import torch
from torch import Tensor

from .clipping import (
    ClippedOptimizer,
    Scratch,
    cache_blocks,
    check_positive,
    clip_one,
    impl_global_norm,
    norm_scale,
    resolve_impl,
    sq_norm,
)

__all__ = ["ClippedSGD", "CLIP_TARGETS"]

CLIP_TARGETS = ("grad", "momentum")
_FUSABLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ClippedSGD(ClippedOptimizer):
    r"""SGD on a clipped stochastic gradient, with heavy-ball momentum.

    With ``d = g + weight_decay·x`` (``g`` the mini-batch gradient in ``p.grad``):

    * ``clip_target="grad"``: ``buf = μ·buf + clip(d)``, ``x -= lr·buf``;
    * ``clip_target="momentum"`` (the authors' public code): ``buf = μ·buf + d``,
      ``x -= lr·clip(buf)``, where for ``norm`` the *scale* comes from the global norm of
      the raw ``d`` (``min(1, λ/‖d‖)``) and is applied to ``buf``; ``layer`` scales each
      ``buf_t`` by ``min(1, λ/‖buf_t‖)``, its own buffer's norm; ``coordinate`` clamps ``buf``.

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
        stats_every: ``coordinate`` clipping measures its statistics (one more read of the
            clamped quantity) on every ``stats_every``-th step only (20: about 0.5 % of a
            demo ResNet-18 step on CPU when measured); ``norm``/``layer`` statistics reuse the
            norms clipping computes and are recorded at every step.
        telemetry: ``False`` keeps no clipping record (``last_clip_stats`` all ``None``); for
            measuring the record's cost, which ``clipbench bench optim`` reports.

    ``p.grad`` is never modified.  The CPU path writes a clipped gradient into one shared
    scratch buffer the size of the largest parameter (workspace, not state); the
    ``foreach`` path allocates gradient-sized temporaries per step (cheap with the CUDA
    caching allocator).  ``weight_decay != 0`` allocates ``d`` per step, as torch's SGD does.

    AMP and accumulation: call ``scaler.scale(loss).backward()`` as often as needed,
    then ``scaler.unscale_(opt)`` and ``scaler.step(opt)``: clipping then sees the true,
    unscaled, accumulated gradient, and steps with inf/NaN gradients are skipped by the scaler.

    ``last_clip_stats`` gives the last step's :class:`~.clipping.ClipRecord` as a dict
    (``clipped``, ``scale``, ``entry_fraction``, ``grad_norm``), measured on what was
    clipped (the buffer when ``clip_target="momentum"``), converted from tensors only when read.
    Each group counts its steps in ``group["step"]``.
    """

    _settings = ClippedOptimizer._settings + ("clip_target",)

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
        stats_every: int = 20,
        telemetry: bool = True,
    ) -> None:
        self._init_settings(clipping, foreach, impl, stats_every, telemetry)
        if clip_target not in CLIP_TARGETS:
            raise ValueError(f"Invalid clip_target: {clip_target!r} (must be one of {', '.join(CLIP_TARGETS)})")
        self.clip_target = clip_target
        defaults = dict(lr=lr, momentum=momentum, clip_level=clip_level, weight_decay=weight_decay)
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _check_group({**self.defaults, **param_group})
        param_group.setdefault("step", 0)
        super().add_param_group(param_group)

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
        norm = impl_global_norm(all_grads, impl) if self.clipping == "norm" else None
        sample = self._samples(self.param_groups[0].get("step", 0))
        path = {"reference": _sgd_reference, "loop": _sgd_loop, "foreach": _sgd_foreach}[impl]
        levels, layer_norms, clamped, of_grad = [], [], [], True
        for group, params, grads in work:
            lam, mu = group["clip_level"], group["momentum"]
            on_buf = mu != 0 and self.clip_target == "momentum"
            bufs = [self.state[p].get("momentum_buffer") for p in params] if mu != 0 else None
            extra = {"scratch": self._scratch} if impl == "loop" else {}
            used = path(params, grads, bufs, lr=group["lr"], mu=mu, lam=lam, clipping=self.clipping,
                        target=self.clip_target, norm=norm, **extra)
            if bufs is not None:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
            levels.extend([lam] * len(params))
            layer_norms.extend(used or ())
            if sample:
                clamped.extend(bufs if on_buf else grads)
            of_grad = of_grad and not on_buf
            group["step"] = group.get("step", 0) + 1

        self._record(self.clipping, levels, norm=norm, layer_norms=layer_norms, clamped=clamped, of_grad=of_grad)
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


# --- reference path: the readable spec --------------------------------------------


def _momentum(bufs: list, i: int, g: Tensor, mu: float) -> Tensor:
    if bufs[i] is None:
        bufs[i] = g.detach().clone()
    else:
        bufs[i].mul_(mu).add_(g)
    return bufs[i]


def _sgd_reference(params, grads, bufs, *, lr, mu, lam, clipping, target, norm):
    """Returns the per-tensor norms ``layer`` clipping used (else None)."""
    used = []
    for i, (p, d) in enumerate(zip(params, grads)):
        src = d if target == "grad" or mu == 0 else _momentum(bufs, i, d, mu)
        n = torch.linalg.vector_norm(src) if clipping == "layer" else norm
        upd = clip_one(src, clipping, lam, n)
        if src is d and mu != 0:
            upd = _momentum(bufs, i, upd, mu)
        used.append(n)
        p.add_(upd, alpha=-lr)
    return used if clipping == "layer" else None


# --- per-tensor in-place path (CPU default) ------------------------------------------


def _fused_momentum_step(p: Tensor, g: Tensor, buf: Tensor, first: bool, lr, mu: float,
                         dampening: float = 0.0) -> None:
    """``buf = μ·buf + (1 - dampening)·g`` (``buf = g`` on the first step); ``p -= lr·buf``, in
    one pass where the tensors are contiguous (``lr`` may be a 0-dim tensor: no sync)."""
    if p.is_contiguous() and g.is_contiguous() and buf.is_contiguous():
        torch._fused_sgd_([p], [g], [buf], weight_decay=0.0, momentum=mu, lr=lr, dampening=dampening,
                          nesterov=False, maximize=False, is_first_step=first)
        return
    buf.copy_(g) if first else buf.mul_(mu).add_(g, alpha=1.0 - dampening)
    if isinstance(lr, Tensor):
        p.addcmul_(buf, lr.to(p.dtype), value=-1)
    else:
        p.add_(buf, alpha=-lr)


def _new_buffer(bufs: list, i: int, like: Tensor) -> bool:
    """Whether this is the buffer's first step (then it is allocated, to be written whole)."""
    if bufs[i] is None:
        bufs[i] = torch.empty_like(like)
        return True
    return False


def _clip_into(d: Tensor, clipping: str, lam: float, s: Tensor | None, scratch: Scratch) -> Tensor:
    """``clip(d)`` in the scratch buffer (``d`` itself when nothing is clipped)."""
    if clipping == "coordinate":
        return torch.clamp(d, -lam, lam, out=scratch.like(d))
    return d if s is None else torch.mul(d, s, out=scratch.like(d))


def _sgd_loop(params, grads, bufs, *, lr, mu, lam, clipping, target, norm, scratch: Scratch):
    """Returns the per-tensor norms ``layer`` clipping used (else None).

    Each tensor is worked through in cache blocks, so the clipped gradient written to the
    scratch buffer is read back from cache by the update that follows.
    """
    group_scale = norm_scale(norm, lam) if clipping == "norm" else None
    if group_scale is not None and group_scale.device.type == "cpu" and group_scale.item() == 1.0:
        group_scale = None  # nothing clipped: skip the multiply (a free check on CPU)
    used = [] if clipping == "layer" else None
    # ``norm``: in reverse, so the gradients the global norm read last are still in cache.
    for i in (reversed(range(len(params))) if clipping == "norm" else range(len(params))):
        p, d = params[i], grads[i]
        if mu != 0 and target == "momentum" and clipping in ("layer", "coordinate"):
            _step_on_buffer(p, d, bufs, i, lr=lr, mu=mu, lam=lam, clipping=clipping, used=used, scratch=scratch)
            continue
        s = group_scale
        if clipping == "layer":
            used.append(sq_norm(d).sqrt())
            s = norm_scale(used[-1], lam)
            if s.device.type == "cpu" and s.item() == 1.0:
                s = None
        if s is not None:
            s = s.to(d.dtype)
        if mu != 0 and target == "momentum":  # norm (scale from the raw gradient) or none, on the buffer
            first = _new_buffer(bufs, i, p)
            _fused_momentum_step(p, d, bufs[i], first, lr if s is None else s * lr, mu)
        elif mu == 0:
            for pc, dc in cache_blocks(p, d):
                pc.add_(_clip_into(dc, clipping, lam, s, scratch), alpha=-lr)
        elif s is not None and bufs[i] is not None and _scale_as_dampening(d, s):
            # buf = μ·buf + s·d is torch's dampened momentum with dampening 1 - s: one fused
            # pass, no clipped copy of d (in double, 1 - (1 - s) is s to far below float32's
            # resolution for the s allowed here).
            _fused_momentum_step(p, d, bufs[i], False, lr, mu, dampening=1.0 - s.item())
        else:
            first = _new_buffer(bufs, i, p)
            for pc, dc, bc in cache_blocks(p, d, bufs[i]):
                _fused_momentum_step(pc, _clip_into(dc, clipping, lam, s, scratch), bc, first, lr, mu)
    return used


def _scale_as_dampening(d: Tensor, s: Tensor) -> bool:
    """Whether ``s·d`` may go into the fused kernel as dampening ``1 - s``: on the CPU (the
    scale is then free to read), reduced-precision or float32 tensors, and ``s`` not so small
    that ``1 - s`` loses its digits."""
    return (d.device.type == "cpu" and d.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and d.is_contiguous() and s.item() >= 1e-6)


def _step_on_buffer(p: Tensor, d: Tensor, bufs: list, i: int, *, lr, mu, lam, clipping, used,
                    scratch: Scratch) -> None:
    """``buf = μ·buf + d; p -= lr·clip(buf)`` for ``coordinate`` (clamp, in cache blocks) and
    ``layer`` (the buffer's own norm, known only once the whole buffer is updated)."""
    first = _new_buffer(bufs, i, d)
    buf = bufs[i]
    if clipping == "coordinate":
        for pc, dc, bc in cache_blocks(p, d, buf):
            bc.copy_(dc) if first else torch.add(dc, bc, alpha=mu, out=bc)
            pc.add_(torch.clamp(bc, -lam, lam, out=scratch.like(bc)), alpha=-lr)
        return
    buf.copy_(d) if first else torch.add(d, buf, alpha=mu, out=buf)
    n = sq_norm(buf).sqrt()
    used.append(n)
    s = norm_scale(n, lam)
    if s.device.type == "cpu":
        p.add_(buf, alpha=-lr * s.item())  # the scale folded into the step: no temporary
    else:
        p.add_(torch.mul(buf, s.to(buf.dtype), out=scratch.like(buf)), alpha=-lr)


# --- multi-tensor path (CUDA default) ---------------------------------------------------


def _foreach_clip(ts: list[Tensor], clipping: str, lam: float, norm) -> tuple[list[Tensor], list | None]:
    """The clipped tensors, and the per-tensor norms ``layer`` used (else None)."""
    if clipping == "coordinate":
        out = torch._foreach_clamp_min(ts, -lam)
        torch._foreach_clamp_max_(out, lam)
        return out, None
    if clipping == "norm":
        return torch._foreach_mul(ts, norm_scale(norm, lam)), None
    if clipping == "layer":
        norms = list(torch._foreach_norm(ts))
        return torch._foreach_mul(ts, [norm_scale(n, lam).to(t.dtype) for n, t in zip(norms, ts)]), norms
    return ts, None


def _foreach_momentum(bufs: list, gs: list[Tensor], mu: float) -> list[Tensor]:
    if any(b is None for b in bufs):
        for i in range(len(bufs)):
            _momentum(bufs, i, gs[i], mu)
    else:
        torch._foreach_mul_(bufs, mu)
        torch._foreach_add_(bufs, gs)
    return list(bufs)


def _sgd_foreach(params, grads, bufs, *, lr, mu, lam, clipping, target, norm):
    """Returns the per-tensor norms ``layer`` clipping used (else None)."""
    if target == "grad" or mu == 0:
        upd, used = _foreach_clip(grads, clipping, lam, norm)
        if mu != 0:
            upd = _foreach_momentum(bufs, upd, mu)
    else:
        upd, used = _foreach_clip(_foreach_momentum(bufs, grads, mu), clipping, lam, norm)
    torch._foreach_add_(params, upd, alpha=-lr)
    return used
