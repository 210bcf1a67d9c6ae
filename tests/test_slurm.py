"""The workflow on a real one-node SLURM cluster (scripts/slurm-local.sh), not a mock.

Through `--profile workflow/profiles/slurm` it gives the same results as a local run, each
training job goes through sbatch with a GPU request, and a training job cancelled mid-run (as a
preemption would) is resubmitted by `--rerun-incomplete` and resumes from its checkpoint.
Needs root and Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import _ddp_config as ddp
from tests._checkout import REPO, run_snakemake, scratch_checkout
from tests._polling import wait_for

SCRIPT = REPO / "scripts" / "slurm-local.sh"
SNAKEMAKE_TIMEOUT = 900  # s, for one snakemake invocation through the cluster
METHODS = ["sgd", "adam"]
# One task, two methods, a few seconds of training each; a checkpoint every 4 of its 32 steps,
# so a cancelled job has one to resume from.
CONFIG = {
    "run": {"tasks": ["classification"], "methods": METHODS, "seeds": [0]},
    "engine": {"device": "cpu", "threads": 1, "gpus": 1, "checkpoint_every_steps": 4, "dvclive": False},
    "resources": {"mem_mb": 2000, "runtime": 10},
    "datasets": {"imagenet100": {"source": "synthetic", "synthetic": {
        "num_classes": 4, "train_per_class": 16, "val_per_class": 4, "image_size": 24, "seed": 0}}},
    "tasks": {"classification": {
        "image_size": 16, "epochs": 4, "batch_size": 8, "eval_batch_size": 16,
        "methods": {"sgd": {"lr": 0.01, "momentum": 0.9}, "adam": {"lr": 1.0e-3}}}},
}
# The cluster has no accounting database: squeue for job states (sacct would hang), no account.
SLURM_ARGS = ["--profile", "workflow/profiles/slurm", "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "2", "--slurm-no-account",
              "--slurm-keep-successful-logs", "--latency-wait", "5", "--verbose"]


def _why_not() -> str | None:
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
               if not shutil.which(c, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): "
                "apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0 and not (shutil.which("sudo") and
                                  subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0):
        return "starting a SLURM cluster needs root or passwordless sudo (it writes /etc/slurm/slurm.conf)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return 'the Snakemake SLURM plugin is not installed: pip install -e ".[slurm]"'
    return None


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]


def _script(*args: str) -> list[str]:
    return ([] if os.geteuid() == 0 else ["sudo", "-n", "--preserve-env=SLURM_LOCAL_DIR,SLURM_LOCAL_GPUS"]) + [str(SCRIPT), *args]


def _workdir(root: Path) -> Path:
    repo = scratch_checkout(root)
    (repo / "small.yaml").write_text(yaml.safe_dump(CONFIG))
    return repo


def _runs(repo: Path) -> list[str]:
    return [f"results/runs/classification/{m}/seed0/metrics.json" for m in METHODS]


def _metrics(repo: Path, method: str) -> dict:
    return json.loads((repo / f"results/runs/classification/{method}/seed0/metrics.json").read_text())


def _jobs() -> list[dict]:
    """Every job slurmctld still knows (MinJobAge keeps finished ones), as scontrol's key=value."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")]


def _train_jobs(since: set[str]) -> list[dict]:
    return [j for j in _jobs() if j["JobId"] not in since and j.get("Comment", "").startswith("rule_train")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm-state")
    # Two placeholder GPUs: room for a two-GPU (torchrun) job.
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state), "SLURM_LOCAL_GPUS": "2"}
    proc = subprocess.run(_script("start"), env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield state
    finally:
        # By the PIDs the script recorded; nothing else is touched.
        subprocess.run(_script("stop"), env=env, timeout=120)


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """The training runs of the same small config, run locally: the reference for every SLURM run."""
    repo = _workdir(tmp_path_factory.mktemp("local"))
    proc = run_snakemake(repo, *_runs(repo), "--cores", "2", "--configfile", "small.yaml",
                         timeout=SNAKEMAKE_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return repo


def test_workflow_on_slurm_matches_local(cluster, local, tmp_path):
    repo = _workdir(tmp_path)
    before = {j["JobId"] for j in _jobs()}
    t0 = time.monotonic()
    proc = run_snakemake(repo, *SLURM_ARGS, "--configfile", "small.yaml", timeout=SNAKEMAKE_TIMEOUT)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    # --verbose logs each submission as "sbatch call: sbatch ... --wrap=<the job's snakemake>".
    sbatch = [line.split("sbatch call: ", 1)[1].split(" --wrap=")[0]
              for line in log.splitlines() if "sbatch call: " in line]
    print(f"SLURM workflow wall time: {wall:.1f} s")
    print("\n".join(line for line in sbatch if "rule_train" in line))

    # Same outputs as the local run, with the same numbers.
    for method in METHODS:
        got, want = _metrics(repo, method), _metrics(local, method)
        assert got["status"] == "ok" and got["steps"] == want["steps"]
        assert got["final"] == want["final"], method
    assert (repo / "report/index.html").exists() and (repo / "results/summary.csv").exists()

    # Each training job went through sbatch asking for a GPU on the gpu partition, and the
    # scheduler granted it; data and report jobs went to the cpu partition without one.
    train_calls = [line for line in sbatch if "rule_train" in line]
    assert len(train_calls) == len(METHODS), sbatch
    for line in train_calls:
        assert "--gpus=1" in line and "-p gpu" in line and "--mem 2000" in line and "-t 10" in line, line
        # SIGTERM 120 s before the time limit: a known grace period to checkpoint (the profile).
        assert "--signal=TERM@120" in line, line
    assert all("--gpus" not in line and "-p cpu" in line for line in sbatch if "rule_train" not in line), sbatch
    jobs = _train_jobs(before)
    assert len(jobs) == len(METHODS) and all(j["JobState"] == "COMPLETED" for j in jobs), jobs
    assert all("gpu" in j.get("TresPerJob", "") + j.get("TRES", "") for j in jobs), jobs
    # SLURM's own logs, one per job, under .snakemake/slurm_logs/.
    assert list((repo / ".snakemake/slurm_logs/rule_train").rglob("*.log"))


def test_cancelled_job_resumes_from_its_checkpoint(cluster, local, tmp_path):
    repo = _workdir(tmp_path)
    run = repo / "results/runs/classification/sgd/seed0"
    before = {j["JobId"] for j in _jobs()}
    # --retries 0: the cancelled job fails this invocation; the rerun below resubmits it.
    # (Targets before --configfile, which takes every file name after it.)
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen([sys.executable, "-m", "snakemake", *_runs(repo), *SLURM_ARGS, "--retries", "0",
                                  "--configfile", "small.yaml"], cwd=repo, stdout=out, stderr=subprocess.STDOUT)
    try:
        def checkpoint_written():
            assert first.poll() is None, f"snakemake ended early:\n{log.read_text()[-4000:]}"
            return (run / "checkpoint.pt").exists()

        wait_for(checkpoint_written, 600, f"{run}/checkpoint.pt", interval=0.1)
        job = next(j for j in _train_jobs(before) if j["Comment"].endswith("_sgd_0") and j["JobState"] == "RUNNING")
        subprocess.run(["scancel", job["JobId"]], check=True)
        first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    out = log.read_text()
    assert first.returncode != 0, out[-4000:]
    cancelled = next(j for j in _jobs() if j["JobId"] == job["JobId"])
    assert cancelled["JobState"] == "CANCELLED", cancelled
    assert not (run / "metrics.json").exists(), "the run ended before it was cancelled; make it longer"
    assert (run / "checkpoint.pt").exists()

    again = run_snakemake(repo, *_runs(repo), *SLURM_ARGS, "--rerun-incomplete", "--configfile", "small.yaml",
                          timeout=SNAKEMAKE_TIMEOUT)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    resubmitted = [j for j in _train_jobs(before) if j["JobId"] != job["JobId"] and j["Comment"].endswith("_sgd_0")]
    assert resubmitted and resubmitted[-1]["JobState"] == "COMPLETED", resubmitted

    resumed, uninterrupted = _metrics(repo, "sgd"), _metrics(local, "sgd")
    print("resumed at steps", resumed["timing"]["resumed_at_steps"])
    print("resumed:       ", json.dumps(resumed["final"], sort_keys=True))
    print("uninterrupted: ", json.dumps(uninterrupted["final"], sort_keys=True))
    assert resumed["timing"]["resumed_at_steps"] and resumed["timing"]["resumed_at_steps"][0] > 0
    assert resumed["steps"] == uninterrupted["steps"]
    assert resumed["final"] == uninterrupted["final"]


def test_two_gpu_job_runs_torchrun_in_its_allocation(cluster, tmp_path):
    """engine.gpus: 2 asks SLURM for two GPUs and runs two DDP processes in the allocation;
    the result equals a one-process local run within tests/test_ddp.py's tolerance."""
    runs, logs = {}, {}
    for gpus, args in ((2, SLURM_ARGS), (1, ["--cores", "2"])):
        repo = ddp.checkout(tmp_path / f"gpus{gpus}", ddp.config(gpus=gpus))
        proc = run_snakemake(repo, f"{ddp.RUN}/metrics.json", *args, "--configfile", "small.yaml",
                             timeout=SNAKEMAKE_TIMEOUT)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        runs[gpus], logs[gpus] = repo, proc.stdout + proc.stderr
    train = [line.split("sbatch call: ", 1)[1].split(" --wrap=")[0]
             for line in logs[2].splitlines() if "sbatch call: " in line and "rule_train" in line]
    print("\n".join(train))
    assert len(train) == 1 and "--gpus=2" in train[0] and "--cpus-per-task=2" in train[0], train
    two, one = (json.loads((runs[g] / ddp.RUN / "metrics.json").read_text()) for g in (2, 1))
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["steps"] == one["steps"]
    assert two["final"]["train"]["loss"] == pytest.approx(one["final"]["train"]["loss"], rel=1e-5)
    assert two["final"]["val"] == pytest.approx(one["final"]["val"], rel=1e-5)


def test_request_no_node_holds_stops_before_submission(cluster, tmp_path):
    """`prepare` asking for more CPUs than the cluster's node has would pend forever
    (PartitionConfig); the workflow stops before any sbatch, naming rule, request and node."""
    repo = _workdir(tmp_path)
    cpus = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    cfg = yaml.safe_load((repo / "small.yaml").read_text())
    cfg["resources"]["jobs"] = {"prepare": {"cpus_per_task": cpus + 6}}
    (repo / "small.yaml").write_text(yaml.safe_dump(cfg))
    before = {j["JobId"] for j in _jobs()}
    proc = run_snakemake(repo, *SLURM_ARGS, "--configfile", "small.yaml", timeout=300)
    log = proc.stdout + proc.stderr
    message = [line for line in log.splitlines() if line.startswith("rule prepare asks for")]
    print("\n".join(message))
    assert proc.returncode != 0 and "no job was submitted" in log, log[-4000:]
    assert message and f"{cpus + 6} CPUs" in message[0] and f"has {cpus} CPUs" in message[0], log[-4000:]
    assert {j["JobId"] for j in _jobs()} == before  # nothing reached the scheduler
