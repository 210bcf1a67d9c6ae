"""The convex check's entry in the task registry: its label and main metric for the report.

It trains no network; the check itself is :mod:`clipbench.diagnostics.heavytail`.
"""
from clipbench.tasks.registry import TaskInfo

INFO = TaskInfo(
    name="heavytail",
    label="Convex check (heavy-tailed noise)",
    main_metric="q99",
    higher_is_better=False,
    trains=False,
    notes=[
        "Least squares on scikit-learn's diabetes data (standardised, with an intercept): f(x) = |Ax - b|^2 / 2n, "
        "f* from a direct solve. The oracle samples a mini-batch of rows; each row's gradient gets its own draw of "
        "added noise and the oracle returns the mean, so the batch divides a finite noise variance by its size. "
        "Three noises with the same scale parameter: Gaussian; multivariate Student-t with nu = 3 (heavy-tailed, "
        "finite variance: inside the theorems); nu = 1.5 (infinite variance: a stress test outside the theorems, "
        "which assume bounded variance). q50, q90 and q99 are quantiles of f(output) - f* over independent runs "
        "(SGD's output is the average iterate, Algorithm 3.2; SSTM's is y, Algorithm 3.3).",
        "The theorems' parameters are the reference: gamma = 1/(80 L ln(4N/beta)), lambda = L R0 (Theorem 1); "
        "a = max{1, 16 ln(4N/beta)/C, 36(2 ln(4N/beta) + sqrt(4 ln^2(4N/beta) + 2 ln(4N/beta)))} with C = sqrt 5, "
        "B = R0 / ln(4N/beta) (Theorem 2); where the thesis gives only an order Theta(.), the constant is 1. The "
        "batch is Theorem 1's max{1, N sigma^2 / (R0^2 L^2 ln(4N/beta))} (sigma^2 one sample's Gaussian noise "
        "variance) for every method; Theorem 2 asks for larger batches, so SSTM does best at steps below its "
        "theorem's.",
        "Each method sweeps its step: the theorem's times step_multipliers (0.01 to 1000 by default); the clipped "
        "methods also sweep the clip level, the theorem's times clip_multipliers, in gradient units (lambda for "
        "clipped-SGD; B/alpha_k for clipped-SSTM, B scaled with the step so the level does not move with it). SGD "
        "and SSTM are the same updates without clipping. Per (noise, method) the arm with the lowest q99 over "
        "tuning runs is chosen, then run again on fresh runs (another seed): the reported quantiles and the claims "
        "come from those, free of selection bias. Every arm also runs once with the full gradient and no noise; "
        "its noise-free error tells optimisation error from noise. A run that leaves a ball of 10^6 R0 counts as "
        "diverged (f - f* = inf).",
        "Claims: per noise, best-tuned clipped-SGD vs best-tuned SGD and clipped-SSTM vs SSTM on the ratio of "
        "q99s (unclipped / clipped), with a 95% percentile-bootstrap interval over the fresh runs (paired: the "
        "arms share batches and noise draws). Better (worse) when the ratio passes the tolerance (default 2x) and "
        "the interval excludes 1; practically equivalent when the 90% interval lies within the tolerance either "
        "way; else undecided.",
    ],
)
