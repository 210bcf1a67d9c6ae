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

from clipbench import io
from clipbench.report import collect, figures, tables
from clipbench.report.tuning import section as tuning_section
from clipbench.report.names import METRIC_LABEL, main_metric, shown_tasks, task_label, task_notes

TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


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


def _tex(text) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in str(text))


def _environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pct=_pct, tex=_tex, metric_label=lambda m: METRIC_LABEL.get(m, m),
                       task_label=task_label)
    return env


def default_templates() -> Path:
    return Path(str(resources.files("clipbench").joinpath("resources/templates")))


def build_report(summary_csv: str | Path, out: str | Path, templates: str | Path | None = None,
                 baselines: str | Path | None = None, tuning: str | Path | None = None) -> list[Path]:
    """Figures, tables and the rendered report for the runs listed in ``summary_csv``;
    training-free baselines from ``baselines/<task>.json`` are shown beside them, and the
    tuning under ``tuning`` (results/tuning) when given."""
    out = Path(out)
    summary = pd.read_csv(summary_csv)
    history = collect.load_histories(sorted(set(summary["run_dir"])))
    shown = shown_tasks(summary["task"])
    baseline_rows = {t: tables.baseline_rows(baselines, t) for t in shown}
    figs = figures.curve_figures(history, out / "figures", baselines=baseline_rows)
    tasks = []
    for task in shown:
        rows = tables.final_table(summary, task)
        pub = tables.published().get(task)
        tasks.append({
            "name": task,
            "rows": rows,
            "metrics": tables.metric_names(rows, task),
            "main_metric": main_metric(task),
            "published": pub,
            "baselines": baseline_rows[task],
            "per_class": tables.per_class_table(rows),
            "notes": task_notes(task),
            "figures": [{"path": p.relative_to(out).as_posix(), "name": p.stem,
                         "data": base64.b64encode(p.read_bytes()).decode()}
                        for p in _main_first(figs.get(task, []), task, main_metric(task))],
        })
    context = {
        "title": "clipbench: gradient-clipping optimizers, replicated",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tasks": tasks,
        "tuning": tuning_section(tuning, out / "figures", out) if tuning else [],
        "versions": versions(summary),
        "n_runs": int(summary.drop_duplicates(["task", "method", "seed"]).shape[0]),
    }
    env = _environment(Path(templates) if templates else default_templates())
    written = []
    for name in ("index.html", "report.tex"):
        io.write_text(out / name, env.get_template(f"{name}.j2").render(**context))
        written.append(out / name)
    pdf = _pdflatex(out / "report.tex")
    if pdf:
        written.append(pdf)
    return written


def versions(summary: pd.DataFrame) -> dict:
    """The software the runs were trained with, as the first run's metrics.json records it
    (the report itself needs no torch); the report machine's package versions otherwise."""
    for run in sorted(set(summary["run_dir"])):
        path = Path(run) / "metrics.json"
        if path.is_file() and io.read_json(path).get("versions"):
            return io.read_json(path)["versions"]
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
