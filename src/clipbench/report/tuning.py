"""The report's tuning section: per tuned task, the held-out metric of every trial against its
step size (one curve per method, log x), the chosen settings, and each method's sensitivity
width, with a claim per clipped method on whether clipping widened the range that works.

Reads ``results/tuning/<task>/<method>/chosen.json`` (``clipbench tune-select`` writes them;
each holds every trial's row); the numbers come from ``clipbench.tuning``.
"""
from __future__ import annotations

import base64
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clipbench import files  # noqa: E402
from clipbench.report import claims  # noqa: E402
from clipbench.files import atomic_path  # noqa: E402
from clipbench.report.names import METHOD_COLOR, METRIC_LABEL, TWIN, method_label, ordered_methods, shown_tasks  # noqa: E402
from clipbench.tuning import CHOSEN_JSON, step_size  # noqa: E402



def load(tuning_dir: str | Path) -> dict[str, dict[str, dict]]:
    """task -> method -> chosen.json, for every (task, method) tuned under ``tuning_dir``."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(tuning_dir).glob(f"*/*/{CHOSEN_JSON}")):
        chosen = files.read_json(path)
        out.setdefault(chosen["task"], {})[chosen["method"]] = chosen
    return out


def _params(params: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(params.items()))


def _resolution(chosen: dict) -> float:
    """The median gap, in decades, between a method's neighbouring trial step sizes: widths
    closer than this are within what the budget can tell apart."""
    steps = sorted({step_size(r["params"])[1] for r in chosen["trials"] if step_size(r["params"])})
    gaps = sorted(math.log10(b / a) for a, b in zip(steps, steps[1:]))
    return gaps[len(gaps) // 2] if gaps else math.inf


def figure(task: str, by_method: dict[str, dict], out_dir: Path) -> Path:
    """The tuning metric against the step size, one curve per method; crosses at the bottom
    are diverged trials, a star is the chosen one."""
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


def claims_of(task: str, by_method: dict[str, dict]) -> list[dict]:
    """Whether clipping widened the range of step sizes within tolerance of the best: a
    ``tuning`` claim per clipped method whose unclipped twin was tuned too, its margin the
    trials' spacing (a difference below it is within what the grid can tell apart)."""
    out = []
    for clipped, plain in TWIN.items():
        if clipped not in by_method or plain not in by_method:
            continue
        c, p = by_method[clipped]["sensitivity"], by_method[plain]["sensitivity"]
        if c["width_decades"] is None or p["width_decades"] is None:
            continue
        tol = f"{100 * c['tolerance']:.0f}%"
        diff = c["width_decades"] - p["width_decades"]
        spacing = max(_resolution(by_method[clipped]), _resolution(by_method[plain]))
        if abs(diff) < spacing:
            verdict = "undecided"
            reading = (f"the difference ({diff:+.2f}) is below the trials' spacing ({spacing:.2f} decades): "
                       f"no evidence here that clipping widened the range")
        else:
            verdict = "wider" if diff > 0 else "narrower"
            reading = f"clipping {'widened' if diff > 0 else 'narrowed'} the range by {abs(diff):.2f} decades"
        sentence = (f"Within {tol} of the best: {method_label(clipped)} over {_decades(c['width_decades'])}, "
                    f"{method_label(plain)} over {_decades(p['width_decades'])}; {reading}.")
        out.append(claims.make("tuning", task, [clipped, plain], "width_decades", diff, None,
                               len(by_method[clipped]["trials"]), spacing, verdict, sentence,
                               tolerance=c["tolerance"]))
    return out


def _decades(width) -> str:
    return "–" if width is None else f"{width:.2f} decades"


def section(tuning_dir: str | Path, figures_dir: str | Path, report_dir: str | Path) -> list[dict]:
    """What the templates' tuning block shows, one entry per tuned task."""
    report_dir = Path(report_dir)
    tuned = load(tuning_dir)
    out = []
    for task in shown_tasks(tuned):
        by_method = tuned[task]
        path = figure(task, by_method, Path(figures_dir))
        rows = []
        for method in ordered_methods(by_method):
            c = by_method[method]
            s = c["sensitivity"]
            rows.append({"method": method, "label": method_label(method), "trials": len(c["trials"]),
                         "diverged": sum(r["status"] == "diverged" for r in c["trials"]),
                         "chosen": _params(c["chosen"]["params"]), "value": c["chosen"]["value"],
                         "trial": c["chosen"]["trial"], "width": s["width_decades"],
                         "range": "–" if not s.get("range") else f"{s['range'][0]:.3g} – {s['range'][1]:.3g}"})
        first = next(iter(by_method.values()))
        out.append({"name": task, "metric": first["metric"], "rows": rows, "claims": claims_of(task, by_method),
                    "tolerance": first["sensitivity"]["tolerance"],
                    "figure": {"path": path.relative_to(report_dir).as_posix() if path.is_relative_to(report_dir)
                               else path.as_posix(), "name": path.stem,
                               "data": base64.b64encode(path.read_bytes()).decode()}})
    return out
