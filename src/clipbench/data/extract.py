"""Safe, idempotent extraction of .tar, .tar.gz/.tgz and .zip archives.

Policy (one rule for every format):

* refused: absolute member paths, members with a ``..`` component, device files and
  FIFOs, and links (symbolic or hard) whose target is absolute or resolves outside the
  destination.  Links that stay inside the destination are allowed (tar only), because
  refusing them buys nothing and some real archives contain them.  Zip symlinks are
  refused outright: ``zipfile`` would write them as regular files holding the link text.
* An unsafe member aborts the whole extraction; nothing is written outside ``dest`` and
  nothing that looks complete is left inside it.

Crash safety: an archive is extracted into ``dest/.partial-<archive>/`` and its top
level entries are then renamed into ``dest``; the marker ``dest/.extracted-<archive>``
is written last.  Without the marker the extraction is redone from scratch, so a crash
at any point only costs time.  The temporary folder lives inside ``dest`` (not next to
it) so that the renames never cross a file system boundary.
"""

from __future__ import annotations

import copy
import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from clipbench import files
from clipbench.errors import ClipbenchError
from clipbench.progress import tqdm


class ArchiveError(ClipbenchError, RuntimeError):
    """An archive cannot be extracted."""


class UnsafeArchiveError(ArchiveError):
    """The archive has a member that would write outside the target or is not a plain file."""


class CorruptArchiveError(ArchiveError):
    """The archive is truncated or damaged."""


def archive_kind(path) -> str:
    """``"tar"`` or ``"zip"`` from the file name; raises for anything else."""
    name = Path(path).name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    raise ArchiveError(
        f"{path}: unsupported archive type (expected .tar, .tar.gz, .tgz or .zip)"
    )


def marker_path(archive, dest) -> Path:
    return Path(dest) / f".extracted-{Path(archive).name}"


def safe_extract(archive, dest, *, progress: bool = False, disk_hint: str | None = None) -> Path:
    """Extract ``archive`` into ``dest`` safely; a no-op when already done. Returns ``dest``.

    A full disk is a ``files.DiskFullError`` naming the archive and ``dest`` (ending with
    ``disk_hint``, what to point elsewhere); what was extracted so far is removed."""
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    marker = marker_path(archive, dest)
    if marker.is_file():
        return dest
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")

    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".partial-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by an earlier crash
    staging.mkdir()
    try:
        with files.disk_full_named(dest, doing=f"extracting {archive} into", hint=disk_hint,
                                   state="what was extracted of it is removed"):
            if kind == "tar":
                _extract_tar_file(archive, staging, progress)
            else:
                _extract_zip_file(archive, staging, progress)
            _merge_into(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files.write_text(marker, f"{archive.name}\n")
    return dest


# ---------------------------------------------------------------- member checks


def check_member_name(name: str, archive_label: str) -> PurePosixPath:
    """The member's relative path, or UnsafeArchiveError when it is absolute or climbs up."""
    normalized = name.replace("\\", "/")
    rel = PurePosixPath(normalized)
    if normalized.startswith("/") or rel.is_absolute() or _has_drive(normalized):
        raise UnsafeArchiveError(
            f"{archive_label}: refusing member {name!r} with an absolute path. "
            f"The archive is not safe to extract; get it again from a trusted mirror."
        )
    if ".." in rel.parts:
        raise UnsafeArchiveError(
            f"{archive_label}: refusing member {name!r}: its path climbs out of the "
            f"target with '..'. The archive is not safe to extract; get it again from a "
            f"trusted mirror."
        )
    return rel


def _has_drive(name: str) -> bool:
    return len(name) >= 2 and name[1] == ":" and name[0].isalpha()


def _check_link_target(member_name: str, target: str, hard: bool, archive_label: str) -> None:
    target = target.replace("\\", "/")
    if target.startswith("/") or _has_drive(target):
        raise UnsafeArchiveError(
            f"{archive_label}: refusing link {member_name!r} -> {target!r}: absolute link "
            f"target. The archive is not safe to extract."
        )
    # Hard link targets are archive paths; symlink targets are relative to the link.
    base = "" if hard else posixpath.dirname(member_name)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive_label}: refusing link {member_name!r} -> {target!r}: it points "
            f"outside the target folder. The archive is not safe to extract."
        )


def check_tar_member(member: tarfile.TarInfo, archive_label: str) -> None:
    check_member_name(member.name, archive_label)
    if member.isdev() or member.isfifo() or not (
        member.isfile() or member.isdir() or member.issym() or member.islnk()
    ):
        raise UnsafeArchiveError(
            f"{archive_label}: refusing member {member.name!r}: device files, FIFOs and "
            f"other special files are not extracted. The archive is not safe to extract."
        )
    if member.issym() or member.islnk():
        _check_link_target(member.name, member.linkname, member.islnk(), archive_label)


# ---------------------------------------------------------------- tar


def corrupt_message(archive, exc: BaseException) -> str:
    return (
        f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}). "
        f"Delete it and download it again."
    )


# Errors that mean the archive's bytes are bad.  Other OSErrors (a full disk, no
# permission) are about the target and pass through unchanged: telling the user to
# delete a good 140 GB archive because the disk is full would be wrong.
ARCHIVE_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile,
                       zipfile.BadZipFile)
_TAR_ERRORS = ARCHIVE_READ_ERRORS
# Python < 3.11.4 has no extraction filters; the member checks above still apply there.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def _extract_tar_file(archive: Path, staging: Path, progress: bool) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            extract_tar(tf, staging, str(archive), progress=progress)
    except ArchiveError:
        raise
    except _TAR_ERRORS as exc:
        raise CorruptArchiveError(corrupt_message(archive, exc)) from exc


def extract_tar(tf: tarfile.TarFile, dest, archive_label: str, *, select=None,
                rename=None, progress: bool = False) -> list[str]:
    """Extract the members of an open tar into ``dest`` after checking each one.

    ``select(member) -> bool`` skips members; ``rename(member) -> str`` gives the
    relative output path (checked again).  Returns the member names written.  Checks
    that the archive is not truncated (its end-of-archive block must be present).
    Raises UnsafeArchiveError / CorruptArchiveError; the caller cleans ``dest`` up.
    """
    dest = Path(dest)
    written: list[str] = []

    def members():
        for member in tf:
            check_tar_member(member, archive_label)
            if select is not None and not select(member):
                continue
            if rename is not None:
                renamed = copy.copy(member)
                renamed.name = rename(member)
                member = renamed
                check_tar_member(member, archive_label)
            written.append(member.name)
            yield member

    iterator = members()
    if progress:
        iterator = tqdm(iterator, desc=f"extract {Path(archive_label).name}", unit="file",
                        leave=False)
    try:
        # The 'data' filter re-checks paths, links and modes; ours runs first so that
        # absolute paths are refused instead of silently made relative.
        tf.extractall(dest, members=iterator, **_DATA_FILTER)
        check_tar_end(tf, archive_label)
    except ArchiveError:
        raise
    except _FILTER_ERROR as exc:
        raise UnsafeArchiveError(
            f"{archive_label}: {exc}. The archive is not safe to extract."
        ) from exc
    except _TAR_ERRORS as exc:
        raise CorruptArchiveError(corrupt_message(archive_label, exc)) from exc
    return written


def check_tar_end(tf: tarfile.TarFile, archive_label: str) -> None:
    # tarfile stops quietly when a tar is cut exactly between two members; a complete
    # tar always ends with a zero block right after the last member.
    tf.fileobj.seek(tf.offset)
    block = tf.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise CorruptArchiveError(
            f"{archive_label} is truncated: it ends without the end-of-archive marker. "
            f"Delete it and download it again."
        )


# ---------------------------------------------------------------- zip


def _extract_zip_file(archive: Path, staging: Path, progress: bool) -> None:
    label = str(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                check_member_name(info.filename, label)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise UnsafeArchiveError(
                        f"{label}: refusing member {info.filename!r}: symbolic links in "
                        f"zip archives are not extracted. The archive is not safe to extract."
                    )
                # Many writers store no file type at all (0): that means a regular file.
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafeArchiveError(
                        f"{label}: refusing member {info.filename!r}: not a regular file or "
                        f"folder. The archive is not safe to extract."
                    )
            if progress:
                infos = tqdm(infos, desc=f"extract {archive.name}", unit="file", leave=False)
            for info in infos:
                # Names were checked above, so zipfile's own sanitising never kicks in.
                zf.extract(info, staging)
    except ArchiveError:
        raise
    except ARCHIVE_READ_ERRORS as exc:
        raise CorruptArchiveError(corrupt_message(archive, exc)) from exc


# ---------------------------------------------------------------- moving into place


def _merge_into(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst``, merging folders that already exist."""
    for entry in os.scandir(src):
        target = dst / entry.name
        # A folder the user made a symlink (e.g. to a bigger disk) is merged into, not
        # replaced: links in dest are the user's; the archive's own links were checked.
        if entry.is_dir(follow_symlinks=False) and target.is_dir():
            _merge_into(Path(entry.path), target)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry.path, target)
