"""Clipped Stochastic Similar Triangles Method (Algorithm 3.3; Gorbunov, Danilova, Gasnikov 2020)."""

from __future__ import annotations

import contextlib

import torch

from .clipping import (
    ClippedOptimizer,
    Scratch,
    cache_blocks,
    check_positive,
    clip_one,
    impl_global_norm,
    impl_layer_norm,
    norm_scale,
    resolve_impl,
)

__all__ = ["ClippedSSTM", "sstm_alpha", "RATIO_BOUND_MODES", "INDEXINGS"]

RATIO_BOUND_MODES = ("cap", "reset")
INDEXINGS = ("thesis", "authors")


def sstm_alpha(k: int, a: float, L: float, nu: float, indexing: str = "thesis") -> float:
    """The ``α`` of the k-th step (from 0): ``(k+2)^{2ν/(1+ν)}/(2aL)`` in the thesis'
    Algorithm 3.3, ``(k+1)^{2ν/(1+ν)}/(2aL)`` in the authors' code."""
    return (k + (2 if indexing == "thesis" else 1)) ** (2 * nu / (1 + nu)) / (2 * a * L)


class ClippedSSTM(ClippedOptimizer):
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
        ratio_bound: optional bound ``r`` in (0, 1) on the averaging weight ``A_k/A_{k+1}``
            (the authors' ImageNet runs used 0.99), applied as ``ratio_bound_mode`` says.
        ratio_bound_mode: ``"cap"``: ``w_k = min(A_k/A_{k+1}, r)``, the new point always
            gets weight at least ``1 − r`` (``A_k`` itself keeps accumulating); ``"reset"``
            (the authors' code): when ``A_k > α_{k+1}/(1−r)``, ``A_k`` is reset to
            ``α_{k+1}·r/(1−r)`` (so ``A_{k+1} = α_{k+1}/(1−r)`` and the weight is ``r``), and
            the sequence goes on from there; the weight then alternates between ``r`` and
            about ``1/(2−r)``.
        indexing: ``"thesis"``: Algorithm 3.3 as above; ``"authors"``: the authors' code,
            whose first ``step()`` only initializes (its gradient is unused, the parameters
            stay the starting point) and whose k-th call uses ``α = (k+1)^{2ν/(1+ν)}/(2aL)``
            for the next point, i.e. the update of call ``k >= 1`` uses ``k^{2ν/(1+ν)}/(2aL)``.
        foreach, impl, stats_every, telemetry: as in :class:`ClippedSGD`.

    ``a, L, B, nu, ratio_bound`` may differ per param group (each group runs its own
    sequence ``α, A`` on the shared step count); ``norm`` clipping uses one norm over all
    groups.  State: per parameter ``y`` and ``z`` (nothing else full-size); per group
    ``step`` (int) and ``A`` (python float: exact enough over 10^6 steps) in the param group
    itself, so ``state_dict()`` round-trips through ``torch.load(weights_only=True)``.
    A parameter whose gradient is ``None`` is left alone until it first has one (it still
    holds ``x_0 = y = z``); after that a missing gradient counts as zero.
    AMP/accumulation: ``scaler.unscale_(opt)`` then ``scaler.step(opt)``, as for ClippedSGD.
    """

    _settings = ClippedOptimizer._settings + ("ratio_bound_mode", "indexing")

    def __init__(
        self,
        params,
        a: float,
        L: float,
        B: float = 1.0,
        clipping: str = "norm",
        nu: float = 1.0,
        ratio_bound: float | None = None,
        ratio_bound_mode: str = "cap",
        indexing: str = "thesis",
        *,
        foreach: bool | None = None,
        impl: str | None = None,
        stats_every: int = 20,
        telemetry: bool = True,
    ) -> None:
        self._init_settings(clipping, foreach, impl, stats_every, telemetry)
        if ratio_bound_mode not in RATIO_BOUND_MODES:
            raise ValueError(f"Invalid ratio_bound_mode: {ratio_bound_mode!r} "
                             f"(must be one of {', '.join(RATIO_BOUND_MODES)})")
        if indexing not in INDEXINGS:
            raise ValueError(f"Invalid indexing: {indexing!r} (must be one of {', '.join(INDEXINGS)})")
        self.ratio_bound_mode, self.indexing = ratio_bound_mode, indexing
        defaults = dict(a=a, L=L, B=B, nu=nu, ratio_bound=ratio_bound)
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _check_group({**self.defaults, **param_group})
        param_group.setdefault("step", 0)
        param_group.setdefault("A", 0.0)
        super().add_param_group(param_group)

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
        k0 = self.param_groups[0]["step"]
        if self.indexing == "authors" and k0 == 0:
            # The authors' first call only sets y = z = x_0 (done above); A stays 0.
            for group in self.param_groups:
                group["step"] = 1
            self._record(self.clipping, [])
            return loss

        impl = resolve_impl(self.impl, self.foreach, all_grads)
        if impl == "loop" and not all(g.is_floating_point() for g in all_grads):
            impl = "reference"
        norm = impl_global_norm(all_grads, impl) if self.clipping == "norm" and all_grads else None
        sample = self._samples(k0)
        path = {"reference": _sstm_reference, "loop": _sstm_loop, "foreach": _sstm_foreach}[impl]
        levels, layer_norms, clamped, lams, alphas = [], [], [], [], []
        for group, params, grads, ys, zs in work:
            alpha, lam, w, w_next, A_next = self._coefficients(group)
            if params:
                norms = norm
                if self.clipping == "layer":
                    norms = [None if g is None else impl_layer_norm(g, impl) for g in grads]
                    layer_norms.extend(n for n in norms if n is not None)
                present = [g for g in grads if g is not None]
                levels.extend([lam] * len(present))
                if sample:
                    clamped.extend(present)
                extra = {"scratch": self._scratch} if impl == "loop" else {}
                path(params, grads, ys, zs, alpha=alpha, lam=lam, w=w, w_next=w_next,
                     clipping=self.clipping, norms=norms, **extra)
            group["step"], group["A"] = group["step"] + 1, A_next
            lams.append(lam)
            alphas.append(alpha)

        self._record(self.clipping, levels, norm=norm, layer_norms=layer_norms, clamped=clamped,
                     alpha=alphas[0], **{"lambda": lams[0]})
        return loss

    def _coefficients(self, group: dict) -> tuple[float, float, float, float, float]:
        """This step's ``α``, ``λ``, the weight of ``y`` in ``y``'s update and in the next
        gradient point, and the ``A`` carried to the next step."""
        k, A, rb, mode = group["step"], group["A"], group["ratio_bound"], self.ratio_bound_mode
        j = k if self.indexing == "thesis" else k - 1  # authors: call k updates with the α of call k-1
        alpha = sstm_alpha(j, group["a"], group["L"], group["nu"], self.indexing)
        alpha_next = sstm_alpha(j + 1, group["a"], group["L"], group["nu"], self.indexing)
        w, A_next = _weight(A, alpha, rb, mode)
        w_next, _ = _weight(A_next, alpha_next, rb, mode)
        return alpha, group["B"] / alpha, w, w_next, A_next

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


def _weight(A: float, alpha: float, ratio_bound: float | None, mode: str) -> tuple[float, float]:
    """``(A_k/A_{k+1}, A_{k+1})`` with ``A_{k+1} = A_k + α_{k+1}``, under the ratio bound."""
    A_next = A + alpha
    if ratio_bound is None:
        return A / A_next, A_next
    if mode == "cap":
        return min(A / A_next, ratio_bound), A_next
    if A > alpha / (1 - ratio_bound):  # "reset", as the authors' code does it
        A, A_next = alpha * ratio_bound / (1 - ratio_bound), alpha / (1 - ratio_bound)
    return A / A_next, A_next


def _sstm_reference(params, grads, ys, zs, *, alpha, lam, w, w_next, clipping, norms):
    for i, (p, g, y, z) in enumerate(zip(params, grads, ys, zs)):
        if g is not None:
            z.sub_(alpha * clip_one(g, clipping, lam, norms[i] if clipping == "layer" else norms))
        y.mul_(w).add_(z, alpha=1 - w)
        p.copy_(w_next * y + (1 - w_next) * z)


def _sstm_loop(params, grads, ys, zs, *, alpha, lam, w, w_next, clipping, norms, scratch: Scratch):
    """Three passes (z, y, the next point) per cache block, so y and z are read from cache."""
    group_scale = norm_scale(norms, lam) if clipping == "norm" and norms is not None else None
    if group_scale is not None and group_scale.device.type == "cpu":
        group_scale = group_scale.item()  # read once, a scalar step for every tensor
    # In reverse: the norm was just computed front to back, so the last gradients are still
    # in cache when their update reads them again.
    for i in reversed(range(len(params))):
        p, g, y, z = params[i], grads[i], ys[i], zs[i]
        s = None
        if g is not None and clipping in ("norm", "layer"):
            s = group_scale if clipping == "norm" else norm_scale(norms[i], lam)
            if isinstance(s, torch.Tensor):
                s = s.item() if s.device.type == "cpu" else s.to(g.dtype)
        for pc, gc, yc, zc in cache_blocks(p, g, y, z):
            if gc is not None:
                if clipping == "coordinate":
                    zc.add_(torch.clamp(gc, -lam, lam, out=scratch.like(gc)), alpha=-alpha)
                elif s is None:
                    zc.add_(gc, alpha=-alpha)
                elif not isinstance(s, torch.Tensor):
                    zc.add_(gc, alpha=-alpha * s)  # a scalar step: no tensor broadcast
                else:
                    zc.addcmul_(gc, s, value=-alpha)
            yc.lerp_(zc, 1 - w)
            if pc.is_contiguous():
                torch.lerp(yc, zc, 1 - w_next, out=pc)
            else:
                pc.copy_(torch.lerp(yc, zc, 1 - w_next))


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
