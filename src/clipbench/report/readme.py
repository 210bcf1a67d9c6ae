"""The README's demo tables, written from a run's outputs, never typed.

``clipbench readme`` replaces each block ``<!-- clipbench:NAME -->`` … ``<!-- /clipbench:NAME -->``
of the README with the Markdown :data:`BLOCKS` makes from ``results/`` and ``report/claims.json``:
the final metrics beside the baselines, the verdicts on clipping, the tail indices and the
convex check, each number as the run recorded it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from clipbench import files
from clipbench.report import tables
from clipbench.report.claims import fmt
from clipbench.report.compare import higher_is_better
from clipbench.report.names import METRIC_LABEL, main_metric, method_label, ordered_methods, shown_tasks, task_label
from clipbench.report.render import VERDICT_WORD, _sci


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def results_block(results: Path, claims: list[dict]) -> str:
    """Final val main metric per task and method (mean over seeds), the best in bold, the
    trivial baseline, and the share of steps each clipped method clipped."""
    from clipbench.report.audit import audit

    # Means over the seeds with finite values, as the report's (its banner lists the others).
    summary, _, _ = audit(pd.read_csv(results / "summary.csv"), pd.DataFrame())
    methods = ordered_methods(summary["method"])
    rows = []
    for task in shown_tasks(summary["task"]):
        metric = main_metric(task)
        d = summary[(summary["task"] == task) & (summary["split"] == "val") & (summary["metric"] == metric)]
        means = d.groupby("method")["value"].mean()
        seeds = d.dropna(subset=["value"]).groupby("method")["seed"].nunique()
        best = (means.idxmax() if higher_is_better(task) else means.idxmin()) if not means.empty else None
        base = tables.baseline_rows(results / "baselines", task)
        base_txt = "; ".join(f"{b['phrase']} {fmt((b['metrics'].get(metric) or {}).get('mean'))}" for b in base
                             if (b["metrics"].get(metric) or {}).get("mean") is not None) or "–"
        cells = []
        for m in methods:
            v = means.get(m)
            txt = "–" if v is None or pd.isna(v) else f"{v:.3f}"
            cells.append(f"**{txt}**" if m == best else txt)
        rows.append([f"{task_label(task)} (val {METRIC_LABEL.get(metric, metric)}, {int(seeds.max()) if len(seeds) else 0} seeds)",
                     *cells, base_txt])
        clip = summary[(summary["task"] == task) & (summary["split"] == "run") & (summary["metric"] == "clip_fraction")]
        shares = clip.groupby("method")["value"].mean()
        if not shares.empty:
            rows.append([f"steps clipped: {task_label(task)}",
                         *[f"{100 * shares[m]:.1f}%" if m in shares else "" for m in methods], ""])
    return _table(["task (metric)", *[method_label(m) for m in methods], "baseline"], rows)


def verdicts_block(claims: list[dict]) -> str:
    """Each clipped method against its unclipped twin: the paired claims' verdicts."""
    rows = []
    for c in claims:
        if c["kind"] == "paired" and (c.get("detail") or {}).get("relation") == "twin":
            lo, hi = c["interval"] or (None, None)
            rows.append([task_label(c["task"]), f"{method_label(c['subjects'][0])} − {method_label(c['subjects'][1])}",
                         fmt(c["estimate"]), f"[{fmt(lo)}, {fmt(hi)}]", f"±{fmt(c['margin'])}",
                         str(c["n"]), VERDICT_WORD.get(c["verdict"], c["verdict"])])
    if not rows:
        return "No clipped method ran beside its unclipped twin."
    return _table(["task", "difference (val main metric)", "mean", "95% interval", "margin", "seeds", "verdict"],
                  rows, right_from=2)


def noise_block(claims: list[dict]) -> str:
    """The tail index of each task's gradient noise, per point, with its verdict."""
    rows = []
    for c in claims:
        if c["kind"] == "tail_index":
            lo, hi = c["interval"] or (None, None)
            detail = c.get("detail") or {}
            rows.append([task_label(c["task"]), ", ".join(str(s) for s in c["subjects"]), _sci(c["estimate"], 3),
                         f"[{_sci(lo, 3)}, {_sci(hi, 3)}]", str(detail.get("n_coords", "–")), str(c["n"]),
                         VERDICT_WORD.get(c["verdict"], c["verdict"])])
    if not rows:
        return "No gradient-noise measurement in these results."
    return _table(["task", "point", "alpha", "interval", "live coordinates", "samples", "verdict"], rows, right_from=2)


def convex_block(results: Path, claims: list[dict]) -> str:
    """The convex check's best-tuned arms and its verdicts."""
    path = results / "heavytail" / "summary.json"
    if not path.is_file():
        return "No convex check in these results."
    final = files.read_json(path)["final"]
    rows = [[noise, method_label(m), _sci(v.get("multiplier")), _sci(v.get("clip_multiplier")), fmt(v.get("q50")),
             fmt(v.get("q90")), fmt(v.get("q99")), fmt(v.get("noise_free")),
             "–" if v.get("clip_fraction") is None else f"{100 * v['clip_fraction']:.1f}%"]
            for noise, by_method in final.items() for m, v in by_method.items()]
    table = _table(["noise", "method", "step ×", "clip level ×", "q50", "q90", "q99", "noise-free", "steps clipped"],
                   rows, right_from=2)
    lines = [f"- **{VERDICT_WORD.get(c['verdict'], c['verdict'])}**: {c['sentence']}" for c in claims if c["kind"] == "convex"]
    return table + ("\n\n" + "\n".join(lines) if lines else "")


def _final(results: Path) -> pd.DataFrame:
    """Each run's final val main metric: task, method, seed, value."""
    summary = pd.read_csv(results / "summary.csv")
    rows = [g[(g["split"] == "val") & (g["metric"] == main_metric(task))] for task, g in summary.groupby("task")]
    return pd.concat(rows)[["task", "method", "seed", "value"]] if rows else pd.DataFrame()


def variation_block(results: Path, claims: list[dict], other: Path | None, other_note: str = "") -> str:
    """How far a second run of the same config (another machine, CPU kernels or thread count)
    lands from this one: per task the largest difference of a run's and of a method's final value,
    and which clipping verdicts both runs state."""
    if other is None:
        return "Not measured for these results: `clipbench readme --other RUN` compares them with a second run."
    mine, theirs = _final(results), _final(other / "results")
    both = mine.merge(theirs, on=["task", "method", "seed"], suffixes=("", "_other"))
    rows = []
    for task, g in both.groupby("task"):
        means = g.groupby("method")[["value", "value_other"]].mean()
        rows.append([task_label(task), METRIC_LABEL.get(main_metric(task), main_metric(task)), str(len(g)),
                     fmt((g["value"] - g["value_other"]).abs().max(), 3),
                     fmt((means["value"] - means["value_other"]).abs().max(), 3)])
    # What a claim is about; the convex check states one per noise kind.
    key = lambda c: (c["kind"], c["task"], tuple(c["subjects"]), c["metric"],  # noqa: E731
                     str((c.get("detail") or {}).get("noise", "")))
    other_claims = {key(c): c for c in files.read_json(other / "report" / "claims.json")["claims"]}
    compared = [(c, other_claims[key(c)]) for c in claims if key(c) in other_claims
                and c["kind"] in ("paired", "stability", "baseline", "tail_index", "convex")]
    same = [a for a, b in compared if a["verdict"] == b["verdict"]]
    changed = [f"{a['kind']} {a['task']} {' vs '.join(a['subjects'])} ({a['metric']}): {a['verdict']} / {b['verdict']}"
               for a, b in compared if a["verdict"] != b["verdict"]]
    table = _table(["task", "metric", "runs compared", "largest run difference", "largest method-mean difference"],
                   rows, right_from=2)
    text = (f"{other_note}{table}\n\n{len(same)} of {len(compared)} verdicts (paired, stability, baseline, tail index, "
            f"convex check) are the same in both runs.")
    if changed:
        text += " These differ (this run / the other):\n\n" + "\n".join(f"- {c}" for c in changed)
    return text


BLOCKS = {"results": lambda r, c, o: results_block(r, c), "verdicts": lambda r, c, o: verdicts_block(c),
          "noise": lambda r, c, o: noise_block(c), "convex": lambda r, c, o: convex_block(r, c),
          "variation": lambda r, c, o: variation_block(r, c, *o)}


def update(readme: str | Path, results: str | Path, claims_json: str | Path, other: str | Path | None = None,
           other_note: str = "") -> list[str]:
    """Rewrite every ``clipbench:NAME`` block of ``readme``; returns the names written. ``other``
    is the root of a second run (its ``results/`` and ``report/claims.json``) for ``variation``."""
    readme, results = Path(readme), Path(results)
    if not Path(claims_json).is_file():
        raise FileNotFoundError(f"{claims_json}: no claims (run the workflow, or `clipbench report`, first)")
    if other is not None and not (Path(other) / "report" / "claims.json").is_file():
        raise FileNotFoundError(f"{other}/report/claims.json: --other must be the root of a finished run")
    records = files.read_json(claims_json)["claims"]
    text = readme.read_text()
    written = []

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            raise ValueError(f"{readme}: unknown block clipbench:{name} (known: {', '.join(BLOCKS)})")
        written.append(name)
        body = BLOCKS[name](results, records, (Path(other) if other else None, other_note))
        return f"<!-- clipbench:{name} -->\n{body}\n<!-- /clipbench:{name} -->"

    new = re.sub(r"<!-- clipbench:(\w+) -->.*?<!-- /clipbench:\1 -->", fill, text, flags=re.S)
    if not written:
        raise ValueError(f"{readme}: no <!-- clipbench:NAME --> ... <!-- /clipbench:NAME --> block to fill "
                         f"(names: {', '.join(BLOCKS)})")
    files.write_text(readme, new)
    return written
