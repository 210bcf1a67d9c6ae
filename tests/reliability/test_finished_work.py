"""Finished work is kept and one bad run does not stop the others (issue 25, items 1 and 2),
through `snakemake` as a user runs it: a run whose training crashes and another that diverges
beside a good one; then the crashed run retried; then every setting that changes no number
changed, with zero steps retrained."""
from __future__ import annotations

import json

import pytest
import yaml

from clipbench.config import deep_merge
from clipbench.spec import NEUTRAL_ENGINE_KEYS
from tests.reliability._faulty import FLAG
from tests.reliability._workflow import checkout, output, snakemake

RUNS = "results/runs/classification"
# SGD at lr 1e4 diverges within a few steps; "crashy" raises a simulated CUDA out-of-memory
# error at its second step while crash.flag exists; Adam trains through.
CONFIG = {"run": {"methods": ["sgd", "adam", "crashy"]},
          "noise": {"enabled": True, "method": "sgd"},
          "tasks": {"classification": {"methods": {
              "sgd": {"lr": 1.0e4}, "adam": {"batch_multiplier": 1},
              "crashy": {"optimizer": "tests.reliability._faulty:CrashAtStep", "lr": 0.01}}}}}
# Each neutral key with a value other than the one the workflow ran with.
NEUTRAL = {"threads": 2, "num_workers": 1, "gpus": 1, "fail_on_divergence": True, "checkpoint_every_steps": 5,
           "dvclive": True, "loaders": {"classification": {"num_workers": 2}}, "keep_checkpoints": "final",
           "tensorboard": True, "jobserver": False}


def _metrics(repo, method) -> dict:
    return json.loads((repo / RUNS / method / "seed0/metrics.json").read_text())


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    repo = checkout(tmp / "repo", CONFIG)
    env = {"PYTHONPATH": str(repo)}  # the jobs import tests.reliability._faulty from the checkout
    (repo / FLAG).write_text("crash\n")
    first = snakemake(repo, timeout=900, env=env)
    state = {"first": first, "report": (repo / "report/index.html").read_text() if first.returncode == 0 else "",
             "failed": _metrics(repo, "crashy") if first.returncode == 0 else None,
             "noise": json.loads((repo / "results/noise/classification/noise.json").read_text())
             if first.returncode == 0 else None}
    state["checkpoints_after_failure"] = sorted(p.parent.parent.name for p in (repo / RUNS).glob("*/seed0/checkpoint.pt"))
    state["plan_after_failure"] = snakemake(repo, "-n", env=env)
    (repo / FLAG).unlink()
    state["retry"] = snakemake(repo, timeout=900, env=env)
    state["plan_after_retry"] = snakemake(repo, "-n", env=env)
    return repo, env, state


@pytest.mark.slow
def test_a_failed_and_a_diverged_run_leave_a_report_that_names_them(workflow):
    repo, _, state = workflow
    assert state["first"].returncode == 0, output(state["first"])[-4000:]
    failed = state["failed"]
    assert failed["status"] == "failed" and "CUDA out of memory (simulated" in failed["failure"]["error"]
    assert "classification/crashy/seed0 FAILED" in output(state["first"])  # said on the terminal
    top = state["report"].split('id="summary"')[0]  # the banner above the first section
    assert "Not in the numbers" in top
    assert "Failed, left out of every number: Classification (ImageNet-100, ResNet-18) / crashy / seed 0; failed: RuntimeError: CUDA out of memory" \
        in top.replace("&#39;", "'"), top[-3000:]
    assert "Diverged" in top and "SGD / seed 0" in top
    # The noise at the end of training: measured at the first run that finished, saying why not SGD's.
    noise = state["noise"]
    assert noise["reference"]["run"] == "classification/adam/seed0"
    assert noise["reference"]["skipped"][0]["why"].startswith("diverged at step")


@pytest.mark.slow
def test_the_failed_run_is_retried_and_then_left_alone(workflow):
    repo, _, state = workflow
    plan = output(state["plan_after_failure"])
    assert "results/runs/classification/crashy/seed0/metrics.json" in plan
    for done in ("sgd", "adam"):
        assert f"results/runs/classification/{done}/seed0/metrics.json" not in plan.split("Job stats")[-1], plan
    assert state["retry"].returncode == 0, output(state["retry"])[-4000:]
    assert _metrics(repo, "crashy")["status"] == "ok"
    assert _metrics(repo, "crashy")["timing"]["resumed_at_steps"], "the retry did not resume from its checkpoint"
    assert "Nothing to be done" in output(state["plan_after_retry"]), output(state["plan_after_retry"])[-3000:]
    assert "Not in the numbers" in (repo / "report/index.html").read_text()  # SGD still diverged
    # engine.keep_checkpoints: needed (the demo config's): only what a later step needs is kept,
    # the failed run's until its retry finished, then only the run the noise was measured at.
    assert state["checkpoints_after_failure"] == ["adam", "crashy"]
    assert sorted(p.parent.parent.name for p in (repo / RUNS).glob("*/seed0/checkpoint.pt")) == ["adam"]


def _stamps(repo) -> dict:
    return {p.relative_to(repo).as_posix(): p.stat().st_mtime_ns
            for p in sorted((repo / "results").rglob("*")) if p.is_file() and "logs" not in p.parts}


@pytest.mark.slow
def test_settings_that_change_no_number_retrain_nothing(workflow):
    repo, env, state = workflow
    assert state["retry"].returncode == 0, output(state["retry"])[-4000:]
    tiny = yaml.safe_load((repo / "tiny.yaml").read_text())
    assert set(NEUTRAL) == set(NEUTRAL_ENGINE_KEYS)
    changes = {key: {"engine": {key: value}} for key, value in NEUTRAL.items()}
    changes["resources"] = {"resources": {"mem_mb": 123, "runtime": 7, "job": {"mem_mb": 99}}}
    for key, change in changes.items():
        (repo / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(tiny, change)))
        plan = snakemake(repo, "-n", env=env)
        assert plan.returncode == 0 and "Nothing to be done" in output(plan), f"{key}:\n{output(plan)[-3000:]}"
    # All at once, for real: not one file of results/ (checkpoints included) is rewritten.
    everything = {"engine": {k: v for k, v in NEUTRAL.items() if k not in ("gpus", "dvclive")}, **changes["resources"]}
    (repo / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(tiny, everything)))
    before = _stamps(repo)
    again = snakemake(repo, env=env)
    assert again.returncode == 0, output(again)[-3000:]
    assert _stamps(repo) == before


def test_pruning_keeps_the_checkpoints_a_later_step_needs(tmp_path):
    from clipbench import files, runfiles

    runs = {}
    for name, status in (("ok", "ok"), ("reference", "ok"), ("failed", "failed"), ("diverged", "diverged"),
                         ("running", None)):
        run = runs[name] = tmp_path / name
        run.mkdir()
        (run / "checkpoint.pt").write_bytes(b"x" * 100)
        if status:
            files.write_json(run / "metrics.json", {"status": status})
    freed = runfiles.prune_checkpoints(list(runs.values()), keep={runs["reference"]})
    left = sorted(p.parent.name for p in tmp_path.glob("*/checkpoint.pt"))
    # Kept: the one asked for, a failed run's (its retry resumes from it), a run still without results.
    assert left == ["failed", "reference", "running"] and freed == 200
