"""Multi-GPU training jobs: with engine.gpus > 1 the train rule starts torchrun, one process
per GPU of the job's allocation, and its result equals the one-process run (tests/test_ddp.py's
tolerance), for plain SGD and for clipped-SGD with active norm clipping. On the CPU the processes
talk over gloo, so this runs anywhere.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests import _ddp_config as ddp
from tests._checkout import run_snakemake
from tests._ddp_config import CLIPPED_RUN, RUN


def _shell_command(repo: Path, *extra: str) -> str:
    proc = run_snakemake(repo, "-n", "-p", "--cores", "2", "--forceall", f"{RUN}/metrics.json",
                         "--configfile", "small.yaml", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if " train --spec " in line)
    return line.removeprefix("Shell command: ")


def test_train_rule_starts_torchrun_per_gpu(tmp_path):
    repo = ddp.checkout(tmp_path, ddp.config(gpus=2))
    cmd = _shell_command(repo)
    assert cmd.startswith("torchrun --standalone --nnodes=1 --nproc_per_node=2 -m clipbench.cli train "), cmd
    # A task's own GPU count overrides engine.gpus; one GPU is a plain process.
    (repo / "more.yaml").write_text(yaml.safe_dump({"resources": {"tasks": {"superres": {"gpus": 4}}}}))
    assert "--nproc_per_node=4 " in _shell_command(repo, "more.yaml")
    (repo / "one.yaml").write_text(yaml.safe_dump({"engine": {"gpus": 1}}))
    assert _shell_command(repo, "one.yaml").startswith("clipbench train ")


def test_unknown_task_in_resources_is_refused(tmp_path):
    repo = ddp.checkout(tmp_path, ddp.config())
    (repo / "bad.yaml").write_text(yaml.safe_dump({"resources": {"tasks": {"superress": {"gpus": 2}}}}))
    proc = run_snakemake(repo, "-n", "--cores", "1", "--configfile", "small.yaml", "bad.yaml")
    assert proc.returncode != 0 and "resources.tasks: 'superress' is not one of" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun (from torch) is not on PATH")
def test_two_process_job_matches_one_process(tmp_path):
    runs = {}
    for gpus in (1, 2):
        repo = ddp.checkout(tmp_path / f"gpus{gpus}", ddp.config(clipped=True, gpus=gpus))
        proc = run_snakemake(repo, "--cores", "2", f"{RUN}/metrics.json", f"{CLIPPED_RUN}/metrics.json",
                             "--configfile", "small.yaml")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[gpus] = repo
    for run in (RUN, CLIPPED_RUN):
        one, two = (json.loads((runs[g] / run / "metrics.json").read_text()) for g in (1, 2))
        assert one["world_size"] == 1 and two["world_size"] == 2
        assert one["steps"] == two["steps"] > 0
        assert two["final"]["train"]["loss"] == pytest.approx(one["final"]["train"]["loss"], rel=1e-5)
        assert two["final"]["val"] == pytest.approx(one["final"]["val"], rel=1e-5)
        pa, pb = (torch.load(runs[g] / run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
                  for g in (1, 2))
        for k in pa:
            # the absolute part relative to the tensor's magnitude (its largest entry)
            torch.testing.assert_close(pb[k], pa[k], rtol=1e-5, atol=1e-6 * float(pa[k].abs().max()))
        if run == CLIPPED_RUN:
            # clipping was active (else this proves no more than SGD), equally in both
            assert one["telemetry"]["clip_fraction"] > 0.5, one["telemetry"]
            assert one["telemetry"]["clip_scale_mean"] < 0.9, one["telemetry"]
            assert two["telemetry"]["clip_fraction"] == one["telemetry"]["clip_fraction"]
            assert two["telemetry"]["clip_scale_mean"] == pytest.approx(one["telemetry"]["clip_scale_mean"], rel=1e-5)
