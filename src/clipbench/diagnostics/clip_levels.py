"""Clip levels from the gradient noise at initialisation: a ``{quantile: q, factor: f}`` level
in the config becomes a number from ``init.json``'s statistics (:mod:`clipbench.diagnostics.noise`
measures them; :mod:`clipbench.diagnostics.clip_plan` predicts the clipping from them; a run's
spec is resolved with them by :func:`clipbench.spec.with_levels`)."""
from __future__ import annotations

import numpy as np

CLIP_KEYS = ("grad_norms", "tensor_norms", "grad_max_abs")


def statistics_at(init: dict, multiplier: int = 1) -> dict:
    """The clip statistics of ``init.json`` at a method's ``batch_multiplier``: the mini-batch
    gradients' (m = 1, the top-level keys) or those of a mean of m batches (``by_multiplier``,
    see :mod:`clipbench.diagnostics.measure`), with ``measured``, how they were obtained."""
    m = int(multiplier or 1)
    if m == 1:
        return {**{k: init[k] for k in CLIP_KEYS}, "batch_multiplier": 1, "shrink": 1.0,
                "measured": "the mini-batch gradients at initialisation"}
    rec = (init.get("by_multiplier") or {}).get(str(m))
    if rec is None:
        raise ValueError(f"batch_multiplier {m}: init.json has no clip statistics at that multiplier "
                         f"(it has {', '.join(['1'] + sorted(init.get('by_multiplier') or {}))}); rerun "
                         "`clipbench noise` at initialisation with --methods naming this method")
    n, c = len(rec["grad_norms"]), float(rec["shrink"])
    if c > 0:
        how = (f"the mean of {m} mini-batches, as g_full + c (g_batch - g_full) over {n} batches, c = "
               f"sqrt((n - m) / (m (n - 1))) = {c:.4g}: the noise around the full-gradient estimate shrunk "
               f"so that its covariance is that of {m} batches (1/sqrt({m}) = {m ** -0.5:.4g} would "
               "leave the estimate's own error unshrunk)")
    else:
        how = (f"the full-gradient estimate (the mean of {n} batches) for every batch: with no more "
               f"batches than m = {m} no shrinkage gives the spread of {m} batches (raise noise.batches)")
    return {**{k: rec[k] for k in CLIP_KEYS}, "batch_multiplier": m, "shrink": c, "measured": how}


def level_from_quantile(init: dict, clipping: str, q: float, multiplier: int = 1) -> float:
    """The clip level whose ``q``-quantile the measured quantity at initialisation gives, at the
    method's ``batch_multiplier`` (the gradient it steps on is a mean of that many batches).

    norm: the (m-batch) gradient's global norm; layer: its per-tensor norms (pooled);
    coordinate: its largest |entry| per step, the number that decides whether a step
    clips at all, so a level at the q-quantile leaves a share q of the steps unclipped at
    initialisation.
    """
    key = {"norm": "grad_norms", "layer": "tensor_norms", "coordinate": "grad_max_abs"}.get(clipping)
    if key is None:
        raise ValueError(f"a clip level from a quantile needs norm, layer or coordinate clipping, not {clipping!r}")
    return float(np.quantile(np.asarray(statistics_at(init, multiplier)[key], dtype=np.float64).ravel(), q))


def resolve_levels(method: str, cfg: dict, init: dict | None) -> tuple[dict, dict | None]:
    """A method's config with a ``{quantile: q, factor: f}`` clip level replaced by its value.

    clipped-SGD's ``clip_level`` is f times the level :func:`level_from_quantile` gives at the
    method's ``batch_multiplier`` (default 1); clipped-SSTM's ``B`` is the one for which its
    first clip level λ₁ = B/α₁ equals that. Returns the config and what was resolved (None when
    nothing was), which says at which multiplier and how the statistics were measured.
    """
    key = "B" if "B" in cfg and isinstance(cfg["B"], dict) else "clip_level"
    spec = cfg.get(key)
    if not isinstance(spec, dict):
        return cfg, None
    if init is None:
        raise ValueError(f"{method}.{key}: {spec} needs the task's noise measurement at initialisation "
                         "(results/noise/<task>/init.json, made by `clipbench noise`)")
    m = int(cfg.get("batch_multiplier", 1) or 1)
    try:
        stats = statistics_at(init, m)
        level = float(spec.get("factor", 1.0)) * level_from_quantile(init, cfg.get("clipping", "norm"),
                                                                     float(spec["quantile"]), m)
    except ValueError as exc:
        raise ValueError(f"{method}.{key}: {exc}") from None
    value = level
    if key == "B":
        from clipbench.optim.clipped_sstm import sstm_alpha

        value = level * sstm_alpha(0, cfg["a"], cfg["L"], cfg.get("nu", 1.0), cfg.get("indexing", "thesis"))
    return {**cfg, key: value}, {"key": key, "value": value, "lambda_1": level, **spec, "batch_multiplier": m,
                                 "shrink": stats["shrink"], "n_batches": len(stats["grad_norms"]),
                                 "measured": stats["measured"]}
