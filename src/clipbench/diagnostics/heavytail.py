"""The convex check: a least-squares problem where the theory says clipping must win.

Gorbunov, Danilova & Gasnikov (2020) prove high-probability rates for clipped-SGD (the
thesis' Theorem 1) and clipped-SSTM (Theorem 2) whose dependence on the confidence level β
is logarithmic, where unclipped methods only get 1/β. The difference shows in the *upper
quantiles* of f(x_N) − f* over many independent runs, and only when the gradient noise is
heavy-tailed. So: least squares on scikit-learn's diabetes data (smooth, convex, f* known
exactly), mini-batch gradients plus added noise of two kinds at the same scale (Gaussian;
symmetric Student-t with ν ≤ 2, of infinite variance), the four methods with the theorems'
parameters, and all runs of one (noise, method) advanced together as one array.

NumPy and float64 only: no network, no torch, well under a minute on two cores. It trains no
network, so it has no run matrix of its own: `clipbench heavytail` runs it whole.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

METHODS = ("sgd", "clipped_sgd", "sstm", "clipped_sstm")
NOISES = ("gaussian", "student_t")
NOISE_LABEL = {"gaussian": "Gaussian", "student_t": "Student-t"}
# The thesis' Theorem 2 constant.
SSTM_C = math.sqrt(5.0)


@dataclass(frozen=True)
class Problem:
    """f(x) = ‖Ax − b‖² / (2n): smooth (L = λ_max(AᵀA)/n), convex, minimiser by least squares."""

    A: np.ndarray
    b: np.ndarray
    x_star: np.ndarray
    f_star: float
    L: float
    x0: np.ndarray

    @property
    def R0(self) -> float:
        return float(np.linalg.norm(self.x0 - self.x_star))

    def f(self, X: np.ndarray) -> np.ndarray:
        """f at each row of X (runs × d)."""
        r = X @ self.A.T - self.b
        return 0.5 * np.mean(r * r, axis=1)

    def batch_grad(self, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Each run's mini-batch gradient: ``idx`` holds runs × m row indices."""
        Ab = self.A[idx]  # runs × m × d
        r = np.einsum("rmd,rd->rm", Ab, X) - self.b[idx]
        return np.einsum("rmd,rm->rd", Ab, r) / idx.shape[1]


def load_problem(dataset: str = "diabetes") -> Problem:
    from sklearn import datasets

    # Only datasets that ship inside scikit-learn: the check must run offline.
    loaders = {"diabetes": datasets.load_diabetes}
    if dataset not in loaders:
        raise ValueError(f"tasks.heavytail.dataset: {dataset!r} is not available offline "
                         f"(known: {', '.join(loaders)})")
    A, b = loaders[dataset](return_X_y=True)
    A = (A - A.mean(0)) / A.std(0)
    A = np.hstack([A, np.ones((A.shape[0], 1))])  # an intercept, as a regression has
    b = (b - b.mean()) / b.std()
    x_star, *_ = np.linalg.lstsq(A, b, rcond=None)
    r = A @ x_star - b
    L = float(np.linalg.eigvalsh(A.T @ A / A.shape[0]).max())
    return Problem(A=A, b=b, x_star=x_star, f_star=float(0.5 * np.mean(r * r)), L=L, x0=np.zeros(A.shape[1]))


def sample_noise(kind: str, rng: np.random.Generator, shape: tuple, scale: float, nu: float) -> np.ndarray:
    """Symmetric noise with scale parameter ``scale``: N(0, scale²), or scale · t_ν."""
    if kind == "gaussian":
        return scale * rng.standard_normal(shape)
    if kind == "student_t":
        return scale * rng.standard_t(nu, size=shape)
    raise ValueError(f"tasks.heavytail.noises: unknown noise {kind!r} (known: {', '.join(NOISES)})")


def clip_rows(G: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Norm clipping of each row, min(1, λ/‖g‖)·g, and which rows it changed."""
    norms = np.linalg.norm(G, axis=1)
    scale = np.minimum(1.0, level / np.maximum(norms, np.finfo(float).tiny))
    return G * scale[:, None], norms > level


@dataclass(frozen=True)
class Settings:
    """The theorems' parameters for one problem, budget and confidence level."""

    steps: int
    beta: float
    noise_scale: float  # per coordinate
    nu: float
    batch: int
    gamma: float  # clipped-SGD's (and SGD's) step, Theorem 1
    lam: float  # clipped-SGD's clip level, Theorem 1
    a: float  # clipped-SSTM's (and SSTM's) step parameter, Theorem 2
    B: float  # clipped-SSTM's clip parameter, Theorem 2


def theorem_settings(problem: Problem, cfg: dict) -> Settings:
    """Theorems 1 and 2 as the thesis states them, scaled by ``cfg['multipliers']``.

    The theorems' constants are worst-case; the multipliers let a user see how far they can
    be pushed (all 1 by default).
    """
    steps, beta, mult = int(cfg["steps"]), float(cfg["beta"]), cfg["multipliers"]
    ln = math.log(4 * steps / beta)
    if ln < 2:
        raise ValueError(f"tasks.heavytail: ln(4N/beta) = {ln:.2f} < 2; the theorems need a larger "
                         f"steps or a smaller beta")
    R0, L, d = problem.R0, problem.L, problem.A.shape[1]
    g0 = float(np.linalg.norm(problem.batch_grad(problem.x0[None], np.arange(len(problem.b))[None])))
    # "scale" is relative: the noise's expected norm (Gaussian) is noise_scale x ‖∇f(x0)‖.
    noise_scale = float(cfg["noise_scale"]) * g0 / math.sqrt(d)
    sigma2 = d * noise_scale ** 2
    batch = cfg["batch"] if cfg["batch"] != "theorem" else max(1, math.ceil(steps * sigma2 / (R0 ** 2 * L ** 2 * ln)))
    a = max(1.0, 16 * ln / SSTM_C, 36 * (2 * ln + math.sqrt(4 * ln * ln + 2 * ln)))
    return Settings(
        steps=steps, beta=beta, noise_scale=noise_scale, nu=float(cfg["nu"]), batch=int(batch),
        gamma=mult["gamma"] / (80 * L * ln), lam=mult["lam"] * L * R0,
        a=mult["a"] * a, B=mult["B"] * R0 / ln,
    )


def log_steps(n: int, points: int) -> np.ndarray:
    """About ``points`` log-spaced steps in 1..n, n included."""
    return np.unique(np.round(np.logspace(0, math.log10(n), points)).astype(int))


def run_method(problem: Problem, method: str, s: Settings, noise: str, runs: int, seed: int,
               record: np.ndarray) -> tuple[np.ndarray, float]:
    """All ``runs`` runs of one (noise, method) at once.

    Returns f(output) − f* at the steps in ``record`` (len(record) × runs) and the share of
    (step, run) pairs where clipping changed the gradient.
    """
    if method not in METHODS:
        raise ValueError(f"tasks.heavytail.methods: unknown method {method!r} (known: {', '.join(METHODS)})")
    rng = np.random.default_rng(seed)
    x = np.tile(problem.x0, (runs, 1))
    out = np.empty((len(record), runs))
    want = {int(k): i for i, k in enumerate(record)}
    oracle = _Oracle(problem, rng, s, noise)
    clipped = 0
    if method in ("sgd", "clipped_sgd"):
        avg = np.zeros_like(x)
        for k in range(s.steps):
            avg += (x - avg) / (k + 1)  # Algorithm 3.2's output: the mean of x^0..x^k
            g = oracle(x)
            if method == "clipped_sgd":
                g, hit = clip_rows(g, s.lam)
                clipped += int(hit.sum())
            x = x - s.gamma * g
            if k + 1 in want:
                out[want[k + 1]] = problem.f(avg) - problem.f_star
    else:
        y, z, A_k = x.copy(), x.copy(), 0.0
        for k in range(s.steps):
            alpha = (k + 2) / (2 * s.a * problem.L)
            A_next = A_k + alpha
            g = oracle((A_k * y + alpha * z) / A_next)
            if method == "clipped_sstm":
                g, hit = clip_rows(g, s.B / alpha)
                clipped += int(hit.sum())
            z = z - alpha * g
            y = (A_k * y + alpha * z) / A_next
            A_k = A_next
            if k + 1 in want:
                out[want[k + 1]] = problem.f(y) - problem.f_star
    return out, clipped / (s.steps * runs)


class _Oracle:
    """Mini-batch gradient plus one noise draw per step (the noise stands for the oracle's at that batch)."""

    def __init__(self, problem: Problem, rng: np.random.Generator, s: Settings, noise: str) -> None:
        self.problem, self.rng, self.s, self.noise = problem, rng, s, noise

    def __call__(self, X: np.ndarray) -> np.ndarray:
        idx = self.rng.integers(0, len(self.problem.b), size=(X.shape[0], self.s.batch))
        xi = sample_noise(self.noise, self.rng, X.shape, self.s.noise_scale, self.s.nu)
        return self.problem.batch_grad(X, idx) + xi


def rates(problem: Problem, s: Settings, steps: np.ndarray) -> dict[str, np.ndarray]:
    """The theorems' rate shapes with their O(·) constants set to 1 (slopes to compare, not bounds)."""
    ln = math.log(4 * s.steps / s.beta)
    k = steps.astype(float)
    return {"clipped_sgd": problem.L * problem.R0 ** 2 * ln / k,
            "clipped_sstm": s.a * problem.L * problem.R0 ** 2 / k ** 2}


def run(cfg: dict, out: str | Path) -> dict:
    """The whole check: ``quantiles.csv``, ``summary.json`` and ``quantiles.png`` in ``out``."""
    import pandas as pd
    from tqdm import tqdm

    from clipbench import files

    out = Path(out)
    problem = load_problem(cfg["dataset"])
    s = theorem_settings(problem, cfg)
    record = log_steps(s.steps, int(cfg["points"]))
    rows, final = [], {}
    pairs = [(n, m) for n in cfg["noises"] for m in cfg["methods"]]
    for i, (noise, method) in enumerate(tqdm(pairs, desc="heavytail", unit="run-set")):
        # The same seed for every method of one noise: common random numbers.
        vals, clip = run_method(problem, method, s, noise, int(cfg["runs"]), int(cfg["seed"]) + NOISES.index(noise),
                                record)
        q = np.quantile(vals, [0.5, 0.9, 0.99], axis=1)
        rows += [{"noise": noise, "method": method, "step": int(k), "q50": q[0, j], "q90": q[1, j], "q99": q[2, j]}
                 for j, k in enumerate(record)]
        final.setdefault(noise, {})[method] = {"q50": float(q[0, -1]), "q90": float(q[1, -1]),
                                               "q99": float(q[2, -1]), "clip_fraction": clip}
    table = pd.DataFrame(rows, columns=["noise", "method", "step", "q50", "q90", "q99"])
    files.write_text(out / "quantiles.csv", table.to_csv(index=False))
    summary = {"settings": {**asdict(s), "L": problem.L, "R0": problem.R0, "f_star": problem.f_star,
                            "runs": int(cfg["runs"]), "dataset": cfg["dataset"], "multipliers": cfg["multipliers"]},
               "final": final, "verdicts": verdicts(final, float(cfg["tolerance"]))}
    files.write_json(out / "summary.json", summary)
    figure(table, problem, s, out / "quantiles.png")
    return summary


def verdicts(final: dict, tolerance: float) -> list[str]:
    """One sentence per (noise, pair), from the final q99s: a ratio beyond ``tolerance`` counts."""
    out = []
    for noise, by_method in final.items():
        for clipped, plain in (("clipped_sgd", "sgd"), ("clipped_sstm", "sstm")):
            if clipped not in by_method or plain not in by_method:
                continue
            qc, qp = by_method[clipped]["q99"], by_method[plain]["q99"]
            ratio = qp / qc if qc > 0 else math.inf
            if ratio > tolerance:
                word = f"clipping lowered the q99 of f - f* {ratio:.3g}-fold"
            elif ratio < 1 / tolerance:
                word = f"clipping raised the q99 of f - f* {1 / ratio:.3g}-fold"
            else:
                word = f"the q99s differ by less than {tolerance:g}x (ratio {ratio:.3g})"
            out.append(f"{NOISE_LABEL.get(noise, noise)} noise, {clipped} vs {plain}: {word} "
                       f"({qc:.3g} vs {qp:.3g} after the last step).")
    return out


def figure(table, problem: Problem, s: Settings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clipbench import files
    from clipbench.report.names import METHOD_COLOR, method_label

    noises = list(dict.fromkeys(table["noise"]))
    fig, axes = plt.subplots(1, len(noises), figsize=(5.5 * len(noises), 4.2), sharey=True, squeeze=False)
    steps = np.asarray(sorted(set(table["step"])))
    for ax, noise in zip(axes[0], noises):
        t = table[table["noise"] == noise]
        for method, g in t.groupby("method", sort=False):
            ax.plot(g["step"], g["q99"], color=METHOD_COLOR.get(method), lw=2, label=f"{method_label(method)} q99")
            ax.plot(g["step"], g["q50"], color=METHOD_COLOR.get(method), ls=":", lw=1,
                    label=f"{method_label(method)} q50")
        for name, r in rates(problem, s, steps).items():
            ax.plot(steps, r, color=METHOD_COLOR[name], ls="--", lw=0.8, alpha=0.7,
                    label=f"{method_label(name)} theorem rate (O-constant 1)")
        ax.set(xscale="log", yscale="log", xlabel="step", title=f"{NOISE_LABEL.get(noise, noise)} noise")
        ax.grid(True, which="both", alpha=0.2)
    axes[0][0].set_ylabel("f(x) - f*  (quantile over runs)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
