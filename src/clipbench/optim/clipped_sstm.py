"""Clipped Stochastic Similar Triangles Method (Algorithm 3.3; Gorbunov, Danilova, Gasnikov 2020)."""

from __future__ import annotations

import contextlib

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

__all__ = ["ClippedSSTM", "sstm_alpha"]


def sstm_alpha(k: int, a: float, L: float, nu: float) -> float:
    """``α_{k+1} = (k+2)^{2ν/(1+ν)} / (2aL)``."""
    return (k + 2) ** (2 * nu / (1 + nu)) / (2 * a * L)


class ClippedSSTM(Optimizer):
    r"""Clipped-SSTM.  With ``A_0 = 0`` and ``y_0 = z_0 = x_0``, step ``k = 0, 1, ...``:

    ``α_{k+1} = (k+2)^{2ν/(1+ν)}/(2aL)``, ``A_{k+1} = A_k + α_{k+1}``, ``λ_{k+1} = B/α_{k+1}``,
    ``z_{k+1} = z_k − α_{k+1}·clip(g(x_{k+1}), λ_{k+1})``,
    ``y_{k+1} = w_k·y_k + (1 − w_k)·z_{k+1}`` with ``w_k = A_k/A_{k+1}``,
    then the next gradient point ``x_{k+2} = w_{k+1}·y_{k+1} + (1 − w_{k+1})·z_{k+1}``
    is written into the parameters.

    So the parameters always hold the point where the next gradient is taken (``x_0 = x_1``
    before the first step); ``with opt.output():`` they hold ``y``, the method's output
    (use it for evaluation and saved models), and are restored bit-for-bit on exit.

    Args:
        a: step parameter (the authors' code and the thesis' "step" is ``1/a``).
        L: smoothness constant.  B: clipping parameter, ``λ_{k+1} = B/α_{k+1}``.
        clipping: ``norm`` (one norm over all parameters) | ``layer`` | ``coordinate``
            (``λ_{k+1}`` is the per-entry bound) | ``none``.
        nu: Hölder exponent of the gradient, in (0, 1].
        ratio_bound: optional cap in (0, 1) on the averaging weight: ``w_k = min(A_k/A_{k+1},
            ratio_bound)``, i.e. the new point always gets weight at least ``1 − ratio_bound``
            (``A_k`` itself keeps accumulating).  The authors' ImageNet runs used 0.99; their
            code instead resets ``A_k`` to ``ratio_bound/(1−ratio_bound)·α_{k+1}`` when the
            ratio passes ``1/(2−ratio_bound)``, so its weight alternates between
            ``ratio_bound`` and about ``1/(2−ratio_bound)``: within 1e-4 of this rule at 0.99.
        foreach, impl, track_stats: as in :class:`ClippedSGD`.

    ``a, L, B, nu, ratio_bound`` may differ per param group (each group runs its own
    sequence ``α, A`` on the shared step count); ``norm`` clipping uses one norm over all
    groups.  State: per parameter ``y`` and ``z`` (nothing else full-size); per group
    ``step`` (int) and ``A`` (python float: exact enough over 10^6 steps) in the param group
    itself, so ``state_dict()`` round-trips through ``torch.load(weights_only=True)``.
    A parameter whose gradient is ``None`` is left alone until it first has one (it still
    holds ``x_0 = y = z``); after that a missing gradient counts as zero.
    AMP/accumulation: ``scaler.unscale_(opt)`` then ``scaler.step(opt)``, as for ClippedSGD.
    """

    def __init__(
        self,
        params,
        a: float,
        L: float,
        B: float = 1.0,
        clipping: str = "norm",
        nu: float = 1.0,
        ratio_bound: float | None = None,
        *,
        foreach: bool | None = None,
        impl: str | None = None,
        track_stats: bool | None = None,
    ) -> None:
        self.clipping = check_clipping(clipping)
        self.foreach, self.impl, self.track_stats = foreach, impl, track_stats
        resolve_impl(impl, foreach, [])
        self._scratch = Scratch()
        self._stats = ClipStats()
        defaults = dict(a=a, L=L, B=B, nu=nu, ratio_bound=ratio_bound)
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _check_group({**self.defaults, **param_group})
        param_group.setdefault("step", 0)
        param_group.setdefault("A", 0.0)
        super().add_param_group(param_group)

    def __getstate__(self) -> dict:
        # torch's Optimizer pickles only defaults/state/param_groups; keep the settings too.
        state = super().__getstate__()
        state.update({k: getattr(self, k) for k in ("clipping", "foreach", "impl", "track_stats")})
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
            params, grads, ys, zs = [], [], [], []
            for p in group["params"]:
                state = self.state[p]
                if p.grad is None and not state:
                    continue
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError("ClippedSSTM does not support sparse gradients")
                if not state:  # never moved yet: x = x_0 = y_0 = z_0
                    state["y"] = p.detach().clone()
                    state["z"] = p.detach().clone()
                params.append(p)
                grads.append(p.grad)
                ys.append(state["y"])
                zs.append(state["z"])
            work.append((group, params, grads, ys, zs))
        all_grads = [g for w in work for g in w[2] if g is not None]

        impl = resolve_impl(self.impl, self.foreach, all_grads)
        if impl == "loop" and not all(g.is_floating_point() for g in all_grads):
            impl = "reference"
        norm = None
        if self.clipping == "norm" and all_grads:
            norm = global_norm(all_grads, foreach=impl == "foreach") if impl != "reference" else \
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in all_grads]))

        scales, layer_norms, lams, alphas = [], [], [], []
        for group, params, grads, ys, zs in work:
            k, A = group["step"], group["A"]
            alpha = sstm_alpha(k, group["a"], group["L"], group["nu"])
            A_next = A + alpha
            alpha_next = sstm_alpha(k + 1, group["a"], group["L"], group["nu"])
            w = _weight(A, A_next, group["ratio_bound"])
            w_next = _weight(A_next, A_next + alpha_next, group["ratio_bound"])
            lam = group["B"] / alpha
            if params:
                if self.clipping == "layer":
                    norms = [None if g is None else _layer_norm(g, impl) for g in grads]
                    layer_norms.extend(n for n in norms if n is not None)
                    scales.extend(norm_scale(n, lam) for n in norms if n is not None)
                else:
                    norms = norm
                    if norm is not None:
                        scales.append(norm_scale(norm, lam))
                fn = {"reference": _sstm_reference, "loop": _sstm_loop, "foreach": _sstm_foreach}[impl]
                extra = {"scratch": self._scratch} if impl == "loop" else {}
                fn(params, grads, ys, zs, alpha=alpha, lam=lam, w=w, w_next=w_next,
                   clipping=self.clipping, norms=norms, **extra)
            group["step"], group["A"] = k + 1, A_next
            lams.append(lam)
            alphas.append(alpha)

        scale = torch.stack([s.to(scales[0].dtype) for s in scales]).amin() if scales else None
        if layer_norms:
            norm = torch.stack([x.to(layer_norms[0].dtype) for x in layer_norms]).square().sum().sqrt()
        self._stats = clip_stats(self.clipping, min(lams), norm, scale, all_grads, self.track_stats,
                                 alpha=alphas[0], **{"lambda": lams[0]})
        return loss

    @contextlib.contextmanager
    def output(self):
        """Parameters hold ``y`` (the method's output) inside the block; restored exactly on exit."""
        saved = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state.get(p)
                    if state and "y" in state:
                        saved.append((p, p.detach().clone()))
                        p.copy_(state["y"])
        try:
            yield self
        finally:
            with torch.no_grad():
                for p, x in saved:
                    p.copy_(x)


def _check_group(group: dict) -> None:
    for name in ("a", "L", "B"):
        check_positive(name, group[name])
    nu = group["nu"]
    if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not 0 < nu <= 1:
        raise ValueError(f"Invalid nu: {nu!r} (must be in (0, 1])")
    rb = group["ratio_bound"]
    if rb is not None and (isinstance(rb, bool) or not isinstance(rb, (int, float)) or not 0 < rb < 1):
        raise ValueError(f"Invalid ratio_bound: {rb!r} (must be in (0, 1) or None)")


def _weight(A: float, A_next: float, ratio_bound: float | None) -> float:
    w = A / A_next
    return w if ratio_bound is None else min(w, ratio_bound)


def _layer_norm(g: Tensor, impl: str) -> Tensor:
    return sq_norm(g).sqrt() if impl != "reference" else torch.linalg.vector_norm(g)


def _clip_one(g: Tensor, clipping: str, lam: float, norm: Tensor | None) -> Tensor:
    if clipping == "coordinate":
        return g.clamp(-lam, lam)
    if clipping == "none":
        return g
    return g * norm_scale(norm, lam).to(g.dtype)


def _sstm_reference(params, grads, ys, zs, *, alpha, lam, w, w_next, clipping, norms):
    for i, (p, g, y, z) in enumerate(zip(params, grads, ys, zs)):
        if g is not None:
            z.sub_(alpha * _clip_one(g, clipping, lam, norms[i] if clipping == "layer" else norms))
        y.mul_(w).add_(z, alpha=1 - w)
        p.copy_(w_next * y + (1 - w_next) * z)


def _sstm_loop(params, grads, ys, zs, *, alpha, lam, w, w_next, clipping, norms, scratch: Scratch):
    group_scale = norm_scale(norms, lam) if clipping == "norm" and norms is not None else None
    for i, (p, g, y, z) in enumerate(zip(params, grads, ys, zs)):
        if g is not None:
            if clipping == "coordinate":
                z.add_(torch.clamp(g, -lam, lam, out=scratch.like(g)), alpha=-alpha)
            elif clipping == "none":
                z.add_(g, alpha=-alpha)
            else:
                s = group_scale if clipping == "norm" else norm_scale(norms[i], lam)
                z.addcmul_(g, s.to(g.dtype), value=-alpha)
        y.lerp_(z, 1 - w)
        if p.is_contiguous():
            torch.lerp(y, z, 1 - w_next, out=p)
        else:
            p.copy_(torch.lerp(y, z, 1 - w_next))


def _sstm_foreach(params, grads, ys, zs, *, alpha, lam, w, w_next, clipping, norms):
    idx = [i for i, g in enumerate(grads) if g is not None]
    gs, zg = [grads[i] for i in idx], [zs[i] for i in idx]
    if gs:
        if clipping == "coordinate":
            upd = torch._foreach_clamp_min(gs, -lam)
            torch._foreach_clamp_max_(upd, lam)
        elif clipping == "norm":
            upd = torch._foreach_mul(gs, norm_scale(norms, lam))
        elif clipping == "layer":
            upd = torch._foreach_mul(gs, [norm_scale(norms[i], lam).to(grads[i].dtype) for i in idx])
        else:
            upd = gs
        torch._foreach_add_(zg, upd, alpha=-alpha)
    torch._foreach_lerp_(ys, zs, 1 - w)
    torch._foreach_copy_(params, ys)
    torch._foreach_lerp_(params, zs, 1 - w_next)
