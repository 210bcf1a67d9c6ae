"""Resumable, verified downloads over HTTP(S) with mirrors.

Guarantees: the final file appears (by rename) only after it matched every checksum
given; a half-downloaded ``<name>.part`` never counts as done and is resumed with a
``Range`` request on the next try; a user's existing file that fails verification is
never deleted for them.

A file of at least ``VERIFY_ONCE_BYTES`` (the 147 GB ILSVRC train tar, the DIV2K zips) is
hashed once: a marker beside it (``.<name>.verified.json``, ignored by DVC) records its size,
modification time and the checksums it matched, and later checks hash it again only when its
size or modification time changed or other checksums are asked for.

Not handled: two processes downloading the same file into the same folder at once
(the workflow engine never schedules that).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from clipbench import files
from clipbench.data import sources
from clipbench.data.extract import safe_extract
from clipbench.errors import ClipbenchError
from clipbench.progress import tqdm

CHUNK = 1 << 20
ARCHIVES = "archives"  # default archive folder under a dataset's destination
USER_AGENT = "clipbench-downloader/0.1 (+python urllib)"
# Client errors that will not change on a retry; 408 and 429 are "try later" and retried.
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
_MAX_SLEEP = 60.0
# Files this large are hashed once, then trusted while their size and mtime stay (see above).
VERIFY_ONCE_BYTES = 256 << 20
CHECKSUM_KEYS = ("md5", "sha256", "sha256_prefix", "size")


class DownloadError(ClipbenchError, RuntimeError):
    """Every mirror failed, or the target cannot be written."""


class ChecksumError(DownloadError):
    """A file does not match its pinned size or digest."""


# Whether a download may follow a redirect to another host or scheme (datasets.<name>.
# cross_origin_redirects, off by default): a mirror should not hand the request to a host
# the user did not name. `prepare` sets it for the dataset it prepares.
_CROSS_ORIGIN = contextvars.ContextVar("cross_origin_redirects", default=False)


@contextlib.contextmanager
def redirect_policy(cross_origin: bool):
    """Within the block, downloads follow redirects to other hosts/schemes only if ``cross_origin``."""
    token = _CROSS_ORIGIN.set(bool(cross_origin))
    try:
        yield
    finally:
        _CROSS_ORIGIN.reset(token)


def _origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect on the same host; elsewhere only where the policy allows.

    The one change of origin always followed is http -> https on the same host and the
    default ports: an upgrade, which some of the pinned hosts answer with.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        newurl = urllib.parse.urljoin(req.full_url, newurl)
        old, new = _origin(req.full_url), _origin(newurl)
        upgrade = old[0] == "http" and new[0] == "https" and old[1] == new[1] and \
            old[2] in (None, 80) and new[2] in (None, 443)
        if old != new and not upgrade and not _CROSS_ORIGIN.get():
            fp.close()
            raise _Permanent(
                f"HTTP {code} redirect to {newurl}, another host or scheme; refused "
                f"(set datasets.<name>.cross_origin_redirects: true to follow it)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Retryable(Exception):
    """A failure worth another attempt at the same URL."""


class _Permanent(Exception):
    """A failure that makes this URL useless: go to the next mirror."""


def mirror_urls(filename: str, bases: list[str]) -> list[str]:
    """The full URLs of ``filename`` on each mirror base, in order."""
    if isinstance(bases, str):
        raise TypeError(f"mirror bases must be a list of URLs, got the string {bases!r}")
    return [base.rstrip("/") + "/" + filename for base in bases]


def digests(path: str | os.PathLike, algorithms=("md5", "sha256")) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, reading it once in chunks."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def mismatches(path, md5=None, sha256=None, size=None, sha256_prefix=None) -> list[str]:
    """Human-readable differences between ``path`` and the expected values ([] = verified).

    ``sha256_prefix`` checks only the leading hex digits of the sha256, as torchvision does
    for its weights, whose file names carry the first 8 (e.g. ``vgg16-397923af.pth``).
    """
    path = Path(path)
    problems = []
    actual_size = path.stat().st_size
    if size is not None and actual_size != int(size):
        problems.append(f"size expected {int(size)} bytes, actual {actual_size} bytes")
    wanted = {name: value.lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    prefix = sha256_prefix.lower() if sha256_prefix else None
    asked = {**wanted, **({"sha256_prefix": prefix} if prefix else {})}
    if not asked or (not problems and _verified_before(path, asked)):
        return problems
    actual = digests(path, tuple(set(wanted) | ({"sha256"} if prefix else set())))
    for name, value in wanted.items():
        if actual[name] != value:
            problems.append(f"{name} expected {value}, actual {actual[name]}")
    if prefix and not actual["sha256"].startswith(prefix):
        problems.append(f"sha256 expected to start with {prefix}, actual {actual['sha256']}")
    if not problems:
        record_verified(path, asked)
    return problems


def verified_marker(path) -> Path:
    """The marker that records a large file's verification (hidden, beside it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.verified.json")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified_before(path: Path, asked: dict) -> bool:
    """True when the marker says ``path``, as it is now, already matched everything asked."""
    marker = verified_marker(path)
    if path.stat().st_size < VERIFY_ONCE_BYTES or not marker.is_file():
        return False
    try:
        record = files.read_json(marker)
    except (ValueError, OSError):
        return False  # unreadable: hash again and rewrite it
    checked = record.get("checked", {})
    return record.get("file") == _stat_key(path) and all(checked.get(k) == v for k, v in asked.items())


def record_verified(path, asked: dict) -> None:
    """Write ``path``'s marker (large files only): its size, mtime and the checksums it matched."""
    path = Path(path)
    if path.stat().st_size < VERIFY_ONCE_BYTES:
        return
    files.write_json(verified_marker(path), {"file": _stat_key(path), "checked": asked})


def verify(path, md5=None, sha256=None, size=None, sha256_prefix=None) -> bool:
    """True when ``path`` exists and matches every expected value that is given."""
    path = Path(path)
    if not path.is_file():
        return False
    # The size is free to check and rules out most bad files before hashing gigabytes.
    if size is not None and path.stat().st_size != int(size):
        return False
    return not mismatches(path, md5=md5, sha256=sha256, sha256_prefix=sha256_prefix)


def download(
    filename: str,
    urls: list[str],
    dest_dir,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    sha256_prefix: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60,
    progress: bool = True,
    disk_hint: str | None = None,
) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first of ``urls`` that works.

    ``urls`` are full URLs (see :func:`mirror_urls`), tried in order.  Each URL gets
    ``1 + retries`` attempts with exponential backoff (``backoff * 2**k`` seconds); an
    attempt that got further than any before it does not use up a retry.  Returns the
    path of the verified file. A full disk stops it at once (``files.DiskFullError``, naming
    ``<name>.part`` and ending with ``disk_hint``, e.g. the config key of ``dest_dir``).
    """
    if isinstance(urls, str):
        urls = [urls]
    dest_dir = Path(dest_dir)
    final = dest_dir / filename
    expected = dict(md5=md5, sha256=sha256, size=size, sha256_prefix=sha256_prefix)

    if _already_there(final, expected):
        return final
    if not urls:
        raise DownloadError(f"no URL to download {filename} from (the mirror list is empty)")

    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / (filename + ".part")
    failures: list[str] = []
    bad_checksum = False
    fetch_args = (part, filename, size, retries, backoff, timeout, progress, disk_hint)
    for url in urls:
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _fetch_with_retries(url, *fetch_args)
            problems = mismatches(part, **expected)
            if problems and resumed:
                # The old part may have come from another file version or mirror: one
                # fresh download from this URL before blaming it.
                part.unlink(missing_ok=True)
                _fetch_with_retries(url, *fetch_args)
                problems = mismatches(part, **expected)
        except (_Retryable, _Permanent) as exc:
            failures.append(f"{url}: {exc}")
            continue
        if problems:
            # A finished but wrong file cannot be resumed into a right one.
            part.unlink(missing_ok=True)
            bad_checksum = True
            failures.append(
                f"{url}: downloaded {filename} does not match its pinned checksum: "
                f"{'; '.join(problems)} (the bad download was deleted)"
            )
            continue
        verified_marker(part).unlink(missing_ok=True)
        files.durable_replace(part, final)
        record_verified(final, {k: v.lower() for k, v in expected.items() if v and k != "size"})
        return final

    listing = "\n  ".join(failures)
    if bad_checksum:
        raise ChecksumError(
            f"could not get a verified copy of {filename} into {dest_dir}:\n  {listing}\n"
            f"Check the mirror (it may serve a different or corrupted file) or pass another "
            f"one with datasets.<name>.mirrors; the pinned checksums stay."
        )
    raise DownloadError(
        f"every mirror failed to deliver {filename} into {dest_dir}:\n  {listing}\n"
        f"Check the network and the URLs, or set datasets.<name>.mirrors to a reachable "
        f"mirror. A partial download is kept as {part} and resumed next time."
    )


def _already_there(final: Path, expected: dict) -> bool:
    """True when ``final`` exists and verifies; a user's file that fails is an error, not deleted."""
    if not final.exists():
        return False
    problems = mismatches(final, **expected)
    if problems:
        raise ChecksumError(
            f"{final} already exists but does not match its pinned checksum: "
            f"{'; '.join(problems)}. Delete it to download again, or check the mirror "
            f"it came from."
        )
    return True


def _fetch_with_retries(url, part, filename, size, retries, backoff, timeout, progress, disk_hint=None):
    attempt = 0
    total_attempts = 0
    best = part.stat().st_size if part.exists() else 0
    while True:
        total_attempts += 1
        try:
            _fetch_once(url, part, filename, size, timeout, progress, disk_hint)
            return
        except _Permanent:
            raise
        except _Retryable as exc:
            now = part.stat().st_size if part.exists() else 0
            if now > best:
                best = now
                attempt = 0
            if attempt >= retries:
                raise _Retryable(
                    f"{exc} (gave up after {total_attempts} attempts, the last "
                    f"{attempt + 1} without progress)"
                ) from None
            time.sleep(min(backoff * (2**attempt), _MAX_SLEEP))
            attempt += 1


_KEPT = "the part downloaded so far is kept as {part} and resumed next time"


def _fetch_once(url, part, filename, size, timeout, progress, disk_hint=None):
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > int(size):
        # Longer than the real file: not a prefix of it, start over.
        part.unlink()
        offset = 0
    if size is not None and offset == int(size):
        return  # complete already; the caller verifies it

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.build_opener(_SameOriginRedirects).open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # The server has nothing past our offset: the part is complete or bogus.
            # Let verification decide; if it is bogus the caller deletes it.
            return
        if exc.code in _PERMANENT_HTTP:
            raise _Permanent(f"HTTP {exc.code} {exc.reason}") from None
        raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
    except ValueError as exc:  # a malformed URL
        raise _Permanent(str(exc)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, FileNotFoundError) or isinstance(reason, str):
            # A missing file:// path, or urllib refusing the URL: no retry will help.
            raise _Permanent(f"{type(exc).__name__}: {reason}") from None
        raise _Retryable(f"{type(reason).__name__}: {reason}") from None

    with response:
        status = getattr(response, "status", None) or 200
        start = offset
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(
                    f"server resumed at byte {start} instead of {offset}; restarting from 0"
                )
        elif offset:
            # The server ignored Range and sends the whole file: overwrite from the start.
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        limit = int(size) if size is not None else None
        if limit is not None and total is not None and total > limit:
            raise _Permanent(f"the server announces {total} bytes for {filename}, more than its pinned "
                             f"size of {limit}: not the pinned file; nothing was written")
        mode = "ab" if start else "wb"
        received, over = 0, False
        # A full disk stops the download with its own message, not as "connection lost" retried.
        with files.disk_full_named(part, doing="downloading", hint=disk_hint, state=_KEPT.format(part=part)), \
                open(part, mode) as out, tqdm(
            total=total or size,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=filename,
            disable=not progress,
            leave=False,
        ) as bar:
            try:
                while chunk := response.read(CHUNK):
                    if limit is not None and start + received + len(chunk) > limit:
                        # No Content-Length, or a wrong one: never write past the pinned size
                        # (an endless body would fill the disk).
                        over = True
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                if files.is_disk_full(exc):
                    raise
                raise _Retryable(
                    f"connection lost after {start + received} bytes ({type(exc).__name__})"
                ) from None
            finally:
                out.flush()
                os.fsync(out.fileno())
        if over:
            part.unlink(missing_ok=True)
            raise _Permanent(f"the server sent more than the pinned {limit} bytes of {filename}: not the "
                             f"pinned file (or an endless body); stopped there and deleted it")
        if length is not None and received < int(length):
            # urllib returns a short body silently when the peer closes early.
            raise _Retryable(
                f"connection closed after {start + received} of {total} bytes"
            )


def _content_range_start(header: str | None) -> int | None:
    # "bytes 100-199/200"
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None


def fetch_files(dataset: str, dest, *, mirrors=None, checksums=None, progress=True,
                retries=5, backoff=1.0, timeout=60, archive_dir=None) -> list[Path]:
    """Download and verify every pinned file of ``dataset`` into ``archive_dir``
    (default ``dest/archives``), and safe-extract those marked for extraction into ``dest``.

    Everything already done is skipped: verified archives are not downloaded again and
    extracted ones are not re-extracted. ``mirrors`` (a list of base URLs) replaces the
    pinned bases of every file. ``checksums`` maps a file name to
    ``{"md5"|"sha256"|"sha256_prefix"|"size": value}`` and replaces that file's pinned values; it exists for
    tests and for a user's own re-packed copy.
    """
    dest = Path(dest)
    archive_dir = Path(archive_dir) if archive_dir is not None else dest / ARCHIVES
    if isinstance(mirrors, str):  # a single URL written without a YAML list
        mirrors = [mirrors]
    paths = []
    for spec in sources.files(dataset):
        name = spec["name"]
        expected = {k: spec.get(k) for k in CHECKSUM_KEYS}
        if checksums and name in checksums:
            expected = {k: checksums[name].get(k) for k in CHECKSUM_KEYS}
        bases = list(mirrors) if mirrors else spec["mirrors"]
        path = download(name, mirror_urls(name, bases), archive_dir, **expected, retries=retries,
                        backoff=backoff, timeout=timeout, progress=progress,
                        disk_hint=f"point datasets.{dataset}.archives at a folder on a disk with room")
        if spec.get("extract"):
            safe_extract(path, dest, progress=progress, disk_hint=(
                f"make {dest} a symbolic link to a folder on a disk with room (or extract it there "
                f"yourself and point datasets.{dataset}.root at it)"))
        paths.append(path)
    return paths
