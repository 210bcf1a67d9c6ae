"""Resources: a full disk while results are written. (Two `snakemake` at once on one folder:
test_workflow_faults.py.)"""
from __future__ import annotations

import resource
import subprocess
import sys

from clipbench.report import collect
from tests._reportfixture import fake_run
from tests.reliability._kill import env


def _file_size_limit(limit: int):
    def apply():
        # Writing past RLIMIT_FSIZE fails with EFBIG, as a full disk fails with ENOSPC.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_writing_the_summary(tmp_path):
    runs = [fake_run(tmp_path / "runs", "classification", m, s) for m in ("sgd", "adam") for s in range(4)]
    summary = tmp_path / "summary.csv"
    collect.collect(runs[:1], summary)
    before = summary.read_bytes()
    metrics = {r: (r / "metrics.json").read_bytes() for r in runs}
    proc = subprocess.run([sys.executable, "-m", "clipbench.cli", "collect", "--out", str(summary),
                           *[str(r / "metrics.json") for r in runs]], env=env(), capture_output=True,
                          text=True, preexec_fn=_file_size_limit(len(before) + 100), timeout=120)
    assert proc.returncode != 0
    last = _message(proc.stderr)
    assert f"disk full while writing {summary} " in last, proc.stderr[-3000:]
    assert "File too large" in last and "left as it was" in last and "bytes free" in last
    # Earlier results intact, no half-written file beside them.
    assert summary.read_bytes() == before
    assert all((r / "metrics.json").read_bytes() == m for r, m in metrics.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "summary.csv"]


def test_disk_full_while_writing_a_checkpoint_names_it(tmp_path):
    """torch.save's own writer says "[enforce fail at inline_container.cc] unexpected pos" on a full
    disk; the checkpoint is serialised in memory first, so the error is the file's "disk full"."""
    ckpt = tmp_path / "run" / "checkpoint.pt"
    code = f"""
import resource, torch
from clipbench.engine import checkpoint
checkpoint.save({str(ckpt)!r}, {{"step": 1}})
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
checkpoint.save({str(ckpt)!r}, {{"step": 2, "w": torch.zeros(1 << 16)}})
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = _message(proc.stderr)
    assert f"disk full while writing {ckpt} " in last and "bytes free" in last, proc.stderr[-2000:]
    from clipbench.engine import checkpoint
    assert checkpoint.load(ckpt)["step"] == 1  # the previous one stays
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt"]


def _message(stderr: str) -> str:
    """The error's one line (the CLI prints it alone, a traceback ends with it)."""
    return next((line for line in reversed(stderr.splitlines()) if "disk full while" in line), "")


def _run_limited(code: str, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True,
                          preexec_fn=_file_size_limit(limit), timeout=120)


def test_disk_full_during_download_stops_naming_the_part(tmp_path):
    """A full disk is no network fault: no retry, no next mirror, no "connection lost"; one line
    naming the file, the free space and the config key to point elsewhere (fixed here: it was
    retried as "connection lost after N bytes (OSError)", then blamed on every mirror)."""
    data = bytes(range(256)) * 2048  # 512 KiB
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "big.zip").write_bytes(data)
    dest = tmp_path / "archives"
    code = f"""
from clipbench.data.download import download
download("big.zip", [{(tmp_path / "mirror" / "big.zip").as_uri()!r}], {str(dest)!r}, size={len(data)},
         retries=3, backoff=0.01, timeout=5, progress=False, disk_hint="point datasets.div2k.archives elsewhere")
"""
    proc = _run_limited(code, 100_000)
    assert proc.returncode != 0
    last = _message(proc.stderr)
    part = dest / "big.zip.part"
    assert f"disk full while downloading {part} " in last, proc.stderr[-3000:]
    assert "bytes free" in last and "point datasets.div2k.archives elsewhere" in last and "resumed" in last
    assert "connection lost" not in proc.stderr and "every mirror" not in proc.stderr
    assert not (dest / "big.zip").exists() and part.stat().st_size <= 100_000


def test_disk_full_during_extraction_names_the_archive_and_leaves_nothing(tmp_path):
    """(Fixed here: "OSError [Errno 27] File too large" named nothing.)"""
    import io
    import tarfile

    archive = tmp_path / "DIV2K_train_HR.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("top/a.bin", "top/b.bin"):
            info = tarfile.TarInfo(name)
            info.size = 300_000
            tf.addfile(info, io.BytesIO(bytes(info.size)))
    dest = tmp_path / "data"
    code = f"""
from clipbench.data.extract import safe_extract
safe_extract({str(archive)!r}, {str(dest)!r}, disk_hint="make data a link to a bigger disk")
"""
    proc = _run_limited(code, 100_000)
    assert proc.returncode != 0
    last = _message(proc.stderr)
    assert f"disk full while extracting {archive} into {dest} " in last, proc.stderr[-3000:]
    assert "bytes free" in last and "make data a link to a bigger disk" in last
    assert list(dest.iterdir()) == []  # no half-extracted member, no marker
