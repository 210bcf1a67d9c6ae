"""A job's resolved settings as a file: what each workflow job reads, and how it is replayed.

The workflow writes each job's settings (a run's spec, a dataset's, the report's config) to
``results/specs/<kind>/<name>.<digest>.json`` and passes the path, so the plan shows short
shell lines. The digest of the content is in the name: a changed setting is a new path, which
Snakemake sees as a changed param and reruns exactly the jobs it touches, while a finished
job's own file is never rewritten (the file a job read stays what it read). The same shell
line replays any job by hand.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clipbench import files

SPEC_DIR = Path("results/specs")


def text(value) -> str:
    """The one serialisation: sorted keys, so the same settings give the same digest."""
    return json.dumps(value, sort_keys=True, indent=1) + "\n"


def write(kind: str, value, name: str = "", root: str | Path = SPEC_DIR) -> str:
    """The path of a file holding ``value``, written once (atomically) if not there yet."""
    body = text(value)
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    path = Path(root) / kind / (f"{name}.{digest}.json" if name else f"{digest}.json")
    if not path.is_file():
        # A cluster job parses the workflow again and may race another: both write the same
        # bytes, each through its own temporary file and a rename.
        files.write_text(path, body)
    return str(path)
