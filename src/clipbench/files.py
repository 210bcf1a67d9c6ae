"""Atomic writes: a reader never sees a half-written file, a crash never leaves one."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from clipbench.errors import ClipbenchError

_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DiskFullError(ClipbenchError, OSError):
    """Writing failed because the disk, a quota or the file size limit is full (``errno``
    kept). Its message names the file, the file system and its free bytes, and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


def disk_full_error(path: str | Path, exc: OSError, *, doing: str = "writing", hint: str | None = None,
                    state: str = "") -> DiskFullError:
    """One clear error for ``exc`` (ENOSPC, EFBIG or EDQUOT) met while ``doing`` ``path``:
    "disk full while writing <path> ...: <mount point> has N bytes free; free space there or
    <hint>". Python's own message ("[Errno 27] File too large") names neither."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    hint = hint or (f"move {folder} to a disk with room (a symbolic link to a folder there is "
                    f"followed)")
    return DiskFullError(exc.errno, (
        f"disk full while {doing} {path} ([Errno {exc.errno}] {exc.strerror}: the disk, a quota or the "
        f"file size limit is full){'; ' + state if state else ''}. The file system of {folder} "
        f"(mounted at {mount}) has {free}: free space there or {hint}, and rerun"))


@contextmanager
def disk_full_named(path: str | Path, **how) -> Iterator[None]:
    """Within the block, a full disk is a :class:`DiskFullError` naming ``path`` (see
    :func:`disk_full_error`; ``how`` goes to it); other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            raise disk_full_error(path, exc, **how) from exc
        raise


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
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            # Python's own message names neither the file nor what is left of it.
            raise disk_full_error(path, exc, state=f"{path} was left as it was") from exc
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


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def file_sha256(path, st: os.stat_result | None = None) -> str:
    """sha256 of a file's bytes; a file unchanged since (size, time) is hashed once per process
    (prepare's file list and the DIV2K cache both hash the same PNGs)."""
    path = str(path)
    st = st or os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        with open(path, "rb") as f:
            _HASHES[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _HASHES[key]
