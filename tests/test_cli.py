"""The command line as a user meets it: every option explained, every --help working, and an
error that is the user's to fix as one message (the traceback only on request)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from clipbench import cli

MISSING_IMAGENET = {"source": "archives", "archives": "/nonexistent/imagenet"}


def _subcommands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_every_option_has_help():
    parser, commands = _subcommands()
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in commands.items() for a in sp._actions
               if a.help is None and not isinstance(a, argparse._HelpAction)]
    missing += [str(a.option_strings) for a in parser._actions
                if a.help is None and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    assert not missing, missing


@pytest.mark.parametrize("argv", [[name, "--help"] for name in _subcommands()[1] if name != "bench"] +
                         [["bench", what, "--help"] for what in cli.BENCHMARKS] + [["--help"]])
def test_every_help_works(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_bench_without_a_benchmark_lists_them(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(what in out for what in cli.BENCHMARKS)
    assert cli.main(["bench"]) == 2


def _run(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "clipbench.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_domain_error_is_one_message_and_debug_shows_the_traceback(tmp_path):
    argv = ["prepare", "imagenet100", "--json", json.dumps(MISSING_IMAGENET), "--out", str(tmp_path / "p")]
    plain = _run(*argv)
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("clipbench prepare: ") and "/nonexistent/imagenet" in plain.stderr
    assert "clipbench --debug" in plain.stderr
    debug = _run("--debug", *argv)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ImageNetError" in debug.stderr


def test_an_unknown_task_for_the_cost_estimate_is_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "cost", "--tasks", "foo"])
    assert exit_.value.code == 2 and "--tasks: foo not in run.tasks" in capsys.readouterr().err


def test_a_failed_run_is_recorded_from_its_spec_file(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"task": "classification", "method": "sgd", "seed": 2}))
    log = tmp_path / "seed2.log"
    log.write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    run = tmp_path / "run"
    assert cli.main(["record-failure", "--spec", str(spec), "--out", str(run), "--exit-code", "1",
                     "--log", str(log)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["task"], metrics["method"], metrics["seed"], metrics["status"]) == ("classification", "sgd", 2, "failed")
    said = "classification/sgd/seed2 FAILED (exit code 1): RuntimeError: CUDA out of memory"
    assert said in capsys.readouterr().err and said in log.read_text()
    # A divergence the user asked to stop on is not recorded: its exit code stops the workflow.
    assert cli.main(["record-failure", "--spec", str(spec), "--out", str(tmp_path / "r3"), "--exit-code", "3"]) == 3
    assert not (tmp_path / "r3").exists()
