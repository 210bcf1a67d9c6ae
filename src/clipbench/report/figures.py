"""Training curves per task, like the thesis' Figs. 1-3, and the stability measures
(seaborn; mean over seeds with a 95% t band)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from clipbench.files import atomic_path  # noqa: E402
from clipbench.report import stats  # noqa: E402
from clipbench.report.names import METHOD_COLOR, METRIC_LABEL, PER_CLASS_PREFIX, method_label, ordered_methods, task_label  # noqa: E402
from clipbench.runfiles import TELEMETRY_METRICS  # noqa: E402


# Shown as table columns (whole-run means), not as curves: flat lines say little.
TABLE_ONLY = TELEMETRY_METRICS
AT_X = " at x"  # the label suffix of a method evaluated at x (SSTM, split "val_x")


def t_band(values) -> tuple[float, float]:
    """The 95% t interval of the seeds' values at one epoch (no band from one seed)."""
    ci = stats.t_interval(values)
    return (ci["lo"], ci["hi"]) if ci["lo"] is not None else (ci["mean"], ci["mean"])


def _with_x_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Curves at x (split "val_x") drawn in the val panel as their own, dashed, method."""
    at_x = df["split"] == "val_x"
    df = df.assign(Method=df["method"].map(method_label))
    df.loc[at_x, "Method"] = df.loc[at_x, "Method"] + AT_X
    df.loc[at_x, "split"] = "val"
    return df[df["split"].isin(["train", "val"])]


def curve_figures(history: pd.DataFrame, out_dir: str | Path,
                  baselines: dict[str, list[dict]] | None = None) -> dict[str, list[Path]]:
    """One figure per (task, metric), train and val side by side; returns paths per task.

    ``baselines`` (task -> rows as ``tables.baseline_rows`` gives) are drawn as dashed lines
    on the val panel, so a curve below a training-free baseline shows at a glance.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[Path]] = {}
    sns.set_theme(style="whitegrid", context="notebook")
    for (task, metric), df in history.groupby(["task", "metric"], sort=False):
        if metric.startswith(PER_CLASS_PREFIX) or metric in TABLE_ONLY or df["split"].isin(["train_step"]).all():
            continue  # per-class values and clipping telemetry go in tables, not more figures
        methods = ordered_methods(df["method"])
        has_x = set(df.loc[df["split"] == "val_x", "method"])
        df = _with_x_curves(df)
        if df.empty:
            continue
        order = [method_label(m) for m in methods] + [method_label(m) + AT_X for m in methods if m in has_x]
        palette = {method_label(m): METHOD_COLOR.get(m, "gray") for m in methods}
        palette.update({method_label(m) + AT_X: METHOD_COLOR.get(m, "gray") for m in has_x})
        grid = sns.relplot(
            data=df, x="epoch", y="value", hue="Method", col="split", col_order=[s for s in ("train", "val") if s in set(df["split"])],
            # Marker and dash per method too: lines that coincide (e.g. clipping that never
            # triggers) stay visible.
            kind="line", style="Method", markers=True, dashes=True, errorbar=t_band, height=3.4, aspect=1.25,
            hue_order=order, style_order=order, palette=palette, facet_kws={"sharey": True},
        )
        grid.set_axis_labels("epoch", METRIC_LABEL.get(metric, metric))
        for ax in grid.axes.flat:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        grid.set_titles("{col_name}")
        for row in (baselines or {}).get(task, []):
            value = (row["metrics"].get(metric) or {}).get("mean")
            if value is None:
                continue
            for split, ax in grid.axes_dict.items():
                if split == "val":
                    ax.axhline(value, color="gray", linestyle="--", linewidth=1.2)
                    ax.annotate(row["label"], (0.02, value), xycoords=("axes fraction", "data"),
                                textcoords="offset points", xytext=(0, 3), fontsize=8, color="dimgray")
        grid.figure.suptitle(f"{task_label(task)}: {METRIC_LABEL.get(metric, metric)}", y=1.03)
        path = out_dir / f"{task}_{metric}.png"
        with atomic_path(path) as tmp:
            grid.figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(grid.figure)
        made.setdefault(task, []).append(path)
    return made


def stability_figure(per_run: dict[str, pd.DataFrame], out_dir: str | Path) -> Path | None:
    """Each run's stability measures (dots) and each method's mean with its 95% t interval,
    one column per task; ``per_run`` is task -> ``dynamics.per_run``."""
    from clipbench.report.dynamics import MEASURES

    frames = [df.assign(task=task_label(t)) for t, df in per_run.items() if not df.empty]
    if not frames:
        return None
    long = pd.concat(frames).melt(id_vars=["task", "method", "seed"], value_vars=list(MEASURES),
                                  var_name="measure", value_name="value").dropna(subset=["value"])
    if long.empty:
        return None
    long["Method"] = long["method"].map(method_label)
    order = [method_label(m) for m in ordered_methods(long["method"])]
    palette = {method_label(m): METHOD_COLOR.get(m, "gray") for m in ordered_methods(long["method"])}
    sns.set_theme(style="whitegrid", context="notebook")
    grid = sns.catplot(data=long, x="Method", y="value", hue="Method", col="task", row="measure", kind="point",
                       order=order, hue_order=order, palette=palette, errorbar=t_band, sharey=False,
                       height=2.8, aspect=1.3, legend=False)
    grid.map_dataframe(sns.stripplot, x="Method", y="value", hue="Method", order=order, hue_order=order,
                       palette=palette, alpha=0.45, size=4, jitter=0.15)
    grid.set_titles("{col_name}\n{row_name}")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlabel("")
    path = Path(out_dir) / "stability.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # PNG for the PDF, SVG (same name) for the page: points and text stay sharp when zoomed.
    for fmt in ("png", "svg"):
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            grid.figure.savefig(tmp, dpi=100, bbox_inches="tight", format=fmt)
    plt.close(grid.figure)
    return path
