"""Faults seen through `snakemake`, as a user runs it (the default profile applies):
a failed rule's cause on the terminal; a bad config; SIGKILL of the whole workflow; two
invocations on one folder; a diverging run among good ones."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal

import pytest

from tests._polling import wait_for
from tests.reliability._workflow import checkout, output, snakemake, start


def test_failed_rule_shows_its_cause_on_the_terminal(tmp_path):
    """A tampered archive: the terminal says which file, from where, and both checksums."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "VOCtrainval_11-May-2012.tar").write_bytes(b"not the VOC archive\n" * 100)
    repo = checkout(tmp_path / "repo", {
        "run": {"tasks": ["segmentation"]},
        "datasets": {"voc2012": {"source": "download", "mirrors": [mirror.as_uri() + "/"]}}})
    proc = snakemake(repo)
    assert proc.returncode != 0
    shown = output(proc)
    # The log's own lines, printed by Snakemake (show-failed-logs in profiles/default).
    cause = [li for li in shown.splitlines() if "does not match its pinned checksum" in li]
    assert cause, shown[-3000:]
    assert f"{mirror.as_uri()}/VOCtrainval_11-May-2012.tar" in cause[0]
    assert "md5 expected 6cd6e144f989b92b3379bac3b3de84fd, actual " in cause[0]
    assert "size expected 1999639040 bytes, actual 2000 bytes" in cause[0]


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    repo = checkout(tmp_path / "repo", {"run": {"tasks": ["classification", "detection"], "seeds": [0, 0]},
                                        "tasks": {"classification": {"epochs": "four"}}})
    proc = snakemake(repo)
    assert proc.returncode != 0
    for line in ("run.seeds: [0, 0] has non-unique elements",
                 "run.tasks.1: 'detection' is not one of ['classification', 'segmentation', 'superres']",
                 "tasks.classification.epochs: 'four' is not of type 'integer'"):
        assert line in output(proc)
    assert sorted(p.name for p in (repo / "results").iterdir()) == ["README.md"]
    assert not (repo / "prepared").exists() and not (repo / "report/index.html").exists()


# -------------------------------------------------------------------- whole workflows (slow)

# SGD at lr 1e4 diverges within a few steps; Adam is the good run beside it, one step per
# batch: 12 steps, each checkpointed (engine.checkpoint_every_steps: 1 in TINY).
DIVERGING = {"run": {"methods": ["sgd", "adam"]},
             "tasks": {"classification": {"methods": {"sgd": {"lr": 1.0e4}, "adam": {"batch_multiplier": 1}}}}}


def _run(repo, method):
    return repo / "results/runs/classification" / method / "seed0"


def _metrics(repo, method) -> dict:
    m = json.loads((_run(repo, method) / "metrics.json").read_text())
    m.pop("timing")  # wall times and where it resumed
    # Which data were read, not where this checkout keeps its manifest or when prepare ran.
    m["data"] = {k: m["data"][k] for k in ("dataset", "read_sha256", "files")}
    return m


@pytest.fixture(scope="module")
def two_at_once(tmp_path_factory):
    """A first `snakemake` that is running a job when a second one starts on the same folder."""
    tmp = tmp_path_factory.mktemp("lock")
    repo = checkout(tmp / "repo", DIVERGING)
    first = start(repo, log=tmp / "first.log")
    try:
        wait_for(lambda: (repo / "results/logs/train").exists(), 300, "the first training job", first)
        second = snakemake(repo)
        first.wait(timeout=600)
    finally:
        if first.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
    return repo, first.returncode, (tmp / "first.log").read_text(), second


@pytest.mark.slow
def test_second_snakemake_is_refused_by_the_lock_and_the_first_finishes(two_at_once):
    repo, first_rc, first_log, second = two_at_once
    assert second.returncode != 0 and "cannot be locked" in output(second), output(second)[-2000:]
    assert first_rc == 0, first_log[-3000:]
    assert (repo / "report/index.html").is_file()


@pytest.mark.slow
def test_diverging_run_is_recorded_and_the_rest_completes(two_at_once):
    repo, first_rc, first_log, _ = two_at_once
    assert first_rc == 0, first_log[-3000:]
    assert _metrics(repo, "sgd")["status"] == "diverged" and _metrics(repo, "adam")["status"] == "ok"
    html = (repo / "report/index.html").read_text()
    tex = (repo / "report/report.tex").read_text()
    assert "diverged" in html and "diverged" in tex


@pytest.mark.slow
def test_sigkill_of_snakemake_then_unlock_and_rerun_gives_the_same_metrics(two_at_once, tmp_path):
    reference = two_at_once[0]
    repo = checkout(tmp_path / "repo", DIVERGING)
    ckpt = _run(repo, "adam") / "checkpoint.pt"
    kill_after = random.randint(1, 8)  # of Adam's 12 checkpoint writes (some may be missed)
    print(f"killing snakemake and its jobs after Adam's checkpoint write #{kill_after}")
    writes, last = [0], [None]

    def written():
        try:
            stamp = ckpt.stat().st_mtime_ns, ckpt.stat().st_ino
        except FileNotFoundError:
            return False
        if stamp != last[0]:
            last[0], writes[0] = stamp, writes[0] + 1
        return writes[0] >= kill_after

    proc = start(repo, log=tmp_path / "killed.log")
    try:
        wait_for(written, 300, f"checkpoint write #{kill_after}", proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its jobs: a power cut
        proc.wait()
    assert not (_run(repo, "adam") / "metrics.json").exists()
    locked = snakemake(repo)
    assert locked.returncode != 0 and "--unlock" in output(locked)
    assert snakemake(repo, "--unlock").returncode == 0
    rerun = snakemake(repo, "--cores", "2", "--rerun-incomplete")
    assert rerun.returncode == 0, output(rerun)[-3000:]
    resumed = json.loads((_run(repo, "adam") / "metrics.json").read_text())["timing"]["resumed_at_steps"]
    assert resumed, "the Adam run started afresh instead of resuming"
    for method in ("sgd", "adam"):
        assert _metrics(repo, method) == _metrics(reference, method), method
        assert (_run(repo, method) / "history.csv").read_text() == \
            (_run(reference, method) / "history.csv").read_text()
    assert (repo / "report/index.html").is_file()
