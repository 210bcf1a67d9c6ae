"""The local job server (clipbench.jobserver): a command forked from it is the command a fresh
process would run (streams, directory, environment, exit status, numbers), a client that
cannot use it runs the command itself, and a cancelled client takes its job with it."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clipbench import jobserver

from tests._checkout import checkout_env
from tests._polling import wait_for
from tests._specs import classification_spec



def _env(**extra) -> dict:
    env = checkout_env(**extra)
    if jobserver.ENV not in extra:
        env.pop(jobserver.ENV, None)
    return env


def _clipbench(*args, server=None, cwd=None, env=None, **kw):
    extra = {jobserver.ENV: server} if server else {}
    return subprocess.run([sys.executable, "-m", "clipbench.cli", *map(str, args)], cwd=cwd,
                          env={**_env(**extra), **(env or {})}, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobserver")
    path, log = str(tmp / "s.sock"), tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clipbench.cli", "jobserver", "serve", "--socket", path,
                                 "--idle", "600"], env=_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: "modules in" in log.read_text(), 120, "the server to import its modules", proc)
    yield path, log
    jobserver.shutdown(path)
    proc.wait(timeout=60)
    assert proc.returncode == 0 and not os.path.exists(path), log.read_text()


def _jobs(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"job (\d+): clipbench", log.read_text())]


def test_a_forked_command_is_the_command(server, repo, tmp_path):
    path, log = server
    # Output, exit status and a path relative to the client's directory, as in-process.
    args = ("spec", "train", "--configfile", "config/config.yaml", "--task", "superres", "--method", "sgd", "--seed", "0")
    mine, served = _clipbench(*args, cwd=repo), _clipbench(*args, cwd=repo, server=path)
    assert served.returncode == mine.returncode == 0
    assert served.stdout == mine.stdout and json.loads(served.stdout)["task"] == "superres"
    assert len(_jobs(log)) >= 1
    # An error: its message on the client's stderr, its status the client's.
    bad = _clipbench("spec", "train", "--configfile", tmp_path / "missing.yaml", "--task", "superres",
                     "--method", "sgd", cwd=repo, server=path)
    assert bad.returncode != 0 and "missing.yaml" in bad.stderr
    # The client's environment: CLIPBENCH_DEBUG turns the message into a traceback.
    debug = _clipbench("spec", "train", "--configfile", tmp_path / "missing.yaml", "--task", "superres",
                       "--method", "sgd", cwd=repo, server=path, env={"CLIPBENCH_DEBUG": "1"})
    assert "Traceback" in debug.stderr


def test_without_a_usable_server_the_command_runs_itself(server, repo, tmp_path):
    path, log = server
    args = ("spec", "task", "--configfile", "config/config.yaml", "--task", "superres")
    before = len(_jobs(log))
    # No server at that path, then a kernel choice the server did not import under.
    for proc in (_clipbench(*args, cwd=repo, server=str(tmp_path / "none.sock")),
                 _clipbench(*args, cwd=repo, server=path, env={"ATEN_CPU_CAPABILITY": "default"})):
        assert proc.returncode == 0 and json.loads(proc.stdout)
    assert len(_jobs(log)) == before
    assert "refused spec: import-time environment differs (ATEN_CPU_CAPABILITY)" in log.read_text()


def test_a_run_forked_from_the_server_gives_the_same_numbers(server, tiny_imagenet, tmp_path):
    path, _ = server
    spec = classification_spec(epochs=2)
    for name, via in (("own", None), ("served", path)):
        proc = _clipbench("train", "--spec", json.dumps(spec), "--data", Path(tiny_imagenet["root"]).parent / "manifest.json",
                          "--out", tmp_path / name, server=via, env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "own/history.csv").read_bytes() == (tmp_path / "served/history.csv").read_bytes()
    own, served = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("own", "served"))
    assert own["final"] == served["final"] and own["spec"] == served["spec"]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_cancelled_client_takes_its_job_with_it(server, tiny_imagenet, tmp_path, how):
    path, log = server
    spec = classification_spec(epochs=500)
    before = set(_jobs(log))
    client = subprocess.Popen([sys.executable, "-m", "clipbench.cli", "train", "--spec", json.dumps(spec), "--data",
                               str(Path(tiny_imagenet["root"]).parent / "manifest.json"), "--out", str(tmp_path / "run")],
                              env=_env(**{jobserver.ENV: path}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child = wait_for(lambda: set(_jobs(log)) - before, 60, "the job to start", client).pop()
    wait_for(lambda: (tmp_path / "run").exists(), 60, "the run to start", client)
    client.send_signal(getattr(signal, how))
    rc = client.wait(timeout=60)

    def gone():
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 30, f"job {child} to end after its client's {how}")
    if how == "SIGTERM":  # forwarded: the run stops as it would on its own (128 + SIGTERM)
        assert rc == 128 + signal.SIGTERM and f"job {child}: exit {rc}" in log.read_text()
    else:
        assert f"job {child}: its client is gone" in log.read_text()
