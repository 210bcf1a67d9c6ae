"""Before anything is submitted to SLURM: can some node of each job's partition hold it?

A job that asks for more CPUs, memory, GPUs or time than any node of its partition offers is
accepted by many clusters and then pends forever (reason ``PartitionConfig`` or
``Resources``) while Snakemake waits without a word.  The Snakefile's ``onstart`` hands every
job it is about to run to :func:`check_jobs`, which compares the requests with ``sinfo``'s
nodes and stops the workflow naming the rule, the request and the largest node.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["Node", "Request", "parse_sinfo", "parse_minutes", "request_of", "problem", "check_jobs", "nodes"]

SINFO_FORMAT = "%P|%N|%c|%m|%G|%l"


@dataclass(frozen=True)
class Node:
    partition: str
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    time_limit: int | None  # minutes; None: no limit
    default: bool = False  # the cluster's default partition


@dataclass(frozen=True)
class Request:
    partition: str | None  # None: the default partition
    cpus: int
    mem_mb: int | None
    gpus: int
    runtime: int | None  # minutes

    def describe(self) -> str:
        parts = [f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}"]
        if self.mem_mb is not None:
            parts.append(f"{self.mem_mb} MB")
        parts.append(f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}")
        if self.runtime is not None:
            parts.append(f"{self.runtime} min")
        return ", ".join(parts)


def parse_minutes(text: str) -> int | None:
    """SLURM's time format (``days-hours:minutes:seconds``, ``minutes``, ``infinite``) in minutes."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    fields = [int(x) for x in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        h, m, s = (fields + [0, 0])[:3]
    else:  # minutes[:seconds] or hours:minutes:seconds
        h, m, s = (0, fields[0], 0) if len(fields) == 1 else (0, *fields) if len(fields) == 2 else fields
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def _gpus(gres: str) -> int:
    """GPUs in a GRES field such as ``gpu:a100:4(S:0-1),shard:8`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def parse_sinfo(text: str) -> list[Node]:
    """Lines of ``sinfo -h -N -o '%P|%N|%c|%m|%G|%l'`` as nodes."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        part, name, cpus, mem, gres, limit = line.split("|")
        default = part.endswith("*")
        out.append(Node(part.rstrip("*"), name, int(cpus.rstrip("+")), int(mem.rstrip("+")), _gpus(gres),
                        parse_minutes(limit), default))
    return out


def nodes() -> list[Node] | None:
    """Every node of every partition, from ``sinfo``; None where there is no ``sinfo``."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"sinfo failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_sinfo(proc.stdout)


def _int(value) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def request_of(resources: dict) -> Request:
    """A Snakemake job's resources as the SLURM plugin turns them into sbatch options."""
    cpus = _int(resources.get("cpus_per_task")) or _int(resources.get("_cores")) or 1
    gpus = _int(resources.get("gpu")) or _int(resources.get("gpus")) or 0
    gres = resources.get("gres")
    if isinstance(gres, str) and gres:
        gpus = max(gpus, _gpus(gres))
    partition = resources.get("slurm_partition") or None
    return Request(partition, cpus, _int(resources.get("mem_mb")), gpus, _int(resources.get("runtime")))


def problem(rule: str, req: Request, all_nodes: list[Node]) -> str | None:
    """Why no node can run this request (None when one can)."""
    partition = req.partition or next((n.partition for n in all_nodes if n.default), None)
    where = [n for n in all_nodes if n.partition == partition]
    if not where:
        known = sorted({n.partition for n in all_nodes})
        return (f"rule {rule} asks for partition {partition!r}, which this cluster does not have "
                f"(sinfo lists: {', '.join(known) or 'none'}). Name one of them in the SLURM profile "
                f"(workflow/profiles/slurm/config.yaml) or with --set-resources {rule}:slurm_partition=....")

    def fits(n: Node) -> bool:
        return (n.cpus >= req.cpus and (req.mem_mb is None or n.mem_mb >= req.mem_mb) and n.gpus >= req.gpus
                and (req.runtime is None or n.time_limit is None or n.time_limit >= req.runtime))

    if any(fits(n) for n in where):
        return None
    big = max(where, key=lambda n: (n.cpus, n.mem_mb, n.gpus))
    limit = "no time limit" if big.time_limit is None else f"a time limit of {big.time_limit} min"
    short = [what for what, over in (
        ("CPUs", req.cpus > max(n.cpus for n in where)),
        ("memory", req.mem_mb is not None and req.mem_mb > max(n.mem_mb for n in where)),
        ("GPUs", req.gpus > max(n.gpus for n in where)),
        ("time", req.runtime is not None and all(n.time_limit is not None and n.time_limit < req.runtime
                                                 for n in where)),
    ) if over]
    why = f"more {' and '.join(short)} than any node there has" if short else "no single node has all of it"
    return (f"rule {rule} asks for {req.describe()} on partition {partition!r}, which no node there can "
            f"hold ({why}): the largest node, {big.name}, has {big.cpus} CPUs, "
            f"{big.mem_mb} MB, {big.gpus} GPUs and {limit}. Lower the request in the config "
            f"(resources.jobs.{rule}, or resources / resources.tasks for training) or choose a larger "
            f"partition (--set-resources {rule}:slurm_partition=...); submitted as it is, the job would "
            f"pend forever.")


def check_jobs(jobs, all_nodes: list[Node] | None = None) -> list[str]:
    """One message per (rule, request) that no node can hold; ``jobs``: (rule, resources dict)."""
    if all_nodes is None:
        all_nodes = nodes()
        if all_nodes is None:
            return []
    seen, out = set(), []
    for rule, resources in jobs:
        req = request_of(resources)
        if (rule, req) in seen:
            continue
        seen.add((rule, req))
        msg = problem(rule, req, all_nodes)
        if msg:
            out.append(msg)
    return out


def local_gpus() -> int:
    """The GPUs a local job can use: CUDA_VISIBLE_DEVICES when set, else those ``nvidia-smi -L``
    lists (0 without either). Without importing torch: the workflow asks this at every start."""
    import os
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())
