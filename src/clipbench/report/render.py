"""Render the report: ``index.html`` (self-contained) and ``report.tex`` (+ PDF where LaTeX is)."""
from __future__ import annotations

import datetime as dt
import math
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from clipbench import files, runfiles
from clipbench.report import audit, claims, collect, provenance, sections
from clipbench.report.names import METRIC_LABEL, task_label

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
                 noise: str | Path | None = None, heavytail: str | Path | None = None, tuning: str | Path | None = None,
                 workers: int = 1) -> list[Path]:
    """Figures, tables, ``claims.json`` and the rendered report for the runs in ``summary_csv``.

    Training-free baselines come from ``baselines/<task>.json``; ``config`` (the resolved
    workflow config) and ``manifests`` (prepared datasets' manifest.json) go into the
    provenance and the data banner; ``noise/<task>/noise.json`` and ``heavytail/summary.json``
    fill the gradient noise section when present; ``tuning`` (results/tuning) adds the tuning
    section; ``workers`` processes draw the curve figures. Every verdict the page states is a
    record of ``claims.json``, rendered from it.
    """
    out = Path(out)
    margins = claims.margins(config)
    summary = pd.read_csv(summary_csv)
    runs = sorted(set(summary["run_dir"]))
    history = collect.load_histories(runs)
    summary, history, audited = audit.audit(summary, history, config)
    tasks = sections.task.sections(summary, history, collect.epoch_wall_times(runs), baselines, out, margins,
                                   config, audited, workers)
    stability_figure = sections.task.stability_figure(tasks, out)
    versions_ = versions(summary)
    noise_ = sections.diagnostics.noise(noise, [t["name"] for t in tasks], summary, out)
    heavy = sections.diagnostics.heavytail(heavytail, out)
    tuned = sections.tuning.section(tuning, out / "figures", out) if tuning else []
    records = [c for t in tasks for c in t["claims"]] + [c for n in noise_ for c in n["claims"]] + \
        (heavy["claims"] if heavy else []) + [c for t in tuned for c in t["claims"]]
    audit.annotate(records, audited)
    claims.write(records, out / "claims.json")
    prov = provenance.provenance(config, manifests, versions_)
    context = {
        "title": "clipbench: gradient-clipping optimizers, replicated",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "banner": provenance.data_banner(prov["manifests"], config),
        "summary": sections.task.answers(tasks),
        "tasks": tasks,
        "tuning": tuned,
        "versions": versions_,
        "n_runs": int(summary[summary["status"] != "failed"].drop_duplicates(["task", "method", "seed"]).shape[0]),
        "left_out": audited["lines"],
        "n_seeds": max([t["paired"]["n_seeds"] for t in tasks] or [0]),
        "margins": margins,
        "all_claims": records,
        "stability_figure": stability_figure,
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


def versions(summary: pd.DataFrame) -> dict:
    """The software the runs were trained with, as the first run's metrics.json records it
    (the report itself needs no torch); the report machine's package versions otherwise."""
    for run in sorted(set(summary["run_dir"])):
        path = Path(run) / runfiles.METRICS_JSON
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
