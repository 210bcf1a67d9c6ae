"""Keep ``data.dvc`` current: after archives are downloaded, version them with DVC."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def track(path: str | Path = "data") -> str:
    """Run ``dvc add <path>`` when it can be run, and say what was done either way."""
    path = Path(path)
    if not Path(".dvc").is_dir():
        return f"not a DVC repository (no .dvc/ here): {path} is not versioned"
    dvc = shutil.which("dvc")
    if dvc is None:
        return f"dvc is not installed: {path} is not versioned; `pip install dvc` and run `dvc add {path}`"
    if os.environ.get("DVC_STAGE") or os.environ.get("DVC_ROOT"):
        # `dvc repro` holds the repository lock while its stages run.
        return f"inside `dvc repro`: run `dvc add {path}` when it has finished to version the archives"
    if not path.is_dir():
        return f"{path} does not exist: nothing to version"
    proc = subprocess.run([dvc, "add", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc add {path}` failed:\n{proc.stdout}{proc.stderr}")
    # `dvc add` copies each new file into the cache and leaves the workspace's own copy; a
    # relink replaces that copy with a link of cache.type (.dvc/config: reflink, hard link,
    # symlink), so the archives are stored once.
    proc = subprocess.run([dvc, "checkout", "--relink", f"{path}.dvc"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc checkout --relink {path}.dvc` failed:\n{proc.stdout}{proc.stderr}")
    return f"versioned {path} in {path}.dvc; commit it (git add {path}.dvc) and `dvc push` to share the archives"
