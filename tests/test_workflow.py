"""The Snakemake workflow: it plans, it lints, it refuses bad configs before any job."""
import json
import re

import pytest
import yaml

from tests._checkout import run_snakemake, scratch_checkout


def test_lint_is_clean(checkout):
    proc = run_snakemake(checkout, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def _planned(proc) -> dict[str, int]:
    # The dry-run's job-stats table: "rule    count".
    counts = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def _prepare_resources(proc) -> list[str]:
    """The `resources:` line of each planned prepare job in a dry run."""
    out, lines = [], (proc.stdout + proc.stderr).splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("rule prepare:"):
            out += [ln for ln in lines[i:i + 12] if ln.strip().startswith("resources:")][:1]
    return out


def test_thesis_config_plans_every_run(checkout):
    proc = run_snakemake(checkout, "-n", "--configfile", "config/thesis.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Scheduler requests come from the config: the thesis' prepare extracts ImageNet on 8 cores.
    prepare = _prepare_resources(proc)
    assert prepare and all("cpus_per_task=8" in r and "mem_mb=16000" in r and "runtime=720" in r for r in prepare)
    cfg = yaml.safe_load((checkout / "config/thesis.yaml").read_text())["run"]
    only = cfg.get("only") or {}
    n_runs = sum(m not in only or t in only[m] for t in cfg["tasks"] for m in cfg["methods"]) \
        * len(cfg["seeds"])
    counts = _planned(proc)
    assert counts["train"] == n_runs and counts["report"] == 1
    # Both questions are planned: the thesis-literal arms and the clip-active ones beside their twins.
    assert n_runs == (3 * 7 + 1) * 3
    assert "results/runs/classification/clipped_sgd_matched/seed0" in proc.stdout
    assert "results/runs/segmentation/clipped_sgd_matched" not in proc.stdout
    assert "results/runs/superres/clipped_sstm_active/seed2" in proc.stdout


def test_default_config_plans_every_run(checkout):
    proc = run_snakemake(checkout, "-n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A demo's prepare asks for the rule's own thread and 4 GB, not a cluster node's worth.
    prepare = _prepare_resources(proc)
    assert prepare and all("cpus_per_task" not in r and "mem_mb=4000" in r for r in prepare), prepare
    cfg = yaml.safe_load((checkout / "config/config.yaml").read_text())["run"]
    assert _planned(proc)["train"] == len(cfg["tasks"]) * len(cfg["methods"]) * len(cfg["seeds"])


@pytest.mark.parametrize("env, args, limit", [
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, [], "GPU jobs at once: 2 (the GPUs of this machine"),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, ["--resources", "gpu=5"], None),  # the user's limit stands
    ({"CUDA_VISIBLE_DEVICES": ""}, [], None),  # no GPU: nothing to share
])
def test_a_workstation_runs_as_many_gpu_jobs_as_it_has_gpus(checkout, env, args, limit):
    proc = run_snakemake(checkout, "-n", "--configfile", "config/thesis.yaml", *args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith("GPU jobs at once")]
    assert said == ([limit + "; --resources gpu=N to change it)"] if limit else []), said
    assert "gpu=1" in proc.stdout  # the training jobs declare their GPU


@pytest.mark.parametrize("override, key", [
    ({"run": {"methods": ["sgd", "lion"]}}, "run.methods.1"),
    ({"tasks": {"classification": {"methods": {"sgd": {"lr": -0.1}}}}}, "tasks.classification.methods.sgd.lr"),
    ({"tasks": {"classification": {"methods": {"sgd": {"lrr": 0.1}}}}}, "'lrr' was unexpected"),
    ({"engine": {"devise": "cpu"}}, "'devise' was unexpected"),
])
def test_bad_config_stops_before_any_job(checkout, tmp_path, override, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    before = sorted((checkout / "results").rglob("*"))
    proc = run_snakemake(checkout, "--cores", "1", "--configfile", str(bad))
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    # Nothing written, not even a job's spec file; results/ holds its tracked README.md and the
    # spec files of the module's earlier plans (results/specs), no job's output.
    assert sorted((checkout / "results").rglob("*")) == before
    assert sorted(p.name for p in (checkout / "results").iterdir()) in (["README.md"], ["README.md", "specs"])
    assert not (checkout / "data").exists()


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_embedded_default_end_to_end(tmp_path):
    """`snakemake --cores 2` in a fresh checkout runs every task x method and writes the report."""
    repo = scratch_checkout(tmp_path)
    proc = run_snakemake(repo, "--cores", "2", timeout=3000)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    cfg = yaml.safe_load((repo / "config/config.yaml").read_text())["run"]
    kept = set()
    for task in cfg["tasks"]:
        noise = json.loads((repo / f"results/noise/{task}/noise.json").read_text())
        assert "alpha" in noise
        kept.add(f"results/runs/{noise['reference']['run']}/checkpoint.pt")
        for method in cfg["methods"]:
            for seed in cfg["seeds"]:
                run = repo / "results/runs" / task / method / f"seed{seed}"
                m = json.loads((run / "metrics.json").read_text())
                assert m["status"] == "ok", (task, method, m["status"])
                assert (run / "history.csv").stat().st_size > 0
    # engine.keep_checkpoints: needed (the demo's): only the runs the noise was measured at keep theirs.
    assert {p.relative_to(repo).as_posix() for p in repo.glob("results/runs/*/*/*/checkpoint.pt")} == kept
    if yaml.safe_load((repo / "config/config.yaml").read_text())["heavytail"].get("enabled", True):
        header = (repo / "results/heavytail/quantiles.csv").read_text().splitlines()[0]
        assert header == "noise,method,multiplier,step,q50,q90,q99"
    html = (repo / "report/index.html").read_text()
    assert "clipped-SSTM" in html and "data:image/png;base64," in html
    assert (repo / "report/report.tex").exists()
    # A second run has nothing to do.
    again = run_snakemake(repo, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr
