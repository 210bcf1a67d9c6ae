"""The report's figures: training curves per task, like the thesis' Figs. 1-3, the stability
measures (seaborn; mean over seeds with a 95% t band) and each tuned task's metric against its
step size; and the one way a figure goes into both outputs (``figure``: its path for the .tex,
``embed``: a data URI for the self-contained page)."""
from __future__ import annotations

import base64
import multiprocessing
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from clipbench.files import atomic_path  # noqa: E402
from clipbench.report import stats  # noqa: E402
from clipbench.report.names import (METHOD_COLOR, METRIC_LABEL, PER_CLASS_PREFIX, main_metric,  # noqa: E402
                                    method_label, ordered_methods, task_label)
from clipbench.runfiles import TELEMETRY_METRICS  # noqa: E402
from clipbench.tuning import step_size  # noqa: E402


# Shown as table columns (whole-run means), not as curves: flat lines say little.
TABLE_ONLY = TELEMETRY_METRICS
AT_X = " at x"  # the label suffix of a method evaluated at x (SSTM, split "val_x")

# Where a metric's values can lie: a band is clipped to it (a t interval of accuracies near 1
# from few seeds reaches past 1, and one of a PSNR or a loss near 0 below 0).
SHARES = ("top1", "top5", "miou", "pixel_acc")  # shares of images or pixels, in [0, 1]
NONNEGATIVE = ("psnr", "psnr_y", "loss")  # dB of an MSE below the data range, cross-entropy, MSE
SPLIT_TITLE = {"train": "train (mean over the epoch's batches)", "val": "val (after each epoch)"}
# What each task's training loss is, for the unit of the loss-sd panel.
LOSS_UNIT = {"classification": "cross-entropy, nats", "segmentation": "per-pixel cross-entropy, nats",
             "superres": "MSE of RGB in [0, 1]"}
# The figure formats the page inlines, by suffix.
MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
TEXT = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9.5,
        "ytick.labelsize": 9.5, "legend.fontsize": 9.5, "legend.title_fontsize": 10}


def metric_range(metric: str) -> tuple[float | None, float | None]:
    """The (lower, upper) bounds of a metric's values; None where it has none."""
    if metric in SHARES or metric.startswith(PER_CLASS_PREFIX):
        return 0.0, 1.0
    if metric in NONNEGATIVE:
        return 0.0, None
    return None, None


def clip_band(band: tuple[float, float], lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    """``band`` with both ends moved into [lo, hi] (None: unbounded on that side)."""
    a, b = band
    if lo is not None:
        a, b = max(a, lo), max(b, lo)
    if hi is not None:
        a, b = min(a, hi), min(b, hi)
    return a, b


def t_band(values, lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    """The 95% t interval of the seeds' values at one epoch (no band from one seed), clipped
    to [lo, hi], the values' possible range."""
    ci = stats.t_interval(values)
    band = (ci["lo"], ci["hi"]) if ci["lo"] is not None else (ci["mean"], ci["mean"])
    return clip_band(band, lo, hi)


def band_within(lo: float | None, hi: float | None):
    """``t_band`` clipped to [lo, hi], as seaborn's ``errorbar`` takes it (a function of the values)."""
    def band(values) -> tuple[float, float]:
        return t_band(values, lo, hi)
    return band


def _with_x_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Curves at x (split "val_x") drawn in the val panel as their own, dashed, method."""
    at_x = df["split"] == "val_x"
    df = df.assign(Method=df["method"].map(method_label))
    df.loc[at_x, "Method"] = df.loc[at_x, "Method"] + AT_X
    df.loc[at_x, "split"] = "val"
    return df[df["split"].isin(["train", "val"])]


def curve_grid(task: str, metric: str, df: pd.DataFrame, baselines: list[dict] | None = None):
    """The seaborn FacetGrid of one (task, metric): train and val side by side, each method's
    mean over seeds with its 95% t band clipped to the metric's range; None if nothing to draw."""
    methods = ordered_methods(df["method"])
    has_x = set(df.loc[df["split"] == "val_x", "method"])
    df = _with_x_curves(df)
    if df.empty:
        return None
    order = [method_label(m) for m in methods] + [method_label(m) + AT_X for m in methods if m in has_x]
    palette = {method_label(m): METHOD_COLOR.get(m, "gray") for m in methods}
    palette.update({method_label(m) + AT_X: METHOD_COLOR.get(m, "gray") for m in has_x})
    lo, hi = metric_range(metric)
    label = METRIC_LABEL.get(metric, metric)
    with plt.rc_context(TEXT):
        grid = sns.relplot(
            data=df, x="epoch", y="value", hue="Method", col="split",
            col_order=[s for s in ("train", "val") if s in set(df["split"])],
            # Marker and dash per method too: lines that coincide (e.g. clipping that never
            # triggers) stay visible.
            kind="line", style="Method", markers=True, dashes=True, errorbar=band_within(lo, hi), height=3.4,
            aspect=1.25, hue_order=order, style_order=order, palette=palette, facet_kws={"sharey": True},
        )
        grid.set_axis_labels("epoch", label)
        for split, ax in grid.axes_dict.items():
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(SPLIT_TITLE.get(split, split))
        for row in baselines or []:
            value = (row["metrics"].get(metric) or {}).get("mean")
            if value is None:
                continue
            for split, ax in grid.axes_dict.items():
                if split == "val":
                    ax.axhline(value, color="gray", linestyle="--", linewidth=1.2)
                    ax.annotate(row["label"], (0.02, value), xycoords=("axes fraction", "data"),
                                textcoords="offset points", xytext=(0, 3), fontsize=9, color="dimgray")
        if grid.legend is not None:
            grid.legend.set_title("method")
        grid.figure.suptitle(f"{task_label(task)}: {label}\nmean over seeds; shaded: 95% t band", y=1.08,
                             fontsize=12)
    return grid


def curve_figures(history: pd.DataFrame, out_dir: str | Path,
                  baselines: dict[str, list[dict]] | None = None, workers: int = 1) -> dict[str, list[Path]]:
    """One figure per (task, metric), train and val side by side; returns paths per task.

    ``baselines`` (task -> rows as ``tables.baseline_rows`` gives) are drawn as dashed lines
    on the val panel, so a curve below a training-free baseline shows at a glance. ``workers``
    processes draw them (drawing is most of the report's time; the files are the same).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(task, metric, df, (baselines or {}).get(task), out_dir / f"{task}_{metric}.png")
            for (task, metric), df in history.groupby(["task", "metric"], sort=False)
            # per-class values and clipping telemetry go in tables, not more figures
            if not (metric.startswith(PER_CLASS_PREFIX) or metric in TABLE_ONLY
                    or df["split"].isin(["train_step"]).all())]
    sns.set_theme(style="whitegrid", context="notebook")  # forked workers inherit it
    if workers > 1 and len(jobs) > 1 and "fork" in multiprocessing.get_all_start_methods():
        # Forked: the children have every module and the data already; nothing is pickled back but paths.
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
            drawn = list(pool.map(_curve_file, jobs))
    else:
        drawn = [_curve_file(job) for job in jobs]
    made: dict[str, list[Path]] = {}
    for (task, *_), path in zip(jobs, drawn):
        if path is not None:
            made.setdefault(task, []).append(path)
    return made


def _curve_file(job: tuple) -> Path | None:
    """Draw and write one (task, metric) figure; None if there was nothing to draw."""
    task, metric, df, baselines, path = job
    grid = curve_grid(task, metric, df, baselines)
    if grid is None:
        return None
    with atomic_path(path) as tmp:
        grid.figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(grid.figure)
    return path


def _metric_unit(metric: str | None) -> str:
    if metric in ("psnr", "psnr_y"):
        return "dB"
    if metric in SHARES:
        return "0-1 scale"
    return "metric units"


def _measure_text(key: str, task: str) -> tuple[str, str]:
    """A stability panel's title (which measure, which task) and its y label (with the unit)."""
    from clipbench.report.dynamics import MEASURES

    metric = main_metric(task)
    name = METRIC_LABEL.get(metric, metric or "main metric")
    title = MEASURES[key].format(metric=name)
    if key == "total_variation":
        short = name.split(" (")[0]
        ylabel = f"sum of |change| in {short}\nbetween epochs ({_metric_unit(metric)})"
    elif key == "loss_sd":
        ylabel = f"sd of train loss\n({LOSS_UNIT.get(task, 'loss units')})"
    else:
        ylabel = key
    return f"{task_label(task)}\n{textwrap.fill(title, 40)}", ylabel


def stability_grid(per_run: dict[str, pd.DataFrame]):
    """The stability figure: one panel per (measure, task), each run a dot and each method's
    mean with its 95% t interval (clipped at 0: both measures are >= 0); None if nothing to draw."""
    from clipbench.report.dynamics import MEASURES

    runs = {t: df for t, df in per_run.items() if not df.empty and df[list(MEASURES)].notna().any().any()}
    if not runs:
        return None
    measures = [k for k in MEASURES if any(df[k].notna().any() for df in runs.values())]
    tasks = list(runs)
    sns.set_theme(style="whitegrid", context="notebook")
    # The strip plot's jitter draws from numpy's global generator: seeded, the figure is the
    # same file every time (and the generator is left as it was).
    rng_state = np.random.get_state()
    np.random.seed(0)
    try:
        return _stability_axes(runs, measures, tasks)
    finally:
        np.random.set_state(rng_state)


def _stability_axes(runs: dict[str, pd.DataFrame], measures: list[str], tasks: list[str]):
    with plt.rc_context(TEXT):
        fig, axes = plt.subplots(len(measures), len(tasks), squeeze=False,
                                 figsize=(4.2 * len(tasks), 3.6 * len(measures)), layout="constrained")
        for j, task in enumerate(tasks):
            df = runs[task].assign(Method=runs[task]["method"].map(method_label))
            methods = ordered_methods(df["method"])
            order = [method_label(m) for m in methods]
            palette = {method_label(m): METHOD_COLOR.get(m, "gray") for m in methods}
            for i, key in enumerate(measures):
                ax, d = axes[i, j], df.dropna(subset=[key])
                title, ylabel = _measure_text(key, task)
                if d.empty:
                    ax.set_axis_off()
                    ax.set_title(title)
                    continue
                sns.stripplot(data=d, x="Method", y=key, hue="Method", order=order, hue_order=order,
                              palette=palette, alpha=0.45, size=5, jitter=0.15, legend=False, ax=ax)
                sns.pointplot(data=d, x="Method", y=key, hue="Method", order=order, hue_order=order,
                              palette=palette, errorbar=band_within(0.0, None), capsize=0.15, linestyle="none",
                              markers="D", legend=False, ax=ax)
                ax.set_title(title)
                ax.set_xlabel("method")
                ax.set_ylabel(ylabel)
                ax.set_ylim(bottom=0)
                ax.tick_params(axis="x", labelrotation=30)
                for tick in ax.get_xticklabels():
                    tick.set_horizontalalignment("right")
                    tick.set_rotation_mode("anchor")
        fig.suptitle("Stability per run (dots) and method mean with 95% t interval over seeds", fontsize=12)
    return fig


def stability_figure(per_run: dict[str, pd.DataFrame], out_dir: str | Path) -> Path | None:
    """Each run's stability measures (dots) and each method's mean with its 95% t interval,
    one column per task; ``per_run`` is task -> ``dynamics.per_run``."""
    fig = stability_grid(per_run)
    if fig is None:
        return None
    path = Path(out_dir) / "stability.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # PNG for the PDF, SVG (same name) for the page: points and text stay sharp when zoomed.
    for fmt in ("png", "svg"):
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            # No date in the SVG's metadata, and fixed element ids: the same figure is the same file.
            with plt.rc_context({"svg.hashsalt": "clipbench"}):
                fig.savefig(tmp, dpi=110, bbox_inches="tight", format=fmt,
                            metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return path


def tuning_figure(task: str, by_method: dict[str, dict], out_dir: Path) -> Path:
    """The tuning metric against the step size, one curve per method (``by_method``: method ->
    chosen.json); crosses at the bottom are diverged trials, a star is the chosen one."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    metric = next(iter(by_method.values()))["metric"]
    finite = [r["value"] for c in by_method.values() for r in c["trials"] if r["value"] is not None]
    floor = min(finite) if finite else 0.0
    for method in ordered_methods(by_method):
        chosen = by_method[method]
        pts = sorted((step_size(r["params"])[1], r["value"]) for r in chosen["trials"] if step_size(r["params"]))
        color = METHOD_COLOR.get(method, "gray")
        ok = [(s, v) for s, v in pts if v is not None]
        ax.plot([s for s, _ in ok], [v for _, v in ok], marker="o", color=color, label=method_label(method))
        bad = [s for s, v in pts if v is None]
        ax.plot(bad, [floor] * len(bad), linestyle="none", marker="x", color=color, markersize=9)
        best = step_size(chosen["chosen"]["params"])
        if best:
            ax.plot([best[1]], [chosen["chosen"]["value"]], marker="*", color=color, markersize=15,
                    markeredgecolor="black")
    ax.set_xscale("log")
    ax.set_xlabel("step size (lr; 1/a for clipped-SSTM)")
    ax.set_ylabel(f"held-out {METRIC_LABEL.get(metric, metric)}")
    ax.set_title(f"{task}: tuning (x at the bottom: diverged; star: chosen)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{task}_tuning.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def embed(path: str | Path) -> str:
    """The figure at ``path`` as a data URI, the one way the page inlines a figure: the SVG
    beside it when there is one (points and text stay sharp when zoomed), else the file itself."""
    path = Path(path)
    svg = path.with_suffix(".svg")
    shown = svg if svg.is_file() else path
    return f"data:{MIME[shown.suffix.lower()]};base64,{base64.b64encode(shown.read_bytes()).decode()}"


def figure(path: Path, out: Path, caption: str | None = None, name: str | None = None) -> dict:
    """A figure for both outputs: ``path`` relative to the report folder ``out`` for the .tex
    (as given when outside it), ``uri`` (``embed``) for the HTML; ``name`` (the file's stem
    unless given) is its alt text."""
    path, out = Path(path), Path(out)
    return {"path": path.relative_to(out).as_posix() if path.is_relative_to(out) else path.as_posix(),
            "name": name or path.stem, "caption": caption, "uri": embed(path)}
