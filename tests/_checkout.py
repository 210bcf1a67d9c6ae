"""The repository under test (``REPO``), a scratch copy of it to run the workflow in without
touching the repo (``scratch_checkout``), Snakemake run in such a copy (``run_snakemake``), and
the environment of a child process that must import this checkout's clipbench (``checkout_env``).

tests/reliability/_workflow.py builds on these for its tiny run matrix (``tiny.yaml``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout_env(**extra: str) -> dict:
    """This environment (plus ``extra``) for a child that imports this checkout's clipbench,
    whatever is pip-installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def scratch_checkout(dst: Path) -> Path:
    """A copy of the tracked files (what a fresh clone has), so runs never touch the repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        src, out = REPO / f, dst / f
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # e.g. the package's links to the schema and the templates
            os.symlink(os.readlink(src), out)
        elif src.is_file():
            shutil.copy2(src, out)
    return dst


def run_snakemake(cwd: Path, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m snakemake ARGS`` in ``cwd``, output captured; ``env``: variables added to the
    environment (the jobs inherit them)."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
