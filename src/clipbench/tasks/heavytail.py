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
        "f* from a direct solve. Each run's gradient is a mini-batch gradient plus one draw of added noise; q50, "
        "q90 and q99 are quantiles of f(output) - f* over the independent runs (SGD's output is the average "
        "iterate, Algorithm 3.2; SSTM's is y, Algorithm 3.3).",
        "Parameters follow the thesis' Theorems 1 and 2 (gamma = 1/(80 L ln(4N/beta)), lambda = L R0, "
        "a = max{1, 16 ln(4N/beta)/C, 36(2 ln(4N/beta) + sqrt(4 ln^2(4N/beta) + 2 ln(4N/beta)))} with C = sqrt 5, "
        "B = R0 / ln(4N/beta)); where the thesis gives only an order Theta(.), the constant is 1. SGD and SSTM "
        "use the same step parameters as their clipped twins. The batch size is Theorem 1's "
        "max{1, N sigma^2 / (R0^2 L^2 ln(4N/beta))} with sigma^2 the Gaussian noise's variance, the same for "
        "both noises (the Student-t's variance is infinite).",
    ],
)
