"""Gradient-noise diagnostics: how heavy are the tails of g_batch − g_full?

At a point of training (initialisation, or a run's final checkpoint) the full gradient is
estimated as the mean of n = ``batches`` mini-batch gradients; the noise vectors ξ_i are the
differences. Per point: a tail index α̂ of a random sample of coordinates, their kurtosis and a
QQ plot, and the norms ‖ξ_i‖ beside those Gaussian noise of the same covariance would give.

The tail index is the estimator of Mohammadi, Mohammadpour & Ogata (2015), "On estimating
the tail index and the spectral measure of multivariate α-stable distributions" (Metrika
78:549–561), as Şimşekli, Sagun & Gürbüzbalaban (2019), "A tail-index analysis of stochastic
gradient noise in deep neural networks" (ICML), apply it to SGD's noise: for K = K1·K2 i.i.d.
symmetric α-stable samples X_i and the sums Y_j of K2 blocks of K1, 1/α̂ = (mean log|Y_j| −
mean log|X_i|) / log K1, since a sum of K1 such variables is K1^{1/α} times one of them.
α = 2 is Gaussian; the smaller, the heavier.

Coordinates differ in scale by orders of magnitude, and pooling them reads the mixture of
scales as tails (Gaussian noise with log-normal scales, σ = 1.3, pools to α̂ ≈ 1.28). Dividing
each by a scale estimated from its own n values tames the real tails too (α = 1.2 reads 1.7–1.8
after the median |x| or a leave-one-out RMS). So the blocks here stay inside a coordinate: the
differences ξ_a − ξ_b = g_a − g_b of disjoint pairs of batches are i.i.d. (the mean cancels),
a block is one coordinate's n/2 of them, and its scale cancels from log|Y| − log|X| exactly.
The estimate is the median over random pairings (a single one moves α̂ by ±0.03); its interval
the wider of a bootstrap over coordinates and a jackknife over batches, widened to contain it.

The same pass records what clip levels are set from (``{quantile: q}`` in config): the
mini-batch gradient's global norm, its per-tensor norms, and its largest |entry|, also at each
clipped method's batch multiplier m (the mean gradient of m batches it steps on; see
:mod:`clipbench.diagnostics.measure`), and :mod:`clipbench.diagnostics.clip_plan` predicts from
them each clipped arm's share of clipped steps before training (``clip_plan.json``).
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np

from clipbench import runfiles
from clipbench.diagnostics.clip_levels import CLIP_KEYS, resolve_levels

MARGIN = 0.1  # practical margin around α = 2 (and around a norm ratio of 1)
# Below this the report calls the noise heavy-tailed (α̂ of Gaussian noise at 8 × 4096 has a
# 95% interval from about 1.94 to 2).
HEAVY_TAIL_ALPHA = 2.0 - MARGIN
MIN_COORDS = 256  # fewer coordinates with noise than this: no verdict on the tails
LEVEL = 0.95


# ---------------------------------------------------------------- the tail index

def _alpha(blocks: np.ndarray) -> float:
    """α̂ from ``blocks``: each column K1 i.i.d. samples of one scale, summed into one Y."""
    k1 = blocks.shape[0]
    tiny = np.finfo(np.float64).tiny
    inv = (np.log(np.abs(blocks.sum(axis=0)) + tiny).mean() - np.log(np.abs(blocks) + tiny).mean()) / math.log(k1)
    return float(np.clip(1.0 / inv, 0.1, 2.0)) if inv > 0 else 2.0


def tail_index(x, block: int | None = None) -> float:
    """α̂ of the 1-D samples ``x`` in their order (one partition into blocks), in [0.1, 2]."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x) & (x != 0)]  # an exact zero is a coordinate without noise, not a sample of it
    k1 = block or max(2, math.isqrt(len(x)))
    k2 = len(x) // k1
    if k2 < 2:
        raise ValueError(f"tail_index needs at least {2 * k1} samples, got {len(x)}")
    return _alpha(x[: k1 * k2].reshape(k2, k1).T)


def _partition(x: np.ndarray, rng) -> float:
    """α̂ of one random partition: of 1-D samples into blocks of ~√K, or of a (batches ×
    coordinates) array into per-coordinate blocks of differences of random pairs of batches."""
    if x.ndim == 1:
        k1 = max(2, math.isqrt(x.size))
        return _alpha(rng.permutation(x)[: k1 * (x.size // k1)].reshape(k1, -1))
    m = x.shape[0] // 2
    p = rng.permuted(x, axis=0)
    return _alpha(p[0: 2 * m: 2] - p[1: 2 * m: 2])


def _jackknife(x: np.ndarray, rng, partitions: int = 20, level: float = LEVEL) -> tuple[float, float] | None:
    """A delete-one-batch jackknife interval for α̂ of a (batches × coordinates) array.

    Batches are the i.i.d. units; the coordinates of one batch are not (they share its data),
    and correlated coordinates leave the estimate fewer effective samples than a bootstrap
    over coordinates assumes. Each partition's pairs serve the full estimate and, less the
    pair holding batch i, its replicate without i (common draws keep the partitions' own
    noise out of the spread). On 1/α, with Student's t of n − 1 d.f.; conservative (by
    Efron–Stein, and dropping a pair drops two batches): about twice the sd on Gaussian noise.
    """
    m = x.shape[0] // 2
    if m < 3:
        return None
    n, c = 2 * m, x.shape[1]
    x, cols, tiny = x[:n], np.arange(c), np.finfo(np.float64).tiny
    full, reps = [], []
    for _ in range(partitions):
        perm = rng.permuted(np.tile(np.arange(n)[:, None], (1, c)), axis=0)
        p = x[perm, cols]
        d = p[0::2] - p[1::2]
        logd = np.log(np.abs(d) + tiny)
        total, logsum = d.sum(axis=0), logd.sum(axis=0)
        full.append((np.log(np.abs(total) + tiny).mean() - logsum.mean() / m) / math.log(m))
        pair = np.empty((n, c), dtype=np.intp)
        pair[perm, cols] = np.arange(n)[:, None] // 2  # the pair each batch is in, per coordinate
        y = total[None] - d[pair, cols]
        logx = (logsum[None] - logd[pair, cols]).mean(axis=1) / (m - 1)
        reps.append((np.log(np.abs(y) + tiny).mean(axis=1) - logx) / math.log(m - 1))
    from scipy.stats import t

    theta, each = float(np.mean(full)), np.mean(reps, axis=0)
    half = t.ppf((1 + level) / 2, n - 1) * math.sqrt((n - 1) / n * ((each - each.mean()) ** 2).sum())
    lo = 1.0 / (theta + half) if theta + half > 0 else 0.1
    hi = 1.0 / (theta - half) if theta - half > 0.5 else 2.0
    return float(np.clip(lo, 0.1, 2.0)), float(np.clip(hi, 0.1, 2.0))


def tail_index_estimate(x, seed: int = 0, partitions: int = 51, n_boot: int = 200, boot_partitions: int = 5,
                        level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """α̂ and its ``level`` interval for 1-D samples or a (batches × coordinates) array.

    α̂ is the median over ``partitions`` random partitions. The interval is the percentiles
    of ``n_boot`` bootstrap replicates (samples, or whole coordinates, resampled), each the
    median over ``boot_partitions``; for an array, the wider of that and :func:`_jackknife`'s
    over batches. It is widened to contain α̂, which it otherwise may miss by a little.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] < 4:
        raise ValueError(f"the tail index needs at least 4 batches (2 pairs), got {x.shape[0]}")
    rng = np.random.default_rng(seed)
    alpha = float(np.median([_partition(x, rng) for _ in range(partitions)]))
    k = x.shape[-1]
    boots = [np.median([_partition(xb, rng) for _ in range(boot_partitions)])
             for xb in (x[..., rng.integers(0, k, k)] for _ in range(n_boot))]
    lo, hi = (float(q) for q in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
    jack = _jackknife(x, rng, level=level) if x.ndim == 2 else None
    if jack:
        lo, hi = min(lo, jack[0]), max(hi, jack[1])
    return alpha, (min(lo, alpha), max(hi, alpha))


def live_coordinates(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the coordinates whose n values are all distinct (usable) and all equal (no noise).

    The rest tie in some batches (an atom, e.g. exact zeros behind an inactive unit): a
    difference of 0 has no logarithm, and an atom is no stable law, so they are left out too.
    """
    s = np.sort(coords, axis=0)
    gaps = np.diff(s, axis=0) != 0
    return gaps.all(axis=0), ~gaps.any(axis=0)


def excess_kurtosis(coords: np.ndarray) -> float:
    """Mean over coordinates of the sample kurtosis of their n values, less its expectation for
    Gaussian samples, 3(n−1)/(n+1): 0 for Gaussian noise whatever the coordinates' scales."""
    n = coords.shape[0]
    c = coords - coords.mean(axis=0)
    b2 = n * (c ** 4).sum(axis=0) / (c ** 2).sum(axis=0) ** 2
    return float(b2.mean() - 3.0 * (n - 1) / (n + 1))


# ---------------------------------------------------------------- the Gaussian reference

def _chi_mean_ratio(k: float) -> float:
    """E χ_k / √k."""
    from scipy.special import gammaln

    if k > 1e4:  # the gammaln difference loses digits; the series does not
        return 1.0 - 1.0 / (4 * k) + 1.0 / (32 * k * k)
    return math.exp(gammaln((k + 1) / 2) - gammaln(k / 2)) * math.sqrt(2.0 / k)


def gaussian_norm_reference(n: int, sum_var: float, gram=None) -> tuple[float, float | None, float | None]:
    """Mean and sd of ‖ξ_i‖ = ‖g_i − ḡ‖ when the n batch gradients g_i are i.i.d. N(μ, Σ), and
    the degrees of freedom k of the χ² that ‖ξ_i‖² is taken as.

    Then ξ_i ~ N(0, (n−1)/n·Σ): ‖ξ_i‖² has mean (n−1)/n·tr Σ and variance 2((n−1)/n)²·tr Σ²,
    whatever the correlations. ``sum_var`` is the unbiased estimate of tr Σ; tr Σ² comes from
    the n × n Gram matrix of the ξ_i by Srivastava's (2005, J. Japan Statist. Soc. 35:251)
    unbiased estimator, ν²/((ν−1)(ν+2))·(tr S² − (tr S)²/ν) with S = Gram/ν, ν = n − 1. ‖ξ‖² is
    taken as a scaled χ²_k of that mean and variance (Satterthwaite 1946, Biometrics Bull.
    2:110; k = (tr Σ)²/tr Σ², the noise's effective number of directions), exact for noise
    isotropic in a subspace. Without a Gram matrix: the mean without its (small, Jensen)
    correction, and no sd.
    """
    c = (n - 1) / n
    m2 = c * max(float(sum_var), 0.0)
    if m2 <= 0:
        return 0.0, 0.0, None
    if gram is None or n < 4:
        return math.sqrt(m2), None, None
    g = np.asarray(gram, dtype=np.float64)
    nu = n - 1
    tr_s, tr_s2 = np.trace(g) / nu, float((g * g).sum()) / nu ** 2
    t2 = nu * nu / ((nu - 1) * (nu + 2)) * (tr_s2 - tr_s * tr_s / nu)
    k = min(m2 * m2 / (c * c * t2), 1e12) if t2 > 0 else 1e12  # t2 ≤ 0: noise about a tiny tr Σ²
    r = _chi_mean_ratio(k)
    return math.sqrt(m2) * r, math.sqrt(m2 * max(-math.expm1(2 * math.log(r)), 0.0)), k


def norm_ratio(norms, ref_mean: float, n_boot: int = 2000, seed: int = 0,
               level: float = LEVEL) -> tuple[float, tuple[float, float] | None]:
    """Measured mean noise norm / the Gaussian reference's, with a bootstrap interval over batches.

    The reference is made from the same batches (it scales with √mean ‖ξ‖²), so a replicate
    rescales it with its own mean square: what varies is how unequal the norms are.
    """
    r = np.asarray(norms, dtype=np.float64)
    if ref_mean <= 0:
        return float("nan"), None
    ratio = float(r.mean() / ref_mean)
    if r.size < 3:
        return ratio, None
    b = np.random.default_rng(seed).choice(r, size=(n_boot, r.size), replace=True)
    reps = b.mean(axis=1) / (ref_mean * np.sqrt((b ** 2).mean(axis=1) / (r ** 2).mean()))
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return ratio, (min(float(lo), ratio), max(float(hi), ratio))


# ---------------------------------------------------------------- one point

def summarize(label: str, step: int, m: dict, seed: int = 0, subjects=None, min_coords: int = MIN_COORDS) -> dict:
    """One point's statistics from :func:`clipbench.diagnostics.measure.measure`'s arrays."""
    coords = np.asarray(m["coords"], dtype=np.float64)
    norms = np.asarray(m["noise_norms"], dtype=np.float64)
    n = int(norms.size)
    live, dead = live_coordinates(coords)
    x = coords[:, live]
    alpha, ci = (tail_index_estimate(x, seed=seed) if live.any() else (None, None))
    g_mean, g_sd, g_dof = gaussian_norm_reference(n, m["sum_var"], m.get("gram"))
    ratio, ratio_ci = norm_ratio(norms, g_mean, seed=seed)
    return {
        "label": label, "subjects": list(subjects or [label]), "step": int(step), "n_batches": n,
        "n_coords": int(live.sum()), "n_samples": int(live.sum()) * n, "min_coords": int(min_coords),
        "n_coords_without_noise": int(dead.sum()), "n_coords_tied": int((~live & ~dead).sum()),
        "alpha": alpha, "alpha_ci": list(ci) if ci else None,
        "kurtosis": excess_kurtosis(x) if live.any() else None,
        "norm_mean": float(norms.mean()), "norm_sd": float(norms.std(ddof=1)),
        "gauss_norm_mean": g_mean, "gauss_norm_sd": g_sd, "gauss_dof": None if g_dof is None else float(g_dof),
        "norm_ratio": ratio, "norm_ratio_ci": list(ratio_ci) if ratio_ci else None,
        "trace_cov": float(m["sum_var"]), "grad_norm_mean": float(np.mean(m["grad_norms"])),
    }


# ---------------------------------------------------------------- claims

def _tail_claim(task: str, label: str, p: dict) -> dict:
    from clipbench.report.claims import fmt, make

    a, ci = p.get("alpha"), p.get("alpha_ci")
    counts = f"{p['n_coords']} coordinates × {p['n_batches']} batches"
    where = f"{label}, at {p['label']}"
    if a is not None:
        where += f": tail index {fmt(a, 2)} (95% interval [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}], {counts})"
    if p["n_coords"] < p.get("min_coords", MIN_COORDS) or a is None:
        verdict = "too_few"
        sentence = (f"{where}: only {p['n_coords']} coordinates with noise ({p['n_samples']} samples), fewer than "
                    f"the {p.get('min_coords', MIN_COORDS)} a verdict needs, so no verdict on the tails.")
    elif ci[1] < HEAVY_TAIL_ALPHA:
        verdict = "heavy_tailed"
        sentence = (f"{where}: heavier tails than Gaussian (α̂ < 2: as α-stable noise this would have infinite "
                    "variance, outside the bounded-variance assumption of the clipping theorems).")
    elif ci[0] >= HEAVY_TAIL_ALPHA:
        verdict = "not_heavy_tailed"
        sentence = f"{where}: consistent with Gaussian tails (the interval lies within {MARGIN:g} of 2)."
    else:
        verdict = "undecided"
        sentence = (f"{where}: the interval straddles {HEAVY_TAIL_ALPHA:g}, so these batches cannot tell "
                    "heavy from Gaussian tails.")
    return make("tail_index", task, p.get("subjects") or [p["label"]], "alpha", a, ci, p["n_samples"], MARGIN,
                verdict, sentence, n_coords=p["n_coords"], n_batches=p["n_batches"],
                min_coords=p.get("min_coords", MIN_COORDS), level=LEVEL)


def _reference_claim(task: str, label: str, p: dict) -> dict:
    from clipbench.report.claims import fmt, make

    r, ci, sd = p.get("norm_ratio"), p.get("norm_ratio_ci"), p.get("gauss_norm_sd")
    ref = f"{fmt(p['gauss_norm_mean'])}" + (f" ± {fmt(sd)}" if sd is not None else " (no spread)")
    where = (f"{label}, at {p['label']}: the mean noise norm over {p['n_batches']} batches, {fmt(p['norm_mean'])}, "
             f"is {fmt(r, 2)} times that of Gaussian noise of the same covariance ({ref}")
    if ci is None or r is None or not math.isfinite(r):
        verdict, tail = "too_few", "), with too few batches for an interval, so no verdict."
    else:
        where += f"; 95% bootstrap interval of the ratio [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}])"
        if 1 - MARGIN < ci[0] and ci[1] < 1 + MARGIN:
            verdict, tail = "consistent", f": consistent with Gaussian noise (within 1 ± {MARGIN:g})."
        elif (ci[1] < 1 or ci[0] > 1) and abs(r - 1) >= MARGIN:
            verdict = "inconsistent"
            tail = (f": the norms are more unequal than Gaussian noise gives (a ratio below 1 − {MARGIN:g})."
                    if r < 1 else f": the norms are more equal than Gaussian noise gives (above 1 + {MARGIN:g}).")
        else:
            verdict, tail = "undecided", ": these batches cannot tell."
    return make("noise_reference", task, p.get("subjects") or [p["label"]], "norm_ratio", r, ci, p["n_batches"],
                MARGIN, verdict, where + tail, norm_mean=p["norm_mean"], gauss_norm_mean=p["gauss_norm_mean"],
                gauss_norm_sd=sd, level=LEVEL)


def claims(noise: dict, task: str) -> list[dict]:
    """The claim records of a ``noise.json`` (or of an ``init.json``'s ``{"points": [point]}``):
    per point, its tail index and its norms against the Gaussian reference."""
    label = noise.get("task_label") or task
    return [c for p in noise.get("points") or [] for c in (_tail_claim(task, label, p), _reference_claim(task, label, p))]


# ---------------------------------------------------------------- the figure

def figure(m: dict, point: dict, path, seed: int = 0) -> None:
    """The noise norms against the Gaussian reference's distribution, and a QQ plot of the
    sampled coordinates, each in units of its own scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    from clipbench import files
    from clipbench.report.claims import fmt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    # Eight norms make no histogram: their empirical CDF against the reference's, a scaled χ_k.
    norms = np.sort(np.asarray(m["noise_norms"], dtype=np.float64))
    ax1.step(norms, np.arange(1, norms.size + 1) / norms.size, where="post", color="#1f77b4",
             label=f"measured ({norms.size} batches)")
    ax1.plot(norms, np.zeros_like(norms), "|", ms=12, color="#1f77b4")
    mu, sd, k = point["gauss_norm_mean"], point["gauss_norm_sd"], point.get("gauss_dof")
    if sd and k:
        scale = math.sqrt((mu * mu + sd * sd) / k)  # ‖ξ‖ = scale · χ_k
        xs = np.linspace(max(0.0, min(norms.min(), mu - 4 * sd)), max(norms.max(), mu + 4 * sd), 300)
        cdf = stats.chi.cdf(xs / scale, k) if k < 1e4 else stats.norm.cdf(xs, mu, sd)
        ax1.plot(xs, cdf, color="k", lw=1.2, label="Gaussian, same covariance")
    else:
        ax1.axvline(mu, color="k", lw=1.2, label="Gaussian mean (no spread)")
    ax1.set(xlabel="‖g_batch − g_full‖", ylabel="share of batches", ylim=(-0.05, 1.05),
            title=f"noise norms: mean / Gaussian = {fmt(point['norm_ratio'], 2)}")
    ax1.legend(fontsize=7, loc="lower right")
    coords = np.asarray(m["coords"], dtype=np.float64)
    live, _ = live_coordinates(coords)
    if live.any() and coords.shape[0] >= 4:
        # A pair difference over the RMS of the coordinate's other pair differences is Student's
        # t with (pairs − 1) degrees of freedom for Gaussian noise, whatever its scale.
        x = np.random.default_rng(seed).permuted(coords[:, live], axis=0)
        h = x.shape[0] // 2
        d = x[0: 2 * h: 2] - x[1: 2 * h: 2]
        other = np.sqrt(((d ** 2).sum(axis=0) - d ** 2) / (h - 1))
        z = np.sort((d / other).ravel())
        theo = stats.t.ppf((np.arange(1, z.size + 1) - 0.5) / z.size, h - 1)
        ax2.plot(theo, z, ".", ms=2, color="#d62728")
        ax2.plot(theo, theo, color="k", lw=1)
        ax2.set_xscale("symlog")
        ax2.set_yscale("symlog")
    ci = point["alpha_ci"] or [None, None]
    ax2.set(xlabel=f"Student t ({coords.shape[0] // 2 - 1} d.f.) quantile", ylabel="pair difference / own scale",
            title=f"α̂ = {fmt(point['alpha'], 2)} [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]; "
                  f"{point['n_coords']} coords × {point['n_batches']} batches")
    ax2.title.set_fontsize(9)
    fig.suptitle(point["label"], fontsize=9)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- the command

def pick_reference(runs) -> tuple[object, dict | None, list[dict]]:
    """The first of ``runs`` (run folders, in order of preference) that finished with a
    checkpoint to measure at: (its folder, its metrics.json, the runs passed over and why);
    (None, None, those) when none did."""
    from pathlib import Path

    from clipbench import files

    skipped = []
    for run in map(Path, runs):
        path = run / runfiles.METRICS_JSON
        m = files.read_json(path) if path.is_file() else {}
        if m.get("status") != "ok":
            why = {"diverged": f"diverged at step {m.get('diverged_at_step')}",
                   "failed": f"failed: {(m.get('failure') or {}).get('error', '')}"}.get(m.get("status"), "did not finish")
            skipped.append({"run": str(run), "why": why})
        elif not (run / runfiles.CHECKPOINT).is_file():
            skipped.append({"run": str(run), "why": "its checkpoint.pt is gone"})
        else:
            return run, m, skipped
    return None, None, skipped


def run(spec: dict, manifest: dict | None, out, checkpoint=None, init=None, methods: dict | None = None,
        skipped: list[dict] | None = None) -> str:
    """``clipbench noise``: measure one point and write ``init.json`` (no checkpoint) or
    ``noise.json`` (the final checkpoint, beside the point of ``init``); returns its sentences.
    ``skipped``: the preferred runs passed over for the checkpoint (see :func:`pick_reference`);
    with ``init`` but no ``checkpoint``, no run could be measured and noise.json says why."""
    from pathlib import Path

    from clipbench import files
    from clipbench.diagnostics.measure import measure
    from clipbench.tasks import registry

    cfg = spec.get("noise", {})
    out, seed = Path(out), int(spec["seed"])
    task, task_label = spec["task"], registry.get(spec["task"]).label
    if checkpoint is None and init is not None:
        return _without_final(task, task_label, out, init, methods, skipped or [])
    if checkpoint is None:
        label, subjects, name = "initialisation", ["initialisation"], "init"
    else:
        label = f"end of training ({spec['method']}, seed {seed})"
        subjects, name = ["end of training", spec["method"], f"seed {seed}"], "final"
    from clipbench.diagnostics import clip_plan

    mults = clip_plan.multipliers(methods) if checkpoint is None else [1]
    m = measure(spec, manifest, int(cfg.get("batches", 16)), int(cfg.get("coords", 4096)), checkpoint,
                multipliers=mults)
    point = summarize(label, m["step"], m, seed=seed, subjects=subjects, min_coords=int(cfg.get("min_coords", MIN_COORDS)))
    figure(m, point, out / f"noise_{name}.png", seed=seed)
    if checkpoint is None:
        init_data = {**{k: m[k] for k in CLIP_KEYS}, "by_multiplier": m["by_multiplier"],
                     "n_batches": len(m["grad_norms"]), "n_train": m["n_train"],
                     "batch_size": int(spec["task_config"]["batch_size"]), "point": point, "figure": "noise_init.png"}
        files.write_json(out / "init.json", init_data)
        tc = spec["task_config"]
        shares, detail = clip_plan.plan(task, methods or {}, init_data, m["n_train"], int(tc["batch_size"]),
                                        int(tc["epochs"]))
        files.write_json(out / "clip_plan_detail.json", detail)
        files.write_json(out / "clip_plan.json", shares)
        for line in detail["warnings"]:
            print(line, file=sys.stderr)
        return " ".join([c["sentence"] for c in claims({"task_label": task_label, "points": [point]}, task)]
                        + [f"Predicted share of clipped steps: {json.dumps(shares)}."])
    init_data = files.read_json(init)
    noise = assemble(task, task_label, [init_data["point"], point], _levels(methods, init_data))
    noise.update(seed=spec["seed"], batch_size=spec["task_config"]["batch_size"],
                 reference={"run": runfiles.run_name(task, spec["method"], seed), "skipped": skipped or []})
    _with_plan(noise, init)
    files.write_json(out / "noise.json", noise)
    return noise["verdict"]


def _levels(methods: dict | None, init_data: dict) -> dict:
    levels = {}
    for method, mcfg in (methods or {}).items():
        _, resolved = resolve_levels(method, mcfg, init_data)
        if resolved:
            levels[method] = resolved
    return levels


def _with_plan(noise: dict, init) -> None:
    """The prediction made before training, for the report to show beside the measured."""
    from pathlib import Path

    from clipbench import files

    plan_path = Path(init).parent / "clip_plan.json"
    if plan_path.exists():
        noise["clip_plan"] = files.read_json(plan_path)
        detail = plan_path.with_name("clip_plan_detail.json")
        noise["clip_plan_detail"] = files.read_json(detail) if detail.exists() else None


def _without_final(task: str, task_label: str, out, init, methods: dict | None, skipped: list[dict]) -> str:
    """``noise.json`` when no run finished with a checkpoint: the point at initialisation, and why
    the end of training is absent (each run passed over, with its reason)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clipbench import files

    init_data = files.read_json(init)
    noise = assemble(task, task_label, [init_data["point"]], _levels(methods, init_data))
    why = "; ".join(f"{s['run']} {s['why']}" for s in skipped) or "no run of the task was given"
    noise.update(figures=["noise_init.png"], reference={"run": None, "skipped": skipped},
                 final_absent=f"no run finished with a checkpoint to measure the noise at ({why})")
    _with_plan(noise, init)
    # The rule's declared figure, saying what the report says.
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{task_label}: no end-of-training noise\n(no run finished with a checkpoint)",
            ha="center", va="center", fontsize=10)
    with files.atomic_path(out / "noise_final.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    files.write_json(out / "noise.json", noise)
    print(noise["final_absent"], file=sys.stderr)
    return noise["verdict"]


def assemble(task: str, task_label: str, points: list[dict], levels: dict) -> dict:
    """``noise.json``: the points, their claims, and the first point's tail index on top (the
    contract the report and older readers rely on)."""
    first = points[0]
    out = {"task": task, "task_label": task_label, "alpha": first["alpha"], "alpha_ci": first["alpha_ci"],
           "kurtosis": first["kurtosis"], "margin": MARGIN, "points": points, "clip_levels": levels,
           "figures": ["noise_init.png", "noise_final.png"]}
    out["claims"] = claims(out, task)
    out["heavy_tailed"] = out["claims"][0]["verdict"] == "heavy_tailed"
    out["verdict"] = " ".join(c["sentence"] for c in out["claims"] if c["kind"] == "tail_index")
    return out
