"""Where a workflow's time went: Snakemake's ``benchmark:`` files, summed per rule.

    clipbench bench workflow [results/benchmarks] [--wall SECONDS]

Each job's file holds its wall time (``s``) and CPU time; per rule this prints the jobs, their
summed and mean wall time, and their CPU time, as a Markdown table. With ``--wall`` (the whole
run's wall-clock time) it also says how well the jobs filled the cores. A job forked by the job
server (``clipbench jobserver``) did its work outside the process Snakemake measured; its CPU
time is then read from the server's log (``--jobserver-log``), by command (= rule).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def rule_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def breakdown(root: str | Path) -> pd.DataFrame:
    root = Path(root)
    rows = []
    for f in sorted(root.rglob("*.tsv")):
        t = pd.read_csv(f, sep="\t")
        rows.append({"rule": rule_of(f, root), "wall_s": float(t["s"].iloc[-1]),
                     "cpu_s": float(t["cpu_time"].iloc[-1]) if "cpu_time" in t else float("nan")})
    if not rows:
        raise SystemExit(f"clipbench bench workflow: no benchmark files under {root} (run the workflow first)")
    df = pd.DataFrame(rows)
    out = df.groupby("rule").agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), mean_s=("wall_s", "mean"),
                                 cpu_s=("cpu_s", "sum"))
    return out.sort_values("wall_s", ascending=False)


def served_cpu(log: Path) -> dict[str, float]:
    """CPU seconds of the job server's children, summed by the clipbench command they ran."""
    text = log.read_text() if log.exists() else ""
    command = dict(re.findall(r"job (\d+): clipbench (\S+)", text))
    out: dict[str, float] = {}
    for pid, cpu in re.findall(r"job (\d+): exit -?\d+, cpu ([\d.]+) s", text):
        name = command.get(pid, "?")
        out[name] = out.get(name, 0.0) + float(cpu)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipbench bench workflow", description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="results/benchmarks", type=Path)
    p.add_argument("--wall", type=float, help="the whole run's wall-clock seconds")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--jobserver-log", type=Path, default=Path("results/logs/jobserver.log"))
    args = p.parse_args(argv)
    t = breakdown(args.root)
    served = served_cpu(args.jobserver_log)
    for rule in t.index:  # a forked job's CPU was its child's, not the measured client's
        if rule in served:
            t.loc[rule, "cpu_s"] += served[rule]
    print("| rule | jobs | wall s (sum) | wall s (mean) | CPU s |\n|---|---:|---:|---:|---:|")
    for rule, r in t.iterrows():
        print(f"| {rule} | {int(r.jobs)} | {r.wall_s:.1f} | {r.mean_s:.1f} | {r.cpu_s:.1f} |")
    total = t["wall_s"].sum()
    print(f"\njobs' wall time, summed: {total:.0f} s")
    if args.wall:
        print(f"whole run: {args.wall:.0f} s on {args.cores} cores; the jobs kept "
              f"{total / (args.wall * args.cores):.0%} of the core-time busy")
    return 0
