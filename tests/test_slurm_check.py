"""Requests no node can hold stop the workflow before submission (clipbench.slurm), and each
rule's request comes from the config. The real-cluster version is in test_slurm.py."""
import os
import re
import stat

import pytest
import yaml

from clipbench import slurm
from tests._checkout import run_snakemake

SINFO = """cpu*|n1|2|7900|(null)|1-00:00:00
cpu*|n2|4|3900|(null)|1-00:00:00
gpu|g1|16|64000|gpu:a100:4(S:0-1)|2-00:00:00
"""


def test_parse_sinfo_and_times():
    nodes = slurm.parse_sinfo(SINFO)
    assert [(n.partition, n.cpus, n.mem_mb, n.gpus, n.time_limit, n.default) for n in nodes] == [
        ("cpu", 2, 7900, 0, 1440, True), ("cpu", 4, 3900, 0, 1440, True), ("gpu", 16, 64000, 4, 2880, False)]
    assert [slurm.parse_minutes(t) for t in ("infinite", "30", "30:00", "1:00:00", "2-12", "1-01:30", "0:30")] == [
        None, 30, 30, 60, 3600, 1530, 1]


@pytest.mark.parametrize("resources, words", [
    ({"cpus_per_task": 8, "mem_mb": 2000, "slurm_partition": "cpu"}, ["8 CPUs", "more CPUs than any node there has", "n2, has 4 CPUs"]),
    ({"cpus_per_task": 2, "mem_mb": 16000}, ["16000 MB", "more memory than"]),
    # Each fits one node, but no single node holds both.
    ({"cpus_per_task": 4, "mem_mb": 7000}, ["no single node has all of it"]),
    ({"_cores": 1, "gpu": 8, "slurm_partition": "gpu"}, ["8 GPUs", "more GPUs than", "g1"]),
    ({"_cores": 1, "runtime": 5000, "slurm_partition": "gpu"}, ["5000 min", "more time than", "2880 min"]),
    ({"_cores": 1, "slurm_partition": "a100"}, ["'a100', which this cluster does not have", "cpu, gpu",
                                                 "workflow/profiles/slurm/config.yaml"]),
])
def test_impossible_requests_are_named(resources, words):
    [msg] = slurm.check_jobs([("prepare", resources), ("prepare", resources)], slurm.parse_sinfo(SINFO))
    assert msg.startswith("rule prepare asks for")
    for w in words:
        assert w in msg, (w, msg)


def test_requests_that_fit_pass():
    nodes = slurm.parse_sinfo(SINFO)
    ok = [("train", {"cpus_per_task": 16, "mem_mb": 64000, "gpu": 4, "runtime": 2880, "slurm_partition": "gpu"}),
          ("prepare", {"cpus_per_task": 2, "mem_mb": 7900, "runtime": 60}),
          ("report", {"_cores": 4, "mem_mb": 3000})]
    assert slurm.check_jobs(ok, nodes) == []


def test_workflow_stops_before_submitting_what_no_node_holds(checkout, tmp_path):
    """Through the real SLURM executor plugin, with an `sinfo` that describes a 2-CPU node and an
    `sbatch` that records any call: nothing is submitted, and the message names rule and node."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "sbatch-calls"
    for name, body in (("sinfo", "cat <<'X'\n" + SINFO + "X\n"), ("sbatch", f'echo "$@" >> {calls}; exit 1\n')):
        (bin_ / name).write_text("#!/bin/sh\n" + body)
        (bin_ / name).chmod(stat.S_IRWXU)
    cfg = tmp_path / "big.yaml"
    cfg.write_text(yaml.safe_dump({"resources": {"jobs": {"prepare": {"cpus_per_task": 64}}}}))
    env_path = f"{bin_}:{os.environ['PATH']}"
    proc = run_snakemake(checkout, "--executor", "slurm", "--jobs", "2", "--slurm-no-account",
                         "--default-resources", "slurm_partition=cpu", "--configfile", str(cfg),
                         env={"PATH": env_path})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "no job was submitted" in log
    assert re.search(r"rule prepare asks for 64 CPUs, 4000 MB, 0 GPUs, 60 min on partition 'cpu'", log), log[-3000:]
    assert "the largest node, n2, has 4 CPUs" in log
    assert not calls.exists()


def test_local_gpus_from_the_environment_or_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2,3")
    assert slurm.local_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert slurm.local_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-2)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert slurm.local_gpus() == 2
    monkeypatch.setenv("PATH", "/nonexistent")
    assert slurm.local_gpus() == 0
