"""DVC compares runs: in a fresh repository on a tiny config, `dvc repro`, then `dvc exp run -S`,
`dvc exp show` with the metric columns filled, `dvc metrics diff` / `dvc plots diff` between a
commit and an experiment without warnings, `dvc status` clean; and `snakemake --report` holds
the figures. The whole workflow runs twice: minutes, so marked slow."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from tests._checkout import scratch_checkout

DVC = shutil.which("dvc")
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
TINY = {
    "run": {"tasks": ["classification"], "methods": ["sgd", "adam"], "seeds": [0]},
    "engine": {"threads": 1},
    "datasets": {"imagenet100": {"source": "synthetic", "synthetic": {
        "num_classes": 4, "train_per_class": 8, "val_per_class": 4, "image_size": 24, "seed": 1}}},
    "tasks": {"classification": {"image_size": 16, "epochs": 2, "batch_size": 8, "eval_batch_size": 16}},
}


def _run(cwd, *cmd, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean(repo):
    assert json.loads(_run(repo, DVC, "status", "--json").stdout or "{}") == {}


@pytest.mark.slow
@pytest.mark.skipif(DVC is None, reason="dvc is not installed")
def test_experiments_compare_and_the_snakemake_report_holds_the_figures(tmp_path):
    repo = scratch_checkout(tmp_path / "repo")
    (repo / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (repo / "params.yaml").write_text("configfile: tiny.yaml\n")  # which config DVC runs: a param
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "tiny")

    _run(repo, DVC, "repro")
    _clean(repo)
    # The metrics and curves are small files git keeps: commit them with the lock.
    _run(repo, "git", "add", "dvc.lock", "results/metrics.json", "results/metrics", "results/plots")
    _run(repo, "git", "commit", "-qm", "run")

    _run(repo, DVC, "exp", "run", "-n", "three", "-S", "tiny.yaml:tasks.classification.epochs=3")
    _clean(repo)
    shown = json.loads(_run(repo, DVC, "exp", "show", "--json").stdout)
    base = next(r for r in shown if r["rev"] != "workspace")
    (exp,) = base["experiments"]
    for rev in (base, exp["revs"][0]):
        metrics = rev["data"]["metrics"]["results/metrics.json"]["data"]["classification"]
        assert isinstance(metrics["sgd"]["val_top1"], float) and isinstance(metrics["adam"]["val_top1"], float)
    epochs = [rev["data"]["params"]["tiny.yaml"]["data"]["tasks"]["classification"]["epochs"] for rev in (base, exp["revs"][0])]
    assert epochs == [2, 3]  # the -S change, a param column of its own

    diff = json.loads(_run(repo, DVC, "metrics", "diff", "HEAD", "three", "--all", "--json").stdout)
    assert "classification.sgd.val_top1" in diff["results/metrics.json"]
    proc = _run(repo, DVC, "plots", "diff", "HEAD", "three", "--json")
    assert "WARNING" not in proc.stderr, proc.stderr
    values = json.loads(proc.stdout)["data"]["results/plots/classification_val_top1.csv"][0]["content"]["data"]["values"]
    assert {(v["method"], v["rev"]) for v in values} == {(m, r) for m in ("sgd", "adam") for r in ("HEAD", "three")}

    _run(repo, sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", "--report", "report.zip")
    names = zipfile.ZipFile(repo / "report.zip").namelist()
    for made in ("classification_top1.png", "summary.csv", "noise_init.png", "index.html"):
        assert any(n.endswith("/" + made) for n in names), (made, names)
