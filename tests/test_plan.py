"""The plan is readable: each job reads its settings from a file named by their digest, so a
shell line is short, and a changed setting changes exactly the paths (params) of its jobs."""
import json
import re
import subprocess
import sys

import pytest
import yaml

from clipbench import spec
from clipbench.cli import _json_arg
from tests._checkout import run_snakemake

TRAIN = re.compile(r"clipbench train --spec (\S+) .*--out results/runs/(\S+) ")


def _train_specs(repo, *args) -> dict[str, str]:
    """run folder -> the spec file its planned train job reads."""
    proc = run_snakemake(repo, "-n", "-p", "--forceall", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {m.group(2): m.group(1) for m in TRAIN.finditer(proc.stdout)}


def test_a_changed_setting_changes_exactly_its_jobs_spec_files(checkout):
    before = _train_specs(checkout)
    assert len(before) == 45
    (checkout / "lr.yaml").write_text(yaml.safe_dump(
        {"tasks": {"superres": {"methods": {"adam": {"lr": 3e-4}}}}}))
    after = _train_specs(checkout, "--configfile", "lr.yaml")
    changed = sorted(run for run in before if before[run] != after[run])
    assert changed == [f"superres/adam/seed{s}" for s in range(3)]
    # The file holds the run's resolved settings, as `clipbench train --spec JSON` took them.
    for run in changed:
        held = json.loads((checkout / after[run]).read_text())
        assert held["method_config"]["lr"] == pytest.approx(3e-4)
        assert held == spec.without_neutral(held) and held["seed"] == int(run[-1])
    # `clipbench spec` prints what the job reads: the plan's shell line replays it by hand.
    shown = subprocess.run([sys.executable, "-m", "clipbench.cli", "spec", "train", "--configfile", "config/config.yaml",
                            "lr.yaml", "--task", "superres", "--method", "adam", "--seed", "1"], cwd=checkout,
                           capture_output=True, text=True, check=True).stdout
    assert shown == (checkout / after["superres/adam/seed1"]).read_text()
    # The settings that change no number (engine.threads) change no path: no rerun.
    (checkout / "threads.yaml").write_text(yaml.safe_dump({"engine": {"threads": 1, "checkpoint_every_steps": 7}}))
    assert _train_specs(checkout, "--configfile", "threads.yaml") == before


def test_the_thesis_plan_has_short_shell_lines_and_a_summary_under_20_kb(checkout):
    proc = run_snakemake(checkout, "-n", "-p", "--configfile", "config/thesis.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shells = [ln for ln in proc.stdout.splitlines() if ln.startswith("Shell command:")]
    assert len(shells) > 70
    assert not [ln for ln in shells if "{" in ln], "a shell line carries JSON"
    train = [ln for ln in shells if " train --spec " in ln]
    assert train and max(map(len, train)) < 600, max(train, key=len)
    summary = run_snakemake(checkout, "--summary", "--configfile", "config/thesis.yaml")
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert len(summary.stdout.encode()) < 20_000
    assert "results/runs/classification/sgd/seed0/metrics.json" in summary.stdout


def test_a_spec_file_is_named_by_its_content_and_never_rewritten(tmp_path):
    a = spec.write("train", {"b": 1, "a": [1, 2]}, "task-m-seed0", root=tmp_path)
    assert spec.write("train", {"a": [1, 2], "b": 1}, "task-m-seed0", root=tmp_path) == a  # key order
    b = spec.write("train", {"a": [1, 2], "b": 2}, "task-m-seed0", root=tmp_path)
    assert b != a and json.loads(open(a).read()) == {"a": [1, 2], "b": 1}
    assert not list(tmp_path.rglob("*.tmp*"))


def test_the_cli_reads_settings_inline_or_from_a_file(tmp_path):
    cfg = {"task": "superres", "seed": 0}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(cfg))
    assert _json_arg(str(path), "--spec") == _json_arg(json.dumps(cfg), "--spec") == cfg
    with pytest.raises(SystemExit, match=r"--spec: cannot read .*nowhere\.json"):
        _json_arg(str(tmp_path / "nowhere.json"), "--spec")
    path.write_text("[1]")
    with pytest.raises(SystemExit, match=r"--spec .*s\.json must be a JSON object"):
        _json_arg(str(path), "--spec")
