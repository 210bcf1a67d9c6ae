"""``wait_for``: poll a condition until it holds, with a deadline, instead of sleeping a guess."""
from __future__ import annotations

import subprocess
import time


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
             interval: float = 0.01):
    """Poll ``predicate`` every ``interval`` s until it returns a true value, and return that value;
    fail naming ``what`` after ``timeout`` s, or as soon as ``proc`` (if given) has ended."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # a poll interval, not a wait for an event
    return value
