"""Training curves per task, like the thesis' Figs. 1-3 (seaborn; mean and spread over seeds)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from clipbench.io import atomic_path  # noqa: E402
from clipbench.report.names import METHOD_COLOR, METRIC_LABEL, PER_CLASS_PREFIX, method_label, ordered_methods, task_label  # noqa: E402
from clipbench.runfiles import TELEMETRY_METRICS  # noqa: E402


# Shown as table columns (whole-run means), not as curves: flat lines say little.
TABLE_ONLY = TELEMETRY_METRICS


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
        df = df.assign(Method=df["method"].map(method_label))
        grid = sns.relplot(
            data=df, x="epoch", y="value", hue="Method", col="split", col_order=[s for s in ("train", "val") if s in set(df["split"])],
            # Marker and dash per method too: lines that coincide (e.g. clipping that never
            # triggers) stay visible.
            kind="line", style="Method", markers=True, dashes=True, errorbar="sd", height=3.4, aspect=1.25,
            hue_order=[method_label(m) for m in methods], style_order=[method_label(m) for m in methods],
            palette={method_label(m): METHOD_COLOR.get(m, "gray") for m in methods},
            facet_kws={"sharey": True},
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
