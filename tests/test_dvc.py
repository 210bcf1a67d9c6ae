"""DVC: a second machine gets the raw archives with `dvc pull`, and nothing is downloaded."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from clipbench.data.voc2012 import fetch_voc2012
from tests._checkout import scratch_checkout
from tests._fakedata import digests, make_voc_tar

VOC_TAR = "VOCtrainval_11-May-2012.tar"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _run(cwd, *cmd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc


def _dvc(cwd, *args):
    dvc = shutil.which("dvc") or sys.exit("dvc not installed")
    return _run(cwd, dvc, *args)


@pytest.mark.slow
def test_fresh_clone_pulls_archives_and_skips_download(tmp_path, http_server):
    repo = scratch_checkout(tmp_path / "repo")
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "init")
    (repo / "data" / "voc2012").mkdir(parents=True)
    tar = make_voc_tar(repo / "data" / "voc2012" / VOC_TAR)
    checksums = {VOC_TAR: digests(tar)}

    remote = tmp_path / "dvc-remote"
    _dvc(repo, "add", "data")
    _dvc(repo, "remote", "add", "-d", "store", str(remote))
    _dvc(repo, "push")
    _run(repo, "git", "add", "data.dvc", ".dvc/config")
    _run(repo, "git", "commit", "-qm", "data: archives")

    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "data" / "voc2012").exists()
    _dvc(clone, "pull")
    assert (clone / "data" / "voc2012" / VOC_TAR).read_bytes() == tar.read_bytes()

    # The data rule's fetch finds the pulled archive verified and never asks the mirror.
    voc = fetch_voc2012(clone / "prepared" / "voc2012" / "data", mirrors=[http_server.url],
                        archive_dir=clone / "data" / "voc2012", checksums=checksums, progress=False)
    assert http_server.requests == []
    assert (voc / "ImageSets" / "Segmentation" / "train.txt").exists()


def test_track_data_explains_when_it_cannot_run(tmp_path, monkeypatch):
    from clipbench.data.dvc import track

    monkeypatch.chdir(tmp_path)
    assert "not a DVC repository" in track("data")
    (tmp_path / ".dvc").mkdir()
    monkeypatch.setenv("DVC_STAGE", "prepare")
    assert "inside `dvc repro`" in track("data")


@pytest.mark.slow
def test_track_data_versions_the_archives(tmp_path, monkeypatch):
    from clipbench.data.dvc import track

    _run(tmp_path, "git", "init", "-q")
    _dvc(tmp_path, "init", "-q")
    (tmp_path / "data" / "div2k").mkdir(parents=True)
    (tmp_path / "data" / "div2k" / "DIV2K_valid_HR.zip").write_bytes(b"zip")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    _dvc(tmp_path, "config", "cache.type", "hardlink,symlink")  # reflinks cannot be told from a copy
    assert "versioned data" in track("data")
    assert "path: data" in (tmp_path / "data.dvc").read_text()
    # Stored once: the workspace's archive is a link to the cache, not a second copy.
    archive = tmp_path / "data" / "div2k" / "DIV2K_valid_HR.zip"
    assert archive.is_symlink() or archive.stat().st_nlink == 2
    assert archive.read_bytes() == b"zip"


STAGE_OUTS = ("prepared/datasets.txt", "results/summary.csv", "results/metrics.json", "results/plots/x.csv",
              "results/metrics/classification/sgd.json",
              "report/index.html", "report/report.tex", "report/claims.json")


def _status(repo) -> dict:
    return json.loads(_dvc(repo, "status", "--json", "dvc.yaml").stdout or "{}")


def test_editing_a_rule_or_the_package_changes_the_stages(tmp_path):
    """Each stage depends on what it runs: the Snakefile, the rules, the schema, the config and
    the package; an edit to any of them shows in `dvc status` (no `dvc repro` needed to see it)."""
    repo = scratch_checkout(tmp_path / "repo")
    for out in STAGE_OUTS:  # stand-ins for what the stages make, so `dvc commit` can record them
        (repo / out).parent.mkdir(parents=True, exist_ok=True)
        (repo / out).write_text("made\n")
    _run(repo, "git", "init", "-q")
    _dvc(repo, "commit", "-f", "-q", "dvc.yaml")
    assert _status(repo) == {}

    with open(repo / "workflow/rules/report.smk", "a") as f:
        f.write("\n# an edit\n")
    changed = _status(repo)
    assert set(changed) == {"prepare", "train", "report"}
    assert {"changed deps": {"workflow/rules": "modified"}} in changed["report"]

    _dvc(repo, "commit", "-f", "-q", "dvc.yaml")
    with open(repo / "src/clipbench/tasks/registry.py", "a") as f:
        f.write("\n# an edit\n")
    assert set(_status(repo)) == {"prepare", "train", "report"}
