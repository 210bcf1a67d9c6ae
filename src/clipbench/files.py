"""Atomic writes: a reader never sees a half-written file, a crash never leaves one."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private (0600); results should have the usual permissions.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        durable_replace(tmp, path)
    except OSError as exc:
        if exc.errno in _FULL:
            # Python's own message names neither the file nor what is left of it.
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror} (the disk, quota or file size "
                                     f"limit is full); {path} was left as it was. Free space and rerun") from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def durable_replace(src: str | Path, dst: str | Path) -> None:
    """``os.replace`` that survives a power loss: the file's bytes reach the disk before the
    rename, and the rename (the directory entry) after it. Without the first fsync a crash can
    leave ``dst`` empty; without the second, ``dst`` can come back as it was before."""
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and rerun the step that writes it") from exc
