"""Render the report: ``index.html`` (self-contained) and ``report.tex`` (+ PDF where LaTeX is)."""
from __future__ import annotations

import base64
import datetime as dt
import math
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from clipbench import files
from clipbench.report import audit, claims, collect, compare, dynamics, figures, provenance, tables
from clipbench.report import noise as noise_section
from clipbench.report.tuning import section as tuning_section
from clipbench.report.names import METRIC_LABEL, main_metric, shown_tasks, task_label, task_notes

TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
               # Characters pdfLaTeX's utf8 input does not know, in the words it does.
               "−": "$-$", "±": r"$\pm$", "≈": r"$\approx$", "≤": r"$\leq$", "≥": r"$\geq$", "×": r"$\times$",
               "λ": r"$\lambda$", "α": r"$\alpha$", "γ": r"$\gamma$", "ν": r"$\nu$", "ξ": r"$\xi$",
               "‖": r"$\|$", "√": r"$\surd$", "·": r"$\cdot$", "→": r"$\to$", "…": r"\dots{}"}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}%"


def _ci(v: dict | None, digits: int = 3) -> str:
    """``mean ± half-width`` of a t interval (the mean alone from one seed)."""
    if not v or v.get("mean") is None:
        return "–"
    half = v.get("half")
    return f"{_fmt(float(v['mean']), digits)} ± {_fmt(float(half), digits)}" if half is not None else _fmt(float(v["mean"]), digits)


def _pair(v, digits: int = 3) -> str:
    """An interval given as [lo, hi] (a claim's), "–" when absent."""
    if not v or v[0] is None or v[1] is None:
        return "–"
    return f"[{_sci(v[0], digits)}, {_sci(v[1], digits)}]"


def _sci(value, digits: int = 3) -> str:
    """A number of any size, readable: fixed digits in a usual range, else scientific."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–" if value is None or math.isnan(value) else str(value)
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.{max(digits - 1, 1)}e}"
    return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"


# How a claim's verdict reads in a table cell or the summary.
VERDICT_WORD = {"better": "better", "worse": "worse", "less": "oscillates less", "more": "oscillates more",
                "equivalent": "practically equivalent", "undecided": "cannot tell", "too_few": "too few to tell",
                "heavy_tailed": "heavier than Gaussian", "not_heavy_tailed": "Gaussian-like tails",
                "consistent": "consistent", "inconsistent": "inconsistent", "reached": "reached",
                "not_reached": "not reached", "wider": "wider", "narrower": "narrower", "above": "above baseline",
                "within": "at baseline", "below": "below baseline", "active": "clipping active",
                "inactive": "clipping inactive"}


def _tex(text) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in str(text))


def _environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pct=_pct, tex=_tex, metric_label=lambda m: METRIC_LABEL.get(m, m),
                       task_label=task_label, ci=_ci, pair=_pair, sci=_sci,
                       verdict_word=lambda v: VERDICT_WORD.get(v, v),
                       signed=lambda v, d=3: "–" if v is None else f"{float(v):+.{d}f}")
    return env


def default_templates() -> Path:
    return Path(str(resources.files("clipbench").joinpath("resources/templates")))


def build_report(summary_csv: str | Path, out: str | Path, templates: str | Path | None = None,
                 baselines: str | Path | None = None, config: dict | None = None, manifests=None,
                 noise: str | Path | None = None, heavytail: str | Path | None = None, tuning: str | Path | None = None) -> list[Path]:
    """Figures, tables, ``claims.json`` and the rendered report for the runs in ``summary_csv``.

    Training-free baselines come from ``baselines/<task>.json``; ``config`` (the resolved
    workflow config) and ``manifests`` (prepared datasets' manifest.json) go into the
    provenance and the data banner; ``noise/<task>/noise.json`` and ``heavytail/summary.json``
    fill the gradient noise section when present; ``tuning`` (results/tuning) adds the tuning
    section. Every verdict the page states is a record of ``claims.json``, rendered from it.
    """
    out = Path(out)
    section = claims.margins(config)
    summary = pd.read_csv(summary_csv)
    runs = sorted(set(summary["run_dir"]))
    history = collect.load_histories(runs)
    summary, history, audited = audit.audit(summary, history, config)
    walls = collect.epoch_wall_times(runs)
    shown = shown_tasks(summary["task"])
    baseline_rows = {t: tables.baseline_rows(baselines, t) for t in shown}
    figs = figures.curve_figures(history, out / "figures", baselines=baseline_rows)
    tasks = [_task_context(task, summary, history, walls, baseline_rows[task], figs.get(task, []), out, section, config)
             for task in shown]
    for t in tasks:
        for row in t["rows"]:
            cell = audited["cells"].get((t["name"], row["method"]), {})
            row["seeds"] = cell.get("used", row["seeds"])
            row["asked"] = cell.get("asked", row["seeds"])
            row["left_out"] = cell.get("left_out", [])
            row["failed"] = sum(f["task"] == t["name"] and f["method"] == row["method"] for f in audited["failed"])
    stability_png = figures.stability_figure({t["name"]: t["stability"]["runs"] for t in tasks}, out / "figures")
    versions_ = versions(summary)
    noise_ = [n for n in (noise_section.task_noise(noise, t, summary, out) for t in shown) if n]
    heavy = noise_section.heavytail(heavytail, out)
    tuned = tuning_section(tuning, out / "figures", out) if tuning else []
    records = [c for t in tasks for c in t["claims"]] + [c for n in noise_ for c in n["claims"]] + \
        (heavy["claims"] if heavy else []) + [c for t in tuned for c in t["claims"]]
    audit.annotate(records, audited)
    claims.write(records, out / "claims.json")
    prov = provenance.provenance(config, manifests, versions_)
    context = {
        "title": "clipbench: gradient-clipping optimizers, replicated",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "banner": provenance.data_banner(prov["manifests"], config),
        "summary": _summary(tasks),
        "tasks": tasks,
        "tuning": tuned,
        "versions": versions_,
        "n_runs": int(summary[summary["status"] != "failed"].drop_duplicates(["task", "method", "seed"]).shape[0]),
        "left_out": audited["lines"],
        "n_seeds": max([t["paired"]["n_seeds"] for t in tasks] or [0]),
        "margins": section,
        "all_claims": records,
        "stability_figure": _figure(stability_png, out) if stability_png else None,
        "noise": noise_,
        "heavytail": heavy,
        "provenance": prov,
    }
    env = _environment(Path(templates) if templates else default_templates())
    written = [out / "claims.json"]
    for name in ("index.html", "report.tex"):
        files.write_text(out / name, env.get_template(f"{name}.j2").render(**context))
        written.append(out / name)
    if config is not None:
        files.write_text(out / "config.resolved.yaml", context["provenance"]["config_yaml"])
    pdf = _pdflatex(out / "report.tex")
    if pdf:
        written.append(pdf)
    return written


def _summary(tasks: list[dict]) -> list[dict]:
    """Per task, did clipping help: the twin claims on the main metric, the page's first answer."""
    return [{"name": t["name"], "metric": t["paired"]["metric"],
             "claims": [r["claim"] for r in t["paired"]["rows"] if r["kind"] == "twin"]} for t in tasks]


def _figure(path: Path, out: Path, caption: str | None = None) -> dict:
    """A figure for both outputs: ``path`` (PNG) for the .tex, inline data for the HTML (the
    SVG beside the PNG when there is one, else the PNG)."""
    svg = path.with_suffix(".svg")
    shown = svg if svg.is_file() else path
    return {"path": path.relative_to(out).as_posix(), "name": path.stem, "caption": caption,
            "mime": "image/svg+xml" if shown is svg else "image/png",
            "data": base64.b64encode(shown.read_bytes()).decode()}


def _caption(task: str, path: Path) -> str:
    metric = path.stem[len(task) + 1:]
    thesis = (tables.published().get("figures") or {}).get(task, {}).get(metric)
    what = f"{task_label(task)}: {METRIC_LABEL.get(metric, metric)}, mean over seeds with a 95% t band"
    return f"{what}. Regenerates {thesis}." if thesis else f"{what}. No counterpart in the thesis."


def _task_context(task: str, summary, history, walls, baselines: list[dict], figs: list[Path], out: Path,
                  section: dict, config: dict | None) -> dict:
    rows = tables.final_table(summary, task)
    twin_of = compare.twins(config, task, summary.loc[summary["task"] == task, "method"])
    paired = compare.paired_table(summary, task, section, config)
    stability = dynamics.stability(history, task, section, twin_of)
    metric = main_metric(task)
    base_value = next(((b["metrics"].get(metric) or {}).get("mean") for b in baselines
                       if (b["metrics"].get(metric) or {}).get("mean") is not None), None)
    ttt = dynamics.time_to_target(history, summary, walls, task, base_value, section)
    flags = compare.baseline_claims(summary, task, baselines, section) + compare.clipping_claims(summary, task, twin_of)
    compare.flag_rows(rows, flags)
    pub = tables.published()
    return {
        "name": task,
        "rows": rows,
        "metrics": tables.metric_names(rows, task),
        "main_metric": metric,
        "has_x": any(r["val_x"] for r in rows),
        "published": pub.get(task),
        "unknowns": (pub.get("unknowns") or {}).get(task, []),
        "baselines": baselines,
        "per_class": tables.per_class_table(rows),
        "notes": task_notes(task),
        "paired": paired,
        "stability": stability,
        "time_to_target": ttt,
        "claims": [r["claim"] for r in paired["rows"]] + [p["claim"] for p in stability["pairs"]] + flags
        + ttt["claims"],
        "figures": [_figure(p, out, _caption(task, p)) for p in _main_first(figs, task, metric)],
    }


def versions(summary: pd.DataFrame) -> dict:
    """The software the runs were trained with, as the first run's metrics.json records it
    (the report itself needs no torch); the report machine's package versions otherwise."""
    for run in sorted(set(summary["run_dir"])):
        path = Path(run) / "metrics.json"
        if path.is_file() and files.read_json(path).get("versions"):
            return files.read_json(path)["versions"]
    import platform
    import sys
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("clipbench", "torch", "torchvision", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _main_first(paths: list[Path], task: str, main: str | None) -> list[Path]:
    """The figure of the task's main metric first, as the thesis shows them."""
    return sorted(paths, key=lambda p: (p.stem != f"{task}_{main}", p.stem))


def _pdflatex(tex: Path) -> Path | None:
    """Build the PDF when LaTeX is installed; the .tex is the deliverable either way."""
    latexmk, pdflatex = shutil.which("latexmk"), shutil.which("pdflatex")
    if not (latexmk or pdflatex):
        print("report: no LaTeX installation found (latexmk/pdflatex); report.tex written, PDF skipped")
        return None
    cmd = [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", tex.name] if latexmk else \
          [pdflatex, "-interaction=nonstopmode", "-halt-on-error", tex.name]
    proc = subprocess.run(cmd, cwd=tex.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"report: LaTeX failed on {tex} (PDF skipped):\n{proc.stdout[-2000:]}")
        return None
    return tex.with_suffix(".pdf")
