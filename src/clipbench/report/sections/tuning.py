"""The tuning section: per tuned task, the held-out metric of every trial against its step size
(one curve per method, log x: ``figures.tuning_figure``), the chosen settings, and each method's
sensitivity width, with a claim per clipped method on whether clipping widened the range that works.

Reads ``results/tuning/<task>/<method>/chosen.json`` (``clipbench tune-select`` writes them;
each holds every trial's row); the numbers come from ``clipbench.tuning``.
"""
from __future__ import annotations

import math
from pathlib import Path

from clipbench import files
from clipbench.report import claims, figures
from clipbench.report.names import TWIN, method_label, ordered_methods, shown_tasks
from clipbench.tuning import CHOSEN_JSON, step_size


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
        path = figures.tuning_figure(task, by_method, Path(figures_dir))
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
                    "tolerance": first["sensitivity"]["tolerance"], "figure": figures.figure(path, report_dir)})
    return out
