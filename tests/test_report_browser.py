"""The report in a real browser (headless Chromium) and a real TeX (latexmk, pdfinfo, pdftotext).

Skipped, with the reason, where those programs are missing; `.ci/run` installs them.
"""
import html as htmlmod
import re
import shutil
import subprocess

import pytest

from clipbench.report import render
from tests._reportfixture import make_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LATEX = shutil.which("latexmk") or shutil.which("pdflatex")
POPPLER = shutil.which("pdfinfo") and shutil.which("pdftotext")
need_chromium = pytest.mark.skipif(not CHROMIUM, reason="headless Chromium not installed (.ci/run installs Debian's chromium)")
need_tex = pytest.mark.skipif(not (LATEX and POPPLER),
                              reason="latexmk/pdflatex or poppler-utils missing (.ci/run installs latexmk, "
                                     "texlive-latex-recommended, lmodern and poppler-utils)")

# A label from data that would run, or break the TeX, if either output did not escape it.
NASTY = r"<script>document.title=42</script> & 50% snake_case \input{/etc/hostname} }"

# Runs after the page loaded: writes into the DOM how many images there are and which did not load.
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).map(i => i.alt);
  const div = document.createElement("div");
  div.id = "cb-check";
  div.dataset.images = imgs.length;
  div.dataset.broken = broken.join("|");
  document.body.appendChild(div);
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    fx = make_runs(root, label_of_baseline=NASTY)
    render.build_report(fx["summary_csv"], root / "report", baselines=fx["baselines"], config=fx["config"],
                        manifests=fx["manifests"], noise=fx["noise"], heavytail=fx["heavytail"])
    return root / "report"


def _chromium(*args, timeout=120):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@need_chromium
def test_page_in_chromium(report):
    page = report / "index.html"
    check = report / "check.html"  # a copy with the load check; the report itself has no script
    check.write_text(page.read_text().replace("</body>", CHECK + "\n</body>"))
    proc = _chromium("--enable-logging=stderr", "--v=1", "--virtual-time-budget=15000", "--dump-dom", check.as_uri())
    dom = proc.stdout
    assert "</html>" in dom, proc.stderr[-3000:]
    # Every figure has loaded.
    m = re.search(r'<div id="cb-check" data-images="(\d+)" data-broken="([^"]*)"', dom)
    assert m, "the load check did not run"
    assert int(m.group(1)) >= 8 and m.group(2) == "", f"images not loaded: {m.group(2)}"
    # No console message at all (errors, failed loads, warnings).
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    # The tables and the thesis' numbers are in the DOM.
    text = htmlmod.unescape(re.sub(r"<[^>]+>", " ", dom))
    for shown in ("Paired differences", "clipped-SGD − SGD", "95% t interval", "0.578", "0.466", "18.046",
                  "background everywhere (no training)", "Provenance"):
        assert shown in text, shown
    assert dom.count('<table class="paired">') == 3
    # The data's label is text: escaped in the DOM, never run.
    assert "&lt;script&gt;document.title=42&lt;/script&gt;" in dom
    assert "<script>document.title=42</script>" not in dom
    assert NASTY in text
    assert "<title>42</title>" not in dom
    shot = report / "screenshot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@need_tex
def test_pdf_compiles_with_pages_and_text(report):
    pdf = report / "report.pdf"
    log = report / "report.log"
    assert pdf.is_file(), log.read_text()[-3000:] if log.exists() else "no LaTeX log"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    assert 6 <= pages <= 40, pages
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = re.sub(r"\s+", " ", text)
    for shown in ("Paired differences", "95% t interval", "little power", "Provenance", "0.578", "18.046",
                  "Gradient noise", "not reached", "Resolved config", "predicting background", "Did clipping help?",
                  "Not the thesis"):
        assert shown in flat, shown
    # Every table fits the page: wide ones are scaled to the text width.
    assert "Overfull \\hbox" not in log.read_text(errors="replace")
    # The data's label, every special character printed as itself.
    assert NASTY in flat
