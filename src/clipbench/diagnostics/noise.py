"""Gradient-noise diagnostics: how heavy are the tails of g_batch − g_full?

At a point of training (initialisation, or a run's final checkpoint) the full gradient is
estimated as the mean of ``batches`` mini-batch gradients; the noise vectors are the
differences. Per point: the norms of the noise vectors beside the norms a Gaussian of the same
per-coordinate variances would give, a QQ plot of a random sample of coordinates, their
excess kurtosis, and a tail index α.

The tail index is the estimator of Mohammadi, Mohammadpour & Ogata (2015), "On estimating
the tail index and the spectral measure of multivariate α-stable distributions" (Metrika
78:549–561), as Şimşekli, Sagun & Gürbüzbalaban (2019), "A tail-index analysis of stochastic
gradient noise in deep neural networks" (ICML), apply it to SGD's noise: for K = K1·K2 i.i.d.
symmetric α-stable samples X_i and the sums Y_j of K2 blocks of K1, 1/α̂ = (mean log|Y_j| −
mean log|X_i|) / log K1, since a sum of K1 such variables is K1^{1/α} times one of them.
α = 2 is Gaussian; the smaller, the heavier.

The same pass records what clip levels are set from (``{quantile: q}`` in config): the
mini-batch gradient's global norm, its per-tensor norms, and its largest |entry|.
"""
from __future__ import annotations

import math

import numpy as np

# Below this the report calls the noise heavy-tailed: α̂ of Gaussian samples is 2 within the
# estimator's error (tests: ±0.05 at 10⁵ samples), so 1.9 leaves a margin.
HEAVY_TAIL_ALPHA = 1.9


def tail_index(x, block: int | None = None) -> float:
    """α̂ of the 1-D samples ``x``, in [0.1, 2] (the α-stable range)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x) & (x != 0)]  # an exact zero is a coordinate without noise, not a sample of it
    k1 = block or max(2, math.isqrt(len(x)))
    k2 = len(x) // k1
    if k2 < 2:
        raise ValueError(f"tail_index needs at least {2 * k1} samples, got {len(x)}")
    x = x[: k1 * k2]
    tiny = np.finfo(np.float64).tiny
    y = x.reshape(k2, k1).sum(axis=1)
    inv = (np.log(np.abs(y) + tiny).mean() - np.log(np.abs(x) + tiny).mean()) / math.log(k1)
    return float(np.clip(1.0 / inv, 0.1, 2.0)) if inv > 0 else 2.0


def tail_index_interval(x, seed: int = 0, n_boot: int = 200, level: float = 0.95) -> tuple[float, float]:
    """A percentile-bootstrap interval for α̂ (the samples resampled with replacement)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    boots = [tail_index(rng.choice(x, size=len(x), replace=True)) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def excess_kurtosis(x) -> float:
    """Fisher's excess kurtosis (0 for a Gaussian)."""
    from scipy.stats import kurtosis

    return float(kurtosis(np.asarray(x, dtype=np.float64).ravel(), fisher=True, bias=False))


def gaussian_norm_reference(sum_var: float, sum_var2: float) -> tuple[float, float]:
    """Mean and sd of ‖ξ‖ for ξ ~ N(0, diag(v)), from Σv and Σv²: ‖ξ‖² has mean Σv and
    variance 2Σv², close to normal over many coordinates, and so (delta method) is ‖ξ‖."""
    mean = math.sqrt(max(sum_var, 0.0))
    return mean, (math.sqrt(2.0 * sum_var2) / (2.0 * mean) if mean > 0 else 0.0)


def summarize(label: str, step: int, m: dict, seed: int = 0) -> dict:
    """One point's statistics from :func:`clipbench.diagnostics.measure.measure`'s arrays."""
    coords = np.asarray(m["coords"], dtype=np.float64)
    norms = np.asarray(m["noise_norms"], dtype=np.float64)
    # Coordinates with no noise at all (no gradient yet, e.g. behind a layer initialised at
    # zero) say nothing about its tails; the others are in units of their tensor's RMS noise.
    live = np.any(coords != 0, axis=0)
    # Samples of one batch's noise vector are correlated: in a random order, the estimator's
    # blocks mix batches, as its i.i.d. premise (and the bootstrap's resampling) assumes.
    pooled = np.random.default_rng(seed).permutation(coords[:, live].ravel())
    g_mean, g_sd = gaussian_norm_reference(m["sum_var"], m["sum_var2"])
    alpha = tail_index(pooled)
    lo, hi = tail_index_interval(pooled, seed=seed)
    return {
        "label": label, "step": int(step), "n_batches": int(norms.size), "n_coords": int(live.sum()),
        "n_coords_without_noise": int((~live).sum()),
        "alpha": alpha, "alpha_ci": [lo, hi], "kurtosis": excess_kurtosis(pooled),
        "norm_mean": float(norms.mean()), "norm_sd": float(norms.std(ddof=1)),
        "gauss_norm_mean": g_mean, "gauss_norm_sd": g_sd,
        "grad_norm_mean": float(np.mean(m["grad_norms"])),
    }


def verdict(task_label: str, point: dict) -> str:
    """One sentence from a point's α̂ and its interval."""
    a, (lo, hi) = point["alpha"], point["alpha_ci"]
    where = f"{task_label}, at {point['label']}: tail index {a:.2f} (95% bootstrap interval {lo:.2f}-{hi:.2f})"
    if hi < HEAVY_TAIL_ALPHA:
        return f"{where}: heavy-tailed noise, where the theory says clipping should matter."
    if lo >= HEAVY_TAIL_ALPHA:
        return f"{where}: close to Gaussian, where the theory expects clipping to change little."
    return f"{where}: the interval straddles {HEAVY_TAIL_ALPHA}, so these batches cannot tell heavy from Gaussian tails."


def level_from_quantile(init: dict, clipping: str, q: float) -> float:
    """The clip level whose ``q``-quantile the measured quantity at initialisation gives.

    norm: the mini-batch gradient's global norm; layer: its per-tensor norms (pooled);
    coordinate: its largest |entry| per mini-batch, the number that decides whether a step
    clips at all, so a level at the q-quantile leaves a share q of the steps unclipped at
    initialisation.
    """
    key = {"norm": "grad_norms", "layer": "tensor_norms", "coordinate": "grad_max_abs"}.get(clipping)
    if key is None:
        raise ValueError(f"a clip level from a quantile needs norm, layer or coordinate clipping, not {clipping!r}")
    return float(np.quantile(np.asarray(init[key], dtype=np.float64).ravel(), q))


def resolve_levels(method: str, cfg: dict, init: dict | None) -> tuple[dict, dict | None]:
    """A method's config with a ``{quantile: q, factor: f}`` clip level replaced by its value.

    clipped-SGD's ``clip_level`` is f times the level :func:`level_from_quantile` gives;
    clipped-SSTM's ``B`` is the one for which its first clip level λ₁ = B/α₁ equals that.
    Returns the config and what was resolved (None when nothing was).
    """
    key = "B" if "B" in cfg and isinstance(cfg["B"], dict) else "clip_level"
    spec = cfg.get(key)
    if not isinstance(spec, dict):
        return cfg, None
    if init is None:
        raise ValueError(f"{method}.{key}: {spec} needs the task's noise measurement at initialisation "
                         "(results/noise/<task>/init.json, made by `clipbench noise`)")
    level = float(spec.get("factor", 1.0)) * level_from_quantile(init, cfg.get("clipping", "norm"), float(spec["quantile"]))
    value = level
    if key == "B":
        from clipbench.optim.clipped_sstm import sstm_alpha

        value = level * sstm_alpha(0, cfg["a"], cfg["L"], cfg.get("nu", 1.0), cfg.get("indexing", "thesis"))
    return {**cfg, key: value}, {"key": key, "value": value, "lambda_1": level, **spec}


def figure(m: dict, point: dict, path) -> None:
    """The noise norms beside the Gaussian reference, and a QQ plot of the sampled coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    from clipbench import files

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    norms = np.asarray(m["noise_norms"], dtype=np.float64)
    ax1.hist(norms, bins=max(5, min(30, norms.size // 2)), density=True, color="#1f77b4", alpha=0.7,
             label="measured")
    mu, sd = point["gauss_norm_mean"], point["gauss_norm_sd"]
    lo, hi = min(norms.min(), mu - 4 * sd), max(norms.max(), mu + 4 * sd)
    xs = np.linspace(lo, hi, 200)
    ax1.plot(xs, stats.norm.pdf(xs, mu, max(sd, 1e-12)), color="k", lw=1.2, label="Gaussian, same variances")
    ax1.set(xlabel="‖g_batch − g_full‖", ylabel="density", title=f"noise norms ({point['label']})")
    ax1.legend(fontsize=7)
    coords = np.asarray(m["coords"], dtype=np.float64)
    pooled = np.sort(coords[:, np.any(coords != 0, axis=0)].ravel())
    theo = stats.norm.ppf((np.arange(1, pooled.size + 1) - 0.5) / pooled.size)
    ax2.plot(theo, pooled, ".", ms=2, color="#d62728")
    ax2.plot(theo, theo * pooled.std(), color="k", lw=1)
    ax2.set(xlabel="normal quantile", ylabel="noise coordinate / tensor RMS",
            title=f"QQ plot: alpha = {point['alpha']:.2f}, kurtosis = {point['kurtosis']:.1f}")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
