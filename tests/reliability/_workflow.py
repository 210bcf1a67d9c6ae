"""Snakemake in a throw-away checkout (tests/_checkout.py), on a run matrix small enough for a
test (``TINY``, as tiny.yaml): ``checkout`` makes one, ``snakemake`` runs to the end in it, ``start``
starts it in the background (to kill), ``output`` is what a finished one said."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests._checkout import run_snakemake, scratch_checkout

# One classification run on a 4-class, 24 px synthetic set: seconds, not minutes.
TINY = {
    "run": {"tasks": ["classification"], "methods": ["sgd"], "seeds": [0]},
    "engine": {"threads": 1, "checkpoint_every_steps": 1},
    "datasets": {"imagenet100": {"source": "synthetic", "synthetic": {
        "num_classes": 4, "train_per_class": 8, "val_per_class": 4, "image_size": 24, "seed": 1}}},
    "tasks": {"classification": {"image_size": 16, "epochs": 3, "batch_size": 8, "eval_batch_size": 16}},
}


def checkout(dst: Path, extra: dict | None = None) -> Path:
    """A fresh checkout in ``dst`` with ``TINY`` (deep-merged with ``extra``) as tiny.yaml."""
    from clipbench.config import deep_merge

    repo = scratch_checkout(dst)
    (repo / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(TINY, extra or {})))
    return repo


def snakemake(repo: Path, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake --configfile tiny.yaml ARGS``; the default profile applies as for a user.
    ``env``: variables added to the environment (the jobs inherit them)."""
    return run_snakemake(repo, "--configfile", "tiny.yaml", *args, timeout=timeout, env=env)


def start(repo: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start snakemake in its own process group (so the whole tree can be killed at once)."""
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", *args],
                            cwd=repo, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr
