"""Whole-list clipping helpers the tests use to check clipping's properties; the
optimizers clip inside their own update paths and do not use them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clipbench.optim.clipping import check_clipping, global_norm, norm_scale, sq_norm


def clipped(tensors: Sequence[Tensor], clipping: str, level: float, *, norm: Tensor | None = None) -> list[Tensor]:
    """Functional clip: new tensors, inputs untouched.

    ``norm`` overrides the norm the ``norm`` mode divides by (an optimizer passes
    the norm of the raw gradient when it clips something else, e.g. a momentum buffer).
    """
    check_clipping(clipping)
    if clipping == "none":
        return [t.clone() for t in tensors]
    if clipping == "coordinate":
        return [t.clamp(-level, level) for t in tensors]
    if clipping == "layer":
        return [t * norm_scale(torch.linalg.vector_norm(t), level).to(t.dtype) for t in tensors]
    total = global_norm(tensors) if norm is None else norm
    scale = norm_scale(total, level)
    return [t * scale.to(t.dtype) for t in tensors]


@torch.no_grad()
def clip_(tensors: Sequence[Tensor], clipping: str, level: float, *, foreach: bool | None = None) -> Tensor:
    """In-place clip (like ``torch.nn.utils.clip_grad_norm_``, for all four modes).

    Returns the global Euclidean norm of the tensors before clipping.
    """
    check_clipping(clipping)
    tensors = [t for t in tensors if t is not None]
    if foreach is None:
        foreach = bool(tensors) and all(t.device.type == "cuda" for t in tensors)
    total = global_norm(tensors, foreach=foreach)
    if not tensors or clipping == "none":
        return total
    if clipping == "coordinate":
        if foreach:
            torch._foreach_clamp_min_(tensors, -level)
            torch._foreach_clamp_max_(tensors, level)
        else:
            for t in tensors:
                t.clamp_(-level, level)
    elif clipping == "layer":
        for t in tensors:
            t.mul_(norm_scale(sq_norm(t).sqrt(), level).to(t.dtype))
    else:
        scale = norm_scale(total, level)
        if foreach:
            torch._foreach_mul_(tensors, scale)
        else:
            for t in tensors:
                t.mul_(scale.to(t.dtype))
    return total
