"""Kill a child process at a chosen point: the child's code calls ``stall()`` where the fault
should hit; ``stall()`` says so through a file and blocks, and the parent sends SIGKILL.

No sleeps: the parent polls for the file with a deadline, so the kill lands exactly there.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests._polling import wait_for

SRC = str(Path(__file__).resolve().parents[2] / "src")
ROOT = str(Path(__file__).resolve().parents[2])

PRELUDE = '''
import os, pathlib, threading
def stall():
    pathlib.Path(os.environ["CLIPBENCH_TEST_READY"]).write_text("stalled")
    threading.Event().wait()  # until SIGKILL
'''


def env(**extra) -> dict:
    out = dict(os.environ)
    # The child imports this checkout's clipbench and tests helpers, whatever is pip-installed.
    out["PYTHONPATH"] = os.pathsep.join([SRC, ROOT, out.get("PYTHONPATH", "")])
    out.update(extra)
    return out


def kill_when(code: str, ready, what: str, timeout: float = 60, **extra_env) -> str:
    """Run ``code`` in a child; SIGKILL it once ``ready()`` is true. Returns the child's stderr."""
    script = PRELUDE + textwrap.dedent(code)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env(**extra_env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        try:
            wait_for(ready, timeout, what, proc)
        except AssertionError as exc:
            proc.kill()
            raise AssertionError(f"{exc}; the child said:\n{proc.communicate()[1][-3000:]}") from None
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return err


def kill_at_stall(code: str, tmp_path: Path, timeout: float = 60) -> str:
    """Run ``code`` (which calls ``stall()``) in a child; SIGKILL it once it stalls."""
    ready = tmp_path / "child-stalled"
    ready.unlink(missing_ok=True)
    return kill_when(code, ready.exists, "the child to reach the fault point", timeout,
                     CLIPBENCH_TEST_READY=str(ready))
