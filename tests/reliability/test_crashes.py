"""Crashes: SIGKILL at the worst moments of a checkpoint write, a download, an extraction and a
report; the rerun completes and nothing half-written counts as done.

(SIGKILL of a training job at a random step: tests/test_resume.py. SIGKILL of the whole
`snakemake`: test_workflow_faults.py.)
"""
from __future__ import annotations

import hashlib
import os

import torch

from clipbench.data.download import download
from clipbench.data.extract import safe_extract
from clipbench.engine import checkpoint
from tests._archives import is_extracted, listing, make_tar
from tests._httpservers import serve_folder, serve_scripted
from tests.reliability._kill import kill_at_stall, kill_when


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint.save(path, {"step": 1, "w": torch.ones(4096)})
    # The child writes half of the next checkpoint's bytes, then is killed.
    kill_at_stall(f"""
        import torch
        from clipbench.engine import checkpoint
        def half_then_stall(f, data):  # the serialised checkpoint's bytes, written to the file
            with open(f, "wb") as out:
                out.write(bytes(data)[: len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            stall()
        checkpoint._write = half_then_stall
        checkpoint.save({str(path)!r}, {{"step": 2, "w": torch.zeros(4096)}})
    """, tmp_path)
    state = checkpoint.load(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(4096))
    # The next write goes through; the dead writer's temporary file is hidden and ignored.
    checkpoint.save(path, {"step": 2})
    assert checkpoint.load(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == ["checkpoint.pt"]


def test_kill_during_download_then_rerun_resumes_and_verifies(tmp_path):
    data = os.urandom(3 << 20)  # > 1 MiB, the downloader's chunk: part of it reaches the disk
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "archives"
    part = dest / "a.tar.part"
    with serve_scripted({"a.tar": ("stall", data)}) as url:
        kill_when(f"""
            from clipbench.data.download import download
            download("a.tar", [{url + "a.tar"!r}], {str(dest)!r}, sha256={sha!r}, progress=False)
        """, lambda: part.exists() and part.stat().st_size > 0, "a partial download on disk")
    assert not (dest / "a.tar").exists(), "a partial download counts as done"
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.tar").write_bytes(data)
    with serve_folder(www) as server:
        got = download("a.tar", [server.url + "a.tar"], dest, sha256=sha, progress=False)
    assert got.read_bytes() == data and not part.exists()
    assert server.requests_for("a.tar")[0].range == f"bytes={1 << 20}-"  # resumed, not restarted


def test_kill_during_extraction_then_rerun_extracts_everything(tmp_path):
    files = {f"top/f{i}.txt": bytes([65 + i]) * 1000 for i in range(8)}
    archive = make_tar(tmp_path / "a.tar", files)
    dest = tmp_path / "out"
    kill_at_stall(f"""
        import clipbench.data.extract as E
        real_check, seen = E.check_tar_member, []
        def check_then_stall(member, label):
            seen.append(member.name)
            if len(seen) == 5:
                stall()
            return real_check(member, label)
        E.check_tar_member = check_then_stall
        E.safe_extract({str(archive)!r}, {str(dest)!r})
    """, tmp_path)
    assert not is_extracted(archive, dest)
    assert not (dest / "top").exists(), "half an archive looks extracted"
    safe_extract(archive, dest)
    assert listing(dest) == [".extracted-a.tar", "top", *sorted(files)]
    assert all((dest / n).read_bytes() == b for n, b in files.items())


def test_kill_while_rendering_the_report_keeps_the_last_one(tmp_path, monkeypatch):
    from clipbench.report import collect, render
    from tests._reportfixture import fake_run

    runs = [fake_run(tmp_path / "runs", "classification", m, 0) for m in ("sgd", "adam")]
    summary = tmp_path / "summary.csv"
    collect.collect(runs, summary)
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("the last complete report")
    # The child dies halfway through writing the page (after the figures).
    kill_at_stall(f"""
        import pathlib
        real_write = pathlib.Path.write_text
        def half_then_stall(self, text, *a, **k):
            if "index.html" in self.name:  # the temporary file, or the page itself
                real_write(self, text[: len(text) // 2], *a, **k)
                stall()
            return real_write(self, text, *a, **k)
        pathlib.Path.write_text = half_then_stall
        from clipbench.cli import main
        main(["report", "--summary", {str(summary)!r}, "--out", {str(out)!r}])
    """, tmp_path)
    assert (out / "index.html").read_text() == "the last complete report"
    monkeypatch.setattr(render, "_pdflatex", lambda tex: None)  # the PDF is not what is tested
    render.build_report(summary, out)
    page = (out / "index.html").read_text()
    assert page.rstrip().endswith("</html>") and "data:image/png;base64," in page


def test_atomic_writes_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    """Power loss is not a kill: without fsync, a renamed file can come back empty. The bytes
    are synced before the rename and the directory after it (results, checkpoints, downloads)."""
    from clipbench import files

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "results" / "metrics.json"
    files.write_json(target, {"ok": 1})
    [rename] = [i for i, e in enumerate(events) if e[0] == "replace"]
    tmp = events[rename][1]
    assert ("fsync", tmp) in events[:rename], events
    assert ("fsync", str(target.parent)) in events[rename + 1:], events
    assert files.read_json(target) == {"ok": 1}
