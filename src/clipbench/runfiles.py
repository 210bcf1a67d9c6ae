"""What a run folder holds, in names both its writer (the engine) and its readers (the
report, DVC's views) use; importable without torch.

``history.csv`` has one row per recorded value (``HISTORY_FIELDS``); ``metrics.json``'s
``final`` (:func:`final_metrics`) and ``telemetry`` (:func:`run_telemetry`) are read from it.
"""
import csv
import io
import json
import re
import shutil
import signal
import time
import uuid
from pathlib import Path

from clipbench import files

# Where the runs are, spelled once: the workflow's rules (wildcards), collect and the report.
RUNS_DIR = "results/runs"
RUN_NAME = "{task}/{method}/seed{seed}"  # a run's name: its folder under RUNS_DIR, its log's
RUN_DIR = f"{RUNS_DIR}/{RUN_NAME}"


def run_name(task: str, method: str, seed) -> str:
    return RUN_NAME.format(task=task, method=method, seed=seed)


def run_dir(task: str, method: str, seed) -> str:
    return RUN_DIR.format(task=task, method=method, seed=seed)


METRICS_JSON = "metrics.json"
HISTORY_CSV = "history.csv"
CHECKPOINT = "checkpoint.pt"
HISTORY_FIELDS = ("step", "epoch", "split", "metric", "value")
# Splits of history.csv whose rows are the task's metrics (the others: "train_step" losses).
# "val_x": a method whose output is not its gradient point (SSTM: y) is also evaluated at x.
TASK_SPLITS = ("train", "val", "val_x")
# Rows of split "train" that describe the optimizer, not the task: the epoch's clipping
# statistics (ClipStats in engine/telemetry.py) and the learning rate.
CLIP_METRICS = ("clip_fraction", "clip_scale_mean", "clip_entry_fraction")
TELEMETRY_METRICS = CLIP_METRICS + ("lr",)
# A training job that failed (crashed, killed) records it here and in a metrics.json of status
# "failed", so that the workflow goes on and the report is made from the runs that finished.
FAILURE_JSON = "failure.json"
# Written from the run's files; removed with them by `clipbench rerun`.
RUN_FILES = (METRICS_JSON, HISTORY_CSV, CHECKPOINT, FAILURE_JSON)
# The live views of the history (engine/tracking.py), when the engine's settings ask for them.
DVCLIVE_DIR = "dvclive"
TENSORBOARD_DIR = "tensorboard"
RUN_DIRS = (DVCLIVE_DIR, TENSORBOARD_DIR)


# -- history.csv and what metrics.json reads from it -----------------------------------------------

def history_row(step: int, epoch: int, split: str, metric: str, value: float) -> dict:
    """One row of ``history.csv`` (a dict with ``HISTORY_FIELDS``)."""
    return {"step": step, "epoch": epoch, "split": split, "metric": metric, "value": value}


def history_csv(rows: list[dict]) -> str:
    """``history.csv``'s text: the header, then ``rows``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def final_metrics(history: list[dict]) -> dict:
    """``metrics.json``'s ``final``: the task metrics of the last completed epoch, by split
    (for a diverged run: its last finite ones; ``{}`` before the first epoch end)."""
    rows = [r for r in history if r["split"] in TASK_SPLITS and r["metric"] not in TELEMETRY_METRICS]
    if not rows:
        return {}
    last_epoch = max(r["epoch"] for r in rows)
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["epoch"] == last_epoch:
            out.setdefault(r["split"], {})[r["metric"]] = r["value"]
    return out


def run_telemetry(history: list[dict]) -> dict[str, float]:
    """The whole run's optimizer telemetry: the last learning rate, and the mean of the
    epochs' clipping statistics (every epoch has as many steps)."""
    lr: dict[str, float] = {}
    by: dict[str, list[float]] = {}
    for r in history:
        if r["split"] == "train" and r["metric"] == "lr":
            lr["lr"] = r["value"]
        elif r["split"] == "train" and r["metric"] in CLIP_METRICS:
            by.setdefault(r["metric"], []).append(r["value"])
    return {**lr, **{k: sum(v) / len(v) for k, v in by.items()}}


def failure_id(run_dir) -> str:
    """The id of the run's last recorded failure, "" if none. The train rule has it as a param:
    a new failure changes it, so the next `snakemake` tries the run again (resuming from its
    checkpoint), while the run that then finishes keeps it and is not redone."""

    try:
        return str(json.loads((Path(run_dir) / FAILURE_JSON).read_text())["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _last_error(log_text: str) -> str:
    """The line a person would read first: the last exception line ("RuntimeError: …"), else
    the last line."""

    lines = [li.strip() for li in log_text.splitlines() if li.strip() and not li.startswith((" ", "\t"))]
    raised = [li for li in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b:?", li)]
    return (raised or lines or [""])[-1]


def record_failure(run_dir, task: str, method: str, seed: int, exit_code: int, log=None) -> dict:
    """Record that the run's training job ended with ``exit_code``: ``failure.json`` and a
    ``metrics.json`` of status "failed" (its ``history.csv`` kept, or written empty)."""

    run_dir = Path(run_dir)
    text = ""
    if log is not None and Path(log).is_file():
        text = Path(log).read_text(errors="replace")
    error = _last_error(text)
    if exit_code > 128:
        try:
            name = signal.Signals(exit_code - 128).name
        except ValueError:
            name = f"signal {exit_code - 128}"
        why = {"SIGKILL": " (out of memory, or a scheduler's kill?)", "SIGTERM": " (cancelled or preempted)"}
        error = f"killed by {name}{why.get(name, '')}" + (f"; last log line: {error}" if error else "")
    failure = {"id": uuid.uuid4().hex[:12], "exit_code": int(exit_code), "error": error or f"exit code {exit_code}",
               "log": str(log) if log else None, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    files.write_json(run_dir / FAILURE_JSON, failure)
    if not (run_dir / HISTORY_CSV).exists():
        files.write_text(run_dir / HISTORY_CSV, history_csv([]))
    metrics = {"task": task, "method": method, "seed": int(seed), "status": "failed", "failure": failure,
               "final": {}, "epochs": None, "steps": None}
    files.write_json(run_dir / METRICS_JSON, metrics)
    return metrics


def forget(run_dir) -> list[str]:
    """Delete a run's results and checkpoint, so that its next job trains from step 0."""

    run_dir, removed = Path(run_dir), []
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
            removed.append(name)
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
            removed.append(name + "/")
    return removed


def prune_checkpoints(runs, keep: set) -> int:
    """Delete the ``checkpoint.pt`` of every run folder in ``runs`` but those in ``keep`` and
    the failed ones (their retry resumes from it); the bytes freed."""

    freed = 0
    for run in map(Path, runs):
        ckpt = run / CHECKPOINT
        if run in keep or not ckpt.is_file():
            continue
        try:
            status = json.loads((run / METRICS_JSON).read_text()).get("status")
        except (OSError, ValueError):
            continue  # no results yet: the checkpoint is all there is of the run
        if status == "failed":
            continue
        freed += ckpt.stat().st_size
        ckpt.unlink()
    return freed
