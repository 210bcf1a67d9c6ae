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
from clipbench.report import collect, compare, dynamics, figures, provenance, tables
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


def _interval(v: dict | None, digits: int = 3) -> str:
    if not v or v.get("lo") is None:
        return "–"
    return f"[{float(v['lo']):+.{digits}f}, {float(v['hi']):+.{digits}f}]"


def _tex(text) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in str(text))


def _environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pct=_pct, tex=_tex, metric_label=lambda m: METRIC_LABEL.get(m, m),
                       task_label=task_label, ci=_ci, interval=_interval,
                       signed=lambda v, d=3: "–" if v is None else f"{float(v):+.{d}f}")
    return env


def default_templates() -> Path:
    return Path(str(resources.files("clipbench").joinpath("resources/templates")))


def build_report(summary_csv: str | Path, out: str | Path, templates: str | Path | None = None,
                 baselines: str | Path | None = None, config: dict | None = None, manifests=None,
                 noise: str | Path | None = None, heavytail: str | Path | None = None, tuning: str | Path | None = None) -> list[Path]:
    """Figures, tables and the rendered report for the runs listed in ``summary_csv``.

    Training-free baselines come from ``baselines/<task>.json``; ``config`` (the resolved
    workflow config) and ``manifests`` (prepared datasets' manifest.json) go into the
    provenance; ``noise/<task>/noise.json`` and ``heavytail/summary.json`` fill the gradient
    noise section when present; ``tuning`` (results/tuning) adds the tuning section.
    """
    out = Path(out)
    summary = pd.read_csv(summary_csv)
    runs = sorted(set(summary["run_dir"]))
    history = collect.load_histories(runs)
    walls = collect.epoch_wall_times(runs)
    shown = shown_tasks(summary["task"])
    baseline_rows = {t: tables.baseline_rows(baselines, t) for t in shown}
    figs = figures.curve_figures(history, out / "figures", baselines=baseline_rows)
    tasks = [_task_context(task, summary, history, walls, baseline_rows[task], figs.get(task, []), out)
             for task in shown]
    stability_png = figures.stability_figure({t["name"]: t["stability"]["runs"] for t in tasks}, out / "figures")
    versions_ = versions(summary)
    context = {
        "title": "clipbench: gradient-clipping optimizers, replicated",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tasks": tasks,
        "tuning": tuning_section(tuning, out / "figures", out) if tuning else [],
        "versions": versions_,
        "n_runs": int(summary.drop_duplicates(["task", "method", "seed"]).shape[0]),
        "n_seeds": max([t["paired"]["n_seeds"] for t in tasks] or [0]),
        "stability_figure": _figure(stability_png, out) if stability_png else None,
        "noise": [n for n in (noise_section.task_noise(noise, t, summary, out) for t in shown) if n],
        "heavytail": noise_section.heavytail(heavytail, out),
        "provenance": provenance.provenance(config, manifests, versions_),
    }
    env = _environment(Path(templates) if templates else default_templates())
    written = []
    for name in ("index.html", "report.tex"):
        files.write_text(out / name, env.get_template(f"{name}.j2").render(**context))
        written.append(out / name)
    if config is not None:
        files.write_text(out / "config.resolved.yaml", context["provenance"]["config_yaml"])
    pdf = _pdflatex(out / "report.tex")
    if pdf:
        written.append(pdf)
    return written


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


def _task_context(task: str, summary, history, walls, baselines: list[dict], figs: list[Path], out: Path) -> dict:
    rows = tables.final_table(summary, task)
    compare.flag_rows(rows, baselines, summary, task)
    pub = tables.published()
    return {
        "name": task,
        "rows": rows,
        "metrics": tables.metric_names(rows, task),
        "main_metric": main_metric(task),
        "has_x": any(r["val_x"] for r in rows),
        "published": pub.get(task),
        "unknowns": (pub.get("unknowns") or {}).get(task, []),
        "baselines": baselines,
        "per_class": tables.per_class_table(rows),
        "notes": task_notes(task),
        "paired": compare.paired_table(summary, task),
        "stability": dynamics.stability(history, task),
        "time_to_target": dynamics.time_to_target(history, summary, walls, task),
        "figures": [_figure(p, out, _caption(task, p)) for p in _main_first(figs, task, main_metric(task))],
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
