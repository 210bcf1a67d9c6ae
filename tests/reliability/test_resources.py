"""Resources: a full disk while results are written. (Two `snakemake` at once on one folder:
test_workflow_faults.py.)"""
from __future__ import annotations

import resource
import subprocess
import sys

from clipbench.report import collect
from tests.reliability._kill import env
from tests.test_report import _fake_run


def _file_size_limit(limit: int):
    def apply():
        # Writing past RLIMIT_FSIZE fails with EFBIG, as a full disk fails with ENOSPC.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_writing_the_summary(tmp_path):
    runs = [_fake_run(tmp_path / "runs", "classification", m, s) for m in ("sgd", "adam") for s in range(4)]
    summary = tmp_path / "summary.csv"
    collect.collect(runs[:1], summary)
    before = summary.read_bytes()
    metrics = {r: (r / "metrics.json").read_bytes() for r in runs}
    proc = subprocess.run([sys.executable, "-m", "clipbench.cli", "collect", "--out", str(summary),
                           *[str(r / "metrics.json") for r in runs]], env=env(), capture_output=True,
                          text=True, preexec_fn=_file_size_limit(len(before) + 100), timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"cannot write {summary}" in last and "File too large" in last and "left as it was" in last
    # Earlier results intact, no half-written file beside them.
    assert summary.read_bytes() == before
    assert all((r / "metrics.json").read_bytes() == m for r, m in metrics.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "summary.csv"]
