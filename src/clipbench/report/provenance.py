"""What made the report: commit, config, data, software and hardware, so a reader can redo it."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import yaml

from clipbench import files


def git_state(cwd: str | Path = ".") -> dict:
    """The commit checked out in ``cwd`` and whether tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None, "note": "not a git checkout"}
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"commit": None, "dirty": None, "note": f"git unavailable: {exc}"}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def config_digest(config: dict) -> str:
    """sha256 of the config as canonical JSON (sorted keys): equal configs, equal digests."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def manifest_digests(paths) -> list[dict]:
    """sha256 of each prepared dataset's manifest.json (it lists the data's files and sizes)."""
    out = []
    for path in sorted(Path(p) for p in paths or []):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: dataset manifest not found (run `clipbench prepare`)")
        m = files.read_json(path)
        out.append({"dataset": m.get("dataset") or path.parent.name, "path": str(path),
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "source": m.get("source")})
    return out


def hardware(versions: dict) -> dict:
    """The report machine's CPU, and the GPU the runs recorded (the report needs no torch)."""
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "gpu (runs)": versions.get("gpu"), "cuda (runs)": versions.get("cuda")}


def provenance(config: dict | None, manifests, versions: dict, cwd: str | Path = ".") -> dict:
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(cwd),
        "config_sha256": config_digest(config) if config is not None else None,
        "config_yaml": yaml.safe_dump(config, sort_keys=False) if config is not None else None,
        "manifests": manifest_digests(manifests),
        "versions": versions,
        "hardware": hardware(versions),
    }
