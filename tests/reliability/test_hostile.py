"""Hostile input: a checkpoint that is a malicious pickle; a mirror that redirects elsewhere.

(Archives with ../, absolute paths, links out of the target, device files: tests/test_extract.py.
Labels with HTML and LaTeX special characters in both reports: tests/test_report_browser.py.)
"""
from __future__ import annotations

import os

import pytest
import torch

from clipbench.data.download import DownloadError, download, redirect_policy
from clipbench.engine import checkpoint
from tests._fakedata import digests
from tests._httpservers import serve_folder, serve_scripted


class _Payload:
    """Unpickling this runs a shell command: what a checkpoint from a stranger may hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_checkpoint_is_refused_unrun(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"model": {}, "spec_hash": "x", "evil": _Payload(marker)}, path)
    with pytest.raises(RuntimeError, match=rf"(?s)cannot load checkpoint {path}.*posix.system.*delete it"):
        checkpoint.load(path)
    assert not marker.exists(), "the pickle's code ran"


@pytest.fixture
def mirrors(tmp_path):
    """The file on a real server, and a mirror whose URL redirects to it on another host name."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.tar").write_bytes(os.urandom(5000))
    with serve_folder(www) as target:
        elsewhere = target.url.replace("127.0.0.1", "localhost") + "a.tar"
        with serve_scripted({"a.tar": ("redirect", elsewhere)}) as redirecting:
            yield redirecting + "a.tar", digests(www / "a.tar"), target


def test_redirect_to_another_host_is_refused_by_default(tmp_path, mirrors):
    url, sums, target = mirrors
    with pytest.raises(DownloadError) as err:
        download("a.tar", [url], tmp_path / "out", sha256=sums["sha256"], retries=0, progress=False)
    assert "redirect to http://localhost:" in str(err.value) and "cross_origin_redirects" in str(err.value)
    assert target.requests == [] and not (tmp_path / "out" / "a.tar").exists()


def test_redirect_to_another_host_is_followed_when_the_config_allows(tmp_path, mirrors):
    url, sums, target = mirrors
    with redirect_policy(True):
        got = download("a.tar", [url], tmp_path / "out", sha256=sums["sha256"], retries=0, progress=False)
    assert got.stat().st_size == sums["size"] and len(target.requests) == 1


def test_redirect_policy_is_a_dataset_key_off_by_default(default_config):
    from clipbench import config as cfgmod

    cfg = cfgmod.validate(default_config)
    assert cfg["datasets"]["voc2012"]["cross_origin_redirects"] is False
    assert cfg["datasets"]["div2k"]["cross_origin_redirects"] is False


def test_endless_body_stops_at_the_pinned_size(tmp_path):
    """A mirror that sends no Content-Length and never ends: the download stops at the pinned
    size with a message about the file, not the network, and leaves nothing on disk."""
    chunk = os.urandom(64 << 10)
    with serve_scripted({"a.tar": ("endless", chunk)}) as url:
        with pytest.raises(DownloadError) as err:
            download("a.tar", [url + "a.tar"], tmp_path / "out", size=1 << 20, sha256="0" * 64,
                     retries=0, progress=False, timeout=5)
    msg = str(err.value)
    assert "more than the pinned 1048576 bytes of a.tar" in msg and "endless body" in msg
    assert not list((tmp_path / "out").iterdir())  # no part file, no final file


def test_announced_size_beyond_the_pin_is_refused_before_writing(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.tar").write_bytes(os.urandom(5000))
    with serve_folder(www) as server:
        with pytest.raises(DownloadError) as err:
            download("a.tar", [server.url + "a.tar"], tmp_path / "out", size=4000, sha256="0" * 64,
                     retries=0, progress=False)
    assert "announces 5000 bytes for a.tar, more than its pinned size of 4000" in str(err.value)
    assert not list((tmp_path / "out").iterdir())


def test_stalled_body_times_out(tmp_path):
    """Half the body, then silence: the download gives up after `timeout` seconds per read
    instead of hanging, and keeps the part for a later resume."""
    import time

    data = os.urandom(3 << 20)
    with serve_scripted({"a.tar": ("stall", data)}) as url:
        t0 = time.monotonic()
        with pytest.raises(DownloadError) as err:
            download("a.tar", [url + "a.tar"], tmp_path / "out", size=len(data), sha256="0" * 64,
                     retries=0, progress=False, timeout=1)
        waited = time.monotonic() - t0
    assert waited < 20, waited
    assert "timed out" in str(err.value) or "timeout" in str(err.value).lower(), str(err.value)
    assert (tmp_path / "out" / "a.tar.part").exists()


def test_checkpoint_of_another_layout_names_the_file(tmp_path):
    """A checkpoint whose spec hash matches but whose model is another (copied by hand, or
    written by another code version): one line naming the file and what to do."""
    from clipbench.engine.checkpoint import Progress, restore, save_run

    path = tmp_path / "checkpoint.pt"
    save_run(path, {"model": torch.nn.Linear(4, 3)}, Progress(step=5), "hash")
    with pytest.raises(RuntimeError) as err:
        restore(path, {"model": torch.nn.Sequential(torch.nn.Linear(4, 3))}, "hash", print)
    msg = str(err.value)
    assert msg.startswith(f"{path}: its model state does not fit this run's model")
    assert "Delete it to start the run afresh" in msg and "\n" not in msg
