"""The convex check: a least-squares problem where the theory says clipping must win.

Gorbunov, Danilova & Gasnikov (2020) prove high-probability rates for clipped-SGD (the
thesis' Theorem 1) and clipped-SSTM (Theorem 2) whose dependence on the confidence level β
is logarithmic, where unclipped methods only get 1/β. The difference shows in the *upper
quantiles* of f(x_N) − f* over many independent runs, and only when the gradient noise is
heavy-tailed. The theorems assume the noise has bounded variance.

The problem: least squares on scikit-learn's diabetes data (smooth, convex, f* known
exactly). The oracle: a mini-batch of ``batch`` rows, each row's gradient plus its own draw of
added noise, averaged over the batch (so the batch divides a finite noise variance by its
size). Three noises with the same scale parameter: Gaussian; multivariate Student-t with
ν = 3 (heavy-tailed, finite variance: inside the theorems); ν = 1.5 (infinite variance: a
stress test outside them).

Each method runs a sweep of *arms*: the theorems' step times ``step_multipliers`` and, for
the clipped methods, the theorems' clip level times ``clip_multipliers``. Every arm runs
``runs`` tuning runs; the arm with the lowest q99 of the final f − f* is chosen per (noise,
method) (per step multiplier too, for the clip level), and the chosen arms run again on
``runs`` fresh runs (another seed), which give the reported quantiles and the claims: the
selection does not bias them. Every arm also runs once without noise and without sampling
(the full gradient), its ``noise_free`` error, so optimisation error and noise are told apart.

All runs, arms, noises and methods advance together as one array; within one pass every arm
and method sees the same batches and noise draws (common random numbers). NumPy and float64
only: no network, no torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

METHODS = ("sgd", "clipped_sgd", "sstm", "clipped_sstm")
FAMILY = {"sgd": "sgd", "clipped_sgd": "sgd", "sstm": "sstm", "clipped_sstm": "sstm"}
TWIN = {"clipped_sgd": "sgd", "clipped_sstm": "sstm"}
# The thesis' Theorem 2 constant.
SSTM_C = math.sqrt(5.0)

# How the report titles the check and what it states beside it: how its numbers are computed.
LABEL = "Convex check (heavy-tailed noise)"
NOTES = (
    "Least squares on scikit-learn's diabetes data (standardised, with an intercept): f(x) = |Ax - "
    "b|^2 / 2n, f* from a direct solve. The oracle samples a mini-batch of rows; each row's gradient "
    'gets its own draw of added noise and the oracle returns the mean, so the batch divides a finite '
    'noise variance by its size. Three noises with the same scale parameter: Gaussian; multivariate '
    'Student-t with nu = 3 (heavy-tailed, finite variance: inside the theorems); nu = 1.5 (infinite '
    'variance: a stress test outside the theorems, which assume bounded variance). q50, q90 and q99 '
    "are quantiles of f(output) - f* over independent runs (SGD's output is the average iterate, "
    "Algorithm 3.2; SSTM's is y, Algorithm 3.3).",
    "The theorems' parameters are the reference: gamma = 1/(80 L ln(4N/beta)), lambda = L R0 (Theorem"
    ' 1); a = max{1, 16 ln(4N/beta)/C, 36(2 ln(4N/beta) + sqrt(4 ln^2(4N/beta) + 2 ln(4N/beta)))} '
    'with C = sqrt 5, B = R0 / ln(4N/beta) (Theorem 2); where the thesis gives only an order '
    "Theta(.), the constant is 1. The batch is Theorem 1's max{1, N sigma^2 / (R0^2 L^2 ln(4N/beta))}"
    " (sigma^2 one sample's Gaussian noise variance) for every method; Theorem 2 asks for larger "
    "batches, so SSTM does best at steps below its theorem's.",
    "Each method sweeps its step: the theorem's times step_multipliers (0.01 to 1000 by default); the"
    " clipped methods also sweep the clip level, the theorem's times clip_multipliers, in gradient "
    'units (lambda for clipped-SGD; B/alpha_k for clipped-SSTM, B scaled with the step so the level '
    'does not move with it). SGD and SSTM are the same updates without clipping. Per (noise, method) '
    'the arm with the lowest q99 over tuning runs is chosen, then run again on fresh runs (another '
    'seed): the reported quantiles and the claims come from those, free of selection bias. Every arm '
    'also runs once with the full gradient and no noise; its noise-free error tells optimisation '
    'error from noise. A run that leaves a ball of 10^6 R0 counts as diverged (f - f* = inf).',
    'Claims: per noise, best-tuned clipped-SGD vs best-tuned SGD and clipped-SSTM vs SSTM on the '
    'ratio of q99s (unclipped / clipped), with a 95% percentile-bootstrap interval over the fresh '
    'runs (paired: the arms share batches and noise draws). Better (worse) when the ratio passes the '
    'tolerance (default 2x) and the interval excludes 1; practically equivalent when the 90% interval'
    ' lies within the tolerance either way; else undecided.',
)
# A run whose ‖x − x*‖ exceeds this many R0 (or is not finite) has diverged: f − f* = inf.
DIVERGED_R0 = 1e6
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Noise:
    """Per-sample noise ``scale · Z · sqrt(ν/V)``, Z ~ N(0, I_d), V ~ χ²_ν (multivariate Student-t);
    ``nu=None``: ``scale · Z`` (Gaussian). ``scale`` is the same parameter for every kind."""

    name: str
    nu: float | None
    label: str

    @property
    def finite_variance(self) -> bool:
        return self.nu is None or self.nu > 2

    @property
    def variance_factor(self) -> float:
        """Each coordinate's variance in units of scale²."""
        return 1.0 if self.nu is None else self.nu / (self.nu - 2) if self.nu > 2 else math.inf

    def describe(self) -> str:
        if self.nu is None:
            return "Gaussian noise (inside the theorems)"
        if self.finite_variance:
            return f"Student-t noise with nu = {self.nu:g} (heavy-tailed, finite variance: inside the theorems)"
        return (f"Student-t noise with nu = {self.nu:g} (infinite variance: a stress test outside the theorems, "
                f"which assume bounded variance)")


NOISES = {n.name: n for n in (Noise("gaussian", None, "Gaussian"),
                              Noise("student_t3", 3.0, "Student-t, nu = 3"),
                              Noise("student_t1.5", 1.5, "Student-t, nu = 1.5 (infinite variance)"))}


def noise_kind(name: str) -> Noise:
    if name not in NOISES:
        raise ValueError(f"heavytail.noises: unknown noise {name!r} (known: {', '.join(NOISES)})")
    return NOISES[name]


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

    @property
    def H(self) -> np.ndarray:
        return self.A.T @ self.A / len(self.b)

    def f(self, X: np.ndarray) -> np.ndarray:
        """f at each row of X (… × d)."""
        r = X @ self.A.T - self.b
        return 0.5 * np.mean(r * r, axis=-1)

    def gap(self, X: np.ndarray) -> np.ndarray:
        """f − f* at each point of X (… × d), exactly ½ (x − x*)ᵀ H (x − x*); inf where not finite."""
        D = X - self.x_star
        with np.errstate(over="ignore", invalid="ignore"):
            out = 0.5 * np.einsum("...d,...d->...", D @ self.H, D)
        return np.where(np.isfinite(out), np.maximum(out, 0.0), np.inf)

    def batch_grad(self, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Each run's mini-batch gradient (no added noise): ``idx`` holds runs × m row indices."""
        Ab = self.A[idx]  # runs × m × d
        r = np.einsum("rmd,rd->rm", Ab, X) - self.b[idx]
        return np.einsum("rmd,rm->rd", Ab, r) / idx.shape[1]


def load_problem(dataset: str = "diabetes") -> Problem:
    from sklearn import datasets

    # Only datasets that ship inside scikit-learn: the check must run offline.
    loaders = {"diabetes": datasets.load_diabetes}
    if dataset not in loaders:
        raise ValueError(f"heavytail.dataset: {dataset!r} is not available offline "
                         f"(known: {', '.join(loaders)})")
    A, b = loaders[dataset](return_X_y=True)
    A = (A - A.mean(0)) / A.std(0)
    A = np.hstack([A, np.ones((A.shape[0], 1))])  # an intercept, as a regression has
    b = (b - b.mean()) / b.std()
    x_star, *_ = np.linalg.lstsq(A, b, rcond=None)
    r = A @ x_star - b
    L = float(np.linalg.eigvalsh(A.T @ A / A.shape[0]).max())
    return Problem(A=A, b=b, x_star=x_star, f_star=float(0.5 * np.mean(r * r)), L=L, x0=np.zeros(A.shape[1]))


# --- noise ---------------------------------------------------------------------------------


def per_sample_noise(noise: Noise, rng: np.random.Generator, runs: int, m: int, d: int,
                     scale: float) -> np.ndarray:
    """One draw per sample of the batch, runs × m × d (the literal definition)."""
    Z = rng.standard_normal((runs, m, d))
    if noise.nu is None:
        return scale * Z
    V = 2.0 * rng.standard_gamma(noise.nu / 2, size=(runs, m, 1))  # χ²_ν
    return scale * Z * np.sqrt(noise.nu / V)


def batch_mixing(noise: Noise, rng: np.random.Generator, runs: int, m: int) -> np.ndarray:
    """The batch mean of the per-sample noise is exactly ``scale · mix · Z``, Z ~ N(0, I_d).

    Given the χ² draws V_i, Σ_i Z_i·sqrt(ν/V_i) is N(0, Σ_i ν/V_i · I), so the mean over the
    m samples is ``sqrt(Σ_i ν/V_i)/m · Z``; for Gaussian noise ``1/sqrt(m)``. This draws m
    numbers per run instead of m·d, with the same distribution as averaging
    :func:`per_sample_noise` over the batch.
    """
    if noise.nu is None:
        return np.full(runs, 1.0 / math.sqrt(m))
    V = 2.0 * rng.standard_gamma(noise.nu / 2, size=(runs, m))
    return np.sqrt((noise.nu / V).sum(1)) / m


def batch_noise(noise: Noise, rng: np.random.Generator, runs: int, m: int, d: int, scale: float) -> np.ndarray:
    """The oracle's added noise, runs × d: the mean over the batch of per-sample draws."""
    mix = batch_mixing(noise, rng, runs, m)
    return scale * mix[:, None] * rng.standard_normal((runs, d))


class Oracle:
    """Mini-batch gradients plus batch-averaged noise, for all runs and noise kinds at once.

    ``draw()`` returns ``H`` (runs × d × d), ``c`` (runs × d) and ``xi`` (runs × noises × d):
    the gradient at x of run r under noise j is ``H[r] x − c[r] + xi[r, j]``. The batch rows
    and the Gaussian part Z are shared by the noise kinds (common random numbers); each
    Student-t kind draws its own χ² values. ``exact=True``: the full gradient, no noise
    (one run).
    """

    def __init__(self, problem: Problem, batch: int, scale: float, noises: list[Noise],
                 rng: np.random.Generator | None, runs: int, exact: bool = False) -> None:
        self.problem, self.batch, self.scale, self.noises = problem, batch, scale, noises
        self.rng, self.runs, self.exact = rng, runs, exact
        A, b = problem.A, problem.b
        if exact:
            self._H = problem.H[None]
            self._c = (A.T @ b / len(b))[None]
            self._xi = np.zeros((runs, len(noises), A.shape[1]))

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.exact:
            return self._H, self._c, self._xi
        A, b, m, R = self.problem.A, self.problem.b, self.batch, self.runs
        idx = self.rng.integers(0, len(b), size=(R, m))
        Ab = A[idx]
        H = np.matmul(Ab.transpose(0, 2, 1), Ab) / m
        c = np.einsum("rmd,rm->rd", Ab, b[idx]) / m
        Z = self.rng.standard_normal((R, A.shape[1]))
        mix = np.stack([batch_mixing(n, self.rng, R, m) for n in self.noises], axis=1)  # R × noises
        return H, c, self.scale * mix[:, :, None] * Z[:, None, :]


def clip_rows(G: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Norm clipping of each row, min(1, λ/‖g‖)·g, and which rows it changed."""
    norms = np.linalg.norm(G, axis=1)
    scale = np.minimum(1.0, level / np.maximum(norms, np.finfo(float).tiny))
    return G * scale[:, None], norms > level


# --- the theorems' parameters and the arms ------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The theorems' parameters for one problem, budget and confidence level."""

    steps: int
    beta: float
    noise_scale: float  # per coordinate, per sample
    batch: int
    gamma: float  # clipped-SGD's (and SGD's) step, Theorem 1
    lam: float  # clipped-SGD's clip level, Theorem 1
    a: float  # clipped-SSTM's (and SSTM's) step parameter (the step is 1/a), Theorem 2
    B: float  # clipped-SSTM's clip parameter, Theorem 2: λ_k = B/α_k


def theorem_settings(problem: Problem, cfg: dict) -> Settings:
    """Theorems 1 and 2 as the thesis states them (the sweep's multipliers scale these)."""
    steps, beta = int(cfg["steps"]), float(cfg["beta"])
    ln = math.log(4 * steps / beta)
    if ln < 2:
        raise ValueError(f"heavytail: ln(4N/beta) = {ln:.2f} < 2; the theorems need a larger "
                         f"steps or a smaller beta")
    R0, L, d = problem.R0, problem.L, problem.A.shape[1]
    g0 = float(np.linalg.norm(problem.batch_grad(problem.x0[None], np.arange(len(problem.b))[None])))
    # "scale" is relative: one sample's Gaussian noise has expected norm about noise_scale x ‖∇f(x0)‖.
    noise_scale = float(cfg["noise_scale"]) * g0 / math.sqrt(d)
    sigma2 = d * noise_scale ** 2  # one sample's Gaussian noise variance
    batch = cfg["batch"] if cfg["batch"] != "theorem" else max(1, math.ceil(steps * sigma2 / (R0 ** 2 * L ** 2 * ln)))
    a = max(1.0, 16 * ln / SSTM_C, 36 * (2 * ln + math.sqrt(4 * ln * ln + 2 * ln)))
    return Settings(steps=steps, beta=beta, noise_scale=noise_scale, batch=int(batch),
                    gamma=1 / (80 * L * ln), lam=L * R0, a=a, B=R0 / ln)


@dataclass(frozen=True)
class Arm:
    """One setting of one method: the theorem's step × ``multiplier`` and, for clipped methods,
    the theorem's clip level × ``clip_multiplier`` (None: unclipped)."""

    method: str
    multiplier: float
    clip_multiplier: float | None = None

    def params(self, s: Settings) -> tuple[float, float]:
        """(step, clip) as the update uses them: SGD (γ, λ); SSTM (1/a, B). Unclipped: clip = inf.

        For SSTM the step multiplier divides a (α_k ∝ 1/a) and the clip multiplier scales the
        level λ_k = B/α_k in gradient units, so B is scaled by both: the clip level at step k
        does not change with the step multiplier.
        """
        c = math.inf if self.clip_multiplier is None else self.clip_multiplier
        if FAMILY[self.method] == "sgd":
            return s.gamma * self.multiplier, s.lam * c
        return self.multiplier / s.a, s.B * self.multiplier * c


def make_arms(methods, step_multipliers, clip_multipliers) -> list[Arm]:
    arms = []
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"heavytail.methods: unknown method {method!r} (known: {', '.join(METHODS)})")
        for mult in step_multipliers:
            clips = clip_multipliers if method in TWIN else [None]
            arms += [Arm(method, float(mult), None if c is None else float(c)) for c in clips]
    return arms


def log_steps(n: int, points: int) -> np.ndarray:
    """About ``points`` log-spaced steps in 1..n, n included."""
    return np.unique(np.round(np.logspace(0, math.log10(n), points)).astype(int))


# --- the simulation --------------------------------------------------------------------------


def simulate(problem: Problem, s: Settings, arms: list[Arm], oracle: Oracle, record: np.ndarray,
             steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every arm, run and noise kind of ``oracle`` at once.

    Returns f(output) − f* (len(record) × runs × noises × arms; inf once a run diverged) and
    the share of steps whose gradient clipping changed (noises × arms). SGD's output is the
    average iterate x̄ = mean(x^0..x^{k−1}) (Algorithm 3.2); SSTM's is y (Algorithm 3.3, the
    thesis' indexing, ν = 1: α_{k+1} = (k+2)/(2aL), λ_{k+1} = B/α_{k+1}).
    """
    steps = s.steps if steps is None else steps
    R, J = oracle.runs, len(oracle.noises)
    sg = [i for i, a in enumerate(arms) if FAMILY[a.method] == "sgd"]
    st = [i for i, a in enumerate(arms) if FAMILY[a.method] == "sstm"]
    p = np.array([a.params(s) for a in arms]).reshape(len(arms), 2)
    fams = [f for f in (SGDArms(problem, R, J, p[sg]), SSTMArms(problem, R, J, p[st])) if f.K]
    want = {int(k): i for i, k in enumerate(record)}
    out = np.empty((len(record), R, J, len(arms)))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for k in range(steps):
            H, c, xi = oracle.draw()
            shift = xi - c[:, None, :]  # R × J × d: the gradient is H x + shift
            for f in fams:
                f.step(k, H, shift)
            if (k + 1) % 25 == 0 or k + 1 in want:
                for f in fams:
                    f.check()
            if k + 1 in want:
                out[want[k + 1]] = np.concatenate([f.gap(k) for f in fams], axis=2)
    clipped = np.concatenate([f.clipped for f in fams], axis=1) / (steps * R)
    back = np.argsort(np.array(sg + st, dtype=int))  # back to the order of ``arms``
    return out[..., back], clipped[:, back]


class _Arms:
    """The state of one family's arms, runs × noises × arms × d, and what both families share."""

    def __init__(self, problem: Problem, R: int, J: int, params: np.ndarray) -> None:
        self.problem, self.K, d = problem, len(params), problem.A.shape[1]
        self.step_size, self.clip = params[:, 0], params[:, 1]
        self.X = np.broadcast_to(problem.x0, (R, J, self.K, d)).copy()  # where the gradient is taken
        self.G = np.empty_like(self.X)
        self.dead = np.zeros((R, J, self.K), dtype=bool)
        self.clipped = np.zeros((J, self.K))
        self.limit = DIVERGED_R0 * max(problem.R0, 1.0)

    def grad(self, H: np.ndarray, shift: np.ndarray, level: np.ndarray) -> np.ndarray:
        """The stochastic gradient at X, clipped at ``level`` (per arm); returns the per-(run, arm) scale."""
        R, J, K, d = self.X.shape
        np.matmul(self.X.reshape(R, J * K, d), H, out=self.G.reshape(R, J * K, d))
        self.G += shift[:, :, None, :]
        norms = np.sqrt(np.einsum("rjkd,rjkd->rjk", self.G, self.G))
        hit = norms > level
        self.clipped += hit.sum(0)
        return np.where(hit, level / np.where(hit, norms, 1.0), 1.0)

    def _bad(self, *arrays) -> np.ndarray:
        bad = np.zeros(self.dead.shape, dtype=bool)
        for a in arrays:
            dev = np.abs(a - self.problem.x_star).max(-1)
            bad |= ~(dev <= self.limit)  # nan counts as bad
        return bad

    def _finish(self, f: np.ndarray) -> np.ndarray:
        f[self.dead] = np.inf
        return f


class SGDArms(_Arms):
    """``x ← x − γ·clip(g(x), λ)`` for every arm at once (:class:`~clipbench.optim.ClippedSGD` with
    ``clipping="norm"``, momentum 0; λ = inf: SGD). ``params`` rows: (γ, λ)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.S = np.zeros_like(self.X)  # the sum of the iterates, for the average

    def step(self, k: int, H, shift) -> None:
        scale = self.grad(H, shift, self.clip)
        self.S += self.X
        self.G *= (self.step_size * scale)[..., None]
        self.X -= self.G

    def check(self) -> None:
        bad = self._bad(self.X)
        if bad.any():  # park diverged runs at x0 so their numbers stay tame; reported as inf
            self.dead |= bad
            self.X[bad], self.S[bad] = self.problem.x0, 0.0

    def gap(self, k: int) -> np.ndarray:
        return self._finish(self.problem.gap(self.S / (k + 1)))


class SSTMArms(_Arms):
    """Algorithm 3.3 for every arm at once (:class:`~clipbench.optim.ClippedSSTM` with
    ``clipping="norm"``, ν = 1, the thesis' indexing; B = inf: SSTM). ``params`` rows: (1/a, B).
    ``X`` is the next gradient point, ``Y`` the output."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.Y, self.Z = self.X.copy(), self.X.copy()
        self.A = 0.0  # A_k for a = 1 (an arm's is A_k/a; the weights below do not depend on a)

    def step(self, k: int, H, shift) -> None:
        L = self.problem.L
        alpha = (k + 2) / (2 * L) * self.step_size  # α_{k+1} per arm (step_size = 1/a)
        scale = self.grad(H, shift, self.clip / alpha)  # λ_{k+1} = B/α_{k+1}
        self.G *= (alpha * scale)[..., None]
        self.Z -= self.G
        A_next = self.A + (k + 2) / (2 * L)
        w = self.A / A_next
        self.Y -= self.Z  # y = w·y + (1 − w)·z, without temporaries
        self.Y *= w
        self.Y += self.Z
        self.A = A_next
        w_next = A_next / (A_next + (k + 3) / (2 * L))  # the next gradient point
        np.subtract(self.Y, self.Z, out=self.X)
        self.X *= w_next
        self.X += self.Z

    def check(self) -> None:
        bad = self._bad(self.X, self.Y)
        if bad.any():
            self.dead |= bad
            self.X[bad], self.Y[bad], self.Z[bad] = self.problem.x0, self.problem.x0, self.problem.x0

    def gap(self, k: int) -> np.ndarray:
        return self._finish(self.problem.gap(self.Y))


def quantiles(values: np.ndarray, axis: int = 0, q=QUANTILES) -> np.ndarray:
    """Linear-interpolation quantiles that treat inf (diverged) as the largest values:
    a quantile that reaches a diverged run is inf (never nan)."""
    v = np.sort(values, axis=axis)
    n = v.shape[axis]
    out = []
    for qq in q:
        pos = qq * (n - 1)
        lo, t = int(math.floor(pos)), pos - math.floor(pos)
        a = np.take(v, lo, axis=axis)
        if t == 0:
            out.append(a)
            continue
        b = np.take(v, min(lo + 1, n - 1), axis=axis)
        with np.errstate(invalid="ignore"):
            out.append(np.where(np.isfinite(b), a + (b - a) * t, np.inf))
    return np.stack(out)


def bootstrap_ratio(clipped: np.ndarray, twin: np.ndarray, reps: int, seed: int, q: float = 0.99,
                    levels=(0.95, 0.90)) -> dict:
    """q(twin)/q(clipped) over runs, with percentile bootstrap intervals that resample runs
    (paired: the two arms share their batches and noise draws run by run)."""
    n = len(clipped)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n))
    qc = quantiles(clipped[idx], axis=1, q=(q,))[0]
    qt = quantiles(twin[idx], axis=1, q=(q,))[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        est = _ratio(quantiles(twin, q=(q,))[0], quantiles(clipped, q=(q,))[0])
        boots = np.array([_ratio(a, b) for a, b in zip(qt, qc)])
    boots = np.where(np.isnan(boots), np.inf, boots)  # both diverged: no evidence either way
    out = {"estimate": est, "n": n}
    for level in levels:
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
        out[level] = (float(lo), float(hi))
    return out


def _ratio(num: float, den: float) -> float:
    num, den = float(num), float(den)
    if math.isinf(num) and math.isinf(den):
        return math.nan
    if den == 0:
        return math.inf if num > 0 else math.nan
    return num / den


# --- the check ---------------------------------------------------------------------------------


def run(cfg: dict, out: str | Path) -> dict:
    """The whole check: ``quantiles.csv``, ``summary.json`` and ``quantiles.png`` in ``out``."""
    import pandas as pd

    from clipbench import files

    out = Path(out)
    problem = load_problem(cfg["dataset"])
    s = theorem_settings(problem, cfg)
    noises = [noise_kind(n) for n in cfg["noises"]]
    methods = [m for m in METHODS if m in cfg["methods"]]  # a fixed order
    runs, seed = int(cfg["runs"]), int(cfg["seed"])
    record = log_steps(s.steps, int(cfg["points"]))
    arms = make_arms(methods, cfg["step_multipliers"], cfg["clip_multipliers"])

    # 1. Tuning runs: every arm. 2. Noise-free: every arm, the full gradient, once.
    tune, tune_clip = simulate(problem, s, arms, _oracle(problem, s, noises, runs, seed), record[-1:])
    free, _ = simulate(problem, s, arms, _oracle(problem, s, noises, 1, None, exact=True), record)
    tq = quantiles(tune[-1])  # 3 × noises × arms
    # 3. Per (noise, method, step multiplier) the clip level with the lowest tuning q99; per
    # (noise, method) the step multiplier with the lowest tuning q99.
    picks = {}  # (noise j, arm index) of every step multiplier's best clip level
    chosen = {}
    for j, noise in enumerate(noises):
        for method in methods:
            best_per_mult = []
            for mult in dict.fromkeys(a.multiplier for a in arms if a.method == method):
                cand = [i for i, a in enumerate(arms) if a.method == method and a.multiplier == mult]
                best_per_mult.append(min(cand, key=lambda i: _key(tq[:, j, i])))
            picks[(noise.name, method)] = best_per_mult
            chosen[(noise.name, method)] = min(best_per_mult, key=lambda i: _key(tq[:, j, i]))
    # 4. Fresh runs (another seed) of those arms: the reported quantiles and the claims.
    eval_arms = sorted({i for v in picks.values() for i in v})
    fresh, fresh_clip = simulate(problem, s, [arms[i] for i in eval_arms],
                                 _oracle(problem, s, noises, runs, seed + 1), record)
    col = {i: c for c, i in enumerate(eval_arms)}
    fq = quantiles(fresh, axis=1)  # 3 × points × noises × eval arms

    rows, final, arm_rows, runs_final = [], {}, [], {}
    for j, noise in enumerate(noises):
        for method in methods:
            for i in picks[(noise.name, method)]:
                rows += [{"noise": noise.name, "method": method, "multiplier": arms[i].multiplier, "step": int(k),
                          "q50": fq[0, t, j, col[i]], "q90": fq[1, t, j, col[i]], "q99": fq[2, t, j, col[i]]}
                         for t, k in enumerate(record)]
            i = chosen[(noise.name, method)]
            c = col[i]
            final.setdefault(noise.name, {})[method] = {
                "multiplier": arms[i].multiplier,
                **({"clip_multiplier": arms[i].clip_multiplier} if method in TWIN else {}),
                "step": arms[i].params(s)[0], **({"clip": arms[i].params(s)[1]} if method in TWIN else {}),
                "q50": fq[0, -1, j, c], "q90": fq[1, -1, j, c], "q99": fq[2, -1, j, c],
                "noise_free": free[-1, 0, j, i],
                "clip_fraction": float(fresh_clip[j, c]) if method in TWIN else None,
                "diverged": float(np.mean(~np.isfinite(fresh[-1, :, j, c]))),
                "tuning_q99": tq[2, j, i], "runs": runs,
            }
            runs_final.setdefault(noise.name, {})[method] = fresh[-1, :, j, c]
        for i, a in enumerate(arms):
            arm_rows.append({
                "noise": noise.name, "method": a.method, "multiplier": a.multiplier,
                "clip_multiplier": a.clip_multiplier, "q50": tq[0, j, i], "q90": tq[1, j, i], "q99": tq[2, j, i],
                "noise_free": free[-1, 0, j, i], "clip_fraction": float(tune_clip[j, i]) if a.method in TWIN else None,
                "diverged": float(np.mean(~np.isfinite(tune[-1, :, j, i]))),
                "chosen": i == chosen[(noise.name, a.method)],
                "fresh_q99": fq[2, -1, j, col[i]] if i in col else None})

    settings = {**asdict(s), "L": problem.L, "R0": problem.R0, "f_star": problem.f_star, "runs": runs,
                "dataset": cfg["dataset"], "step_multipliers": [float(x) for x in cfg["step_multipliers"]],
                "clip_multipliers": [float(x) for x in cfg["clip_multipliers"]],
                "noises": {n.name: {"nu": n.nu, "finite_variance": n.finite_variance,
                                    "variance_factor": n.variance_factor, "label": n.label} for n in noises},
                "selection": "per (noise, method): the arm (step multiplier, and clip multiplier for clipped "
                             "methods) with the lowest q99 of the final f - f* over the tuning runs (seed); the "
                             "reported quantiles come from fresh runs of the chosen arms (seed + 1)",
                "tolerance": float(cfg["tolerance"]), "bootstrap": int(cfg["bootstrap"]), "seed": seed}
    summary = {"settings": settings, "final": final, "arms": arm_rows, "runs_final": runs_final}
    summary["claims"] = claims(summary)
    summary["verdicts"] = [c["sentence"] for c in summary["claims"]]
    table = pd.DataFrame(rows, columns=["noise", "method", "multiplier", "step", "q50", "q90", "q99"])
    files.write_text(out / "quantiles.csv", table.to_csv(index=False))
    files.write_json(out / "summary.json", _jsonable(summary))
    figure(table, summary, out / "quantiles.png")
    return summary


def _oracle(problem: Problem, s: Settings, noises: list[Noise], runs: int, seed: int | None,
            exact: bool = False) -> Oracle:
    rng = None if exact else np.random.default_rng(seed)
    return Oracle(problem, s.batch, s.noise_scale, noises, rng, runs, exact=exact)


def _key(q: np.ndarray) -> tuple:
    """Selection order: the lowest q99, then q90, then q50 (inf — diverged — last)."""
    return (float(q[2]), float(q[1]), float(q[0]))


def claims(summary: dict) -> list[dict]:
    """One ``convex`` claim per (noise, clipped method with its unclipped twin), both best-tuned.

    The estimate is q99(twin)/q99(clipped) of the final f − f* over the fresh runs (> 1: clipping
    lowered the tail), with a 95% percentile-bootstrap interval resampling runs (paired). With
    the margin m (``tolerance``): ``better`` when the ratio ≥ m and the interval lies above 1,
    ``worse`` when it is ≤ 1/m and the interval lies below 1, ``equivalent`` when the 90%
    interval lies inside [1/m, m], else ``undecided``. The interval needs
    ``summary["runs_final"][noise][method]`` (each fresh run's final f − f*, diverged: None);
    without it the claim has no interval and is ``undecided``.
    """
    from clipbench.report.claims import fmt, make
    from clipbench.report.names import method_label

    st = summary["settings"]
    margin, reps, seed = float(st.get("tolerance", 2.0)), int(st.get("bootstrap", 2000)), int(st.get("seed", 0))
    out = []
    for noise_name, by_method in summary["final"].items():
        noise = NOISES.get(noise_name, Noise(noise_name, None, noise_name))
        for clipped, twin in TWIN.items():
            if clipped not in by_method or twin not in by_method:
                continue
            c, t = by_method[clipped], by_method[twin]
            vals = summary.get("runs_final", {}).get(noise_name, {})
            if vals.get(clipped) is not None and vals.get(twin) is not None:
                b = bootstrap_ratio(_values(vals[clipped]), _values(vals[twin]), reps, seed)
                est, ci, tost, n = b["estimate"], b[0.95], b[0.90], b["n"]
            else:
                est, ci, tost, n = _ratio(t["q99"], c["q99"]), (math.nan, math.nan), (math.nan, math.nan), \
                    int(c.get("runs", 0))
            if est >= margin and ci[0] > 1:
                verdict = "better"
            elif est <= 1 / margin and ci[1] < 1:
                verdict = "worse"
            elif 1 / margin <= tost[0] and tost[1] <= margin:
                verdict = "equivalent"
            else:
                verdict = "undecided"
            out.append(make(
                kind="convex", task="heavytail", subjects=[clipped, twin], metric="q99", estimate=est,
                interval=ci, n=n, margin=margin, verdict=verdict,
                sentence=_sentence(noise, clipped, twin, c, t, est, ci, n, margin, verdict, fmt, method_label),
                noise=noise_name, finite_variance=noise.finite_variance, tost_interval=list(tost),
                clipped_arm={k: c.get(k) for k in ("multiplier", "clip_multiplier", "q50", "q99", "noise_free")},
                twin_arm={k: t.get(k) for k in ("multiplier", "q50", "q99", "noise_free")}))
    return out


def _values(v) -> np.ndarray:
    """Runs' final f − f* as floats, None (diverged, as JSON stores it) as inf."""
    return np.array([np.inf if x is None else float(x) for x in v], dtype=float)


def _sentence(noise: Noise, clipped, twin, c, t, est, ci, n, margin, verdict, fmt, label) -> str:
    desc = noise.describe()
    head = (f"{desc[0].upper()}{desc[1:]}: best-tuned {label(clipped)} (step x{_g(c['multiplier'])}, clip "
            f"x{_g(c.get('clip_multiplier'))}) vs best-tuned {label(twin)} (step x{_g(t['multiplier'])}): q99 of "
            f"f - f* {fmt(c['q99'])} vs {fmt(t['q99'])}, ")
    if not math.isfinite(est) or est <= 0:
        what = "which cannot be compared (a chosen arm diverged)"
    elif est >= 1:
        what = f"clipping lowered it {fmt(est)}-fold"
    else:
        what = f"clipping raised it {fmt(1 / est)}-fold"
    nums = f" (ratio {fmt(est)}, 95% interval [{fmt(ci[0])}, {fmt(ci[1])}], {n} fresh runs): "
    word = {"better": f"better by more than the {_g(margin)}x margin.",
            "worse": f"worse by more than the {_g(margin)}x margin.",
            "equivalent": f"practically equivalent (90% interval within {_g(margin)}x either way).",
            "undecided": f"undecided at the {_g(margin)}x margin."}[verdict]
    dominated = [f"{label(m)}: {fmt(v['noise_free'])} without noise, median {fmt(v['q50'])}"
                 for m, v in ((clipped, c), (twin, t))
                 if v.get("noise_free") is not None and v.get("q50") and v["noise_free"] >= 0.5 * v["q50"]]
    tail = ""
    if dominated:
        tail = (" The noise-free error is comparable to the median (" + "; ".join(dominated)
                + "): there optimisation error, not noise, dominates.")
    return head + what + nums + word + tail


def _g(x) -> str:
    return "–" if x is None else f"{float(x):g}"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def figure(table, summary: dict, path: Path) -> None:
    """Top: the chosen arms' q99 (solid) and q50 (dotted) against the step, per noise.
    Bottom: every step multiplier's final q99 (solid, fresh runs) and noise-free error (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from clipbench import files
    from clipbench.report.names import METHOD_COLOR, method_label

    noises = list(dict.fromkeys(table["noise"]))
    fig, axes = plt.subplots(2, len(noises), figsize=(5.2 * len(noises), 7.6), squeeze=False)
    last = table["step"].max()
    for col, noise in enumerate(noises):
        top, bottom = axes[0][col], axes[1][col]
        t = table[table["noise"] == noise]
        for method, g in t.groupby("method", sort=False):
            color = METHOD_COLOR.get(method)
            mult = summary["final"][noise][method]["multiplier"]
            ch = g[g["multiplier"] == mult]
            top.plot(ch["step"], ch["q99"], color=color, lw=2, label=f"{method_label(method)} q99")
            top.plot(ch["step"], ch["q50"], color=color, ls=":", lw=1, label=f"{method_label(method)} q50")
            fin = g[g["step"] == last].sort_values("multiplier")
            bottom.plot(fin["multiplier"], fin["q99"], color=color, lw=2, marker="o", ms=3,
                        label=f"{method_label(method)} q99")
            free = {(a["method"], a["multiplier"]): a["noise_free"] for a in summary["arms"]
                    if a["noise"] == noise and a["method"] == method and a.get("fresh_q99") is not None}
            xs = sorted(m for (_, m) in free)
            bottom.plot(xs, [free[(method, m)] if free[(method, m)] is not None else np.nan for m in xs],
                        color=color, ls="--", lw=1, label=f"{method_label(method)} noise-free")
        label = NOISES[noise].label if noise in NOISES else noise
        top.set(xscale="log", yscale="log", xlabel="step", title=f"{label}: chosen arms")
        bottom.set(xscale="log", yscale="log", xlabel="step multiplier (x the theorem's)",
                   title=f"{label}: final, per step")
        fin_all = t.loc[t["step"] == last, "q99"]
        finite = fin_all[np.isfinite(fin_all)]
        if len(finite):  # the noise-free errors of large steps may be far below: keep the q99s in view
            bottom.set_ylim(bottom=max(float(finite.min()) / 30, 1e-12))
        for ax in (top, bottom):
            ax.grid(True, which="major", alpha=0.2)
            for axis in (ax.xaxis, ax.yaxis):  # minor ticks over many decades are slow to lay out
                axis.set_major_locator(ticker.LogLocator(numticks=8))
                axis.set_minor_locator(ticker.NullLocator())
    axes[0][0].set_ylabel("f(x) - f*  (quantile over runs)")
    axes[1][0].set_ylabel("f(x_N) - f*")
    for row in range(2):
        handles, labels = axes[row][0].get_legend_handles_labels()
        axes[row][-1].legend(handles, labels, fontsize=6, frameon=False)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
