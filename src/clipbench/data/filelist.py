"""Which files a prepared dataset holds, and whether the disk still holds exactly those.

``clipbench prepare`` lists every file the task's loader reads (each dataset module's
``data_files`` says which, by the loader's own rules) in ``files.tsv`` beside the manifest:
relative path, size, modification time and sha256, one file a line, sorted. The manifest's
``files`` entry holds the list's own sha256 (so the manifest's digest covers it), the count
and ``sha256``, the digest of the data: sha256 over the sorted lines ``path<TAB>size<TAB>sha256``.

Before a run trains, ``verify`` compares the disk with the list and stops naming the files
added, removed or changed; the loaders are built from the list, not by globbing again.

The cost, chosen for ImageNet-100's 130k JPEGs (a full rehash is minutes of disk per run):
prepare hashes every file once; a run stats every file and rehashes only those whose size
is the same but modification time is not (a copied or restored tree rehashes once per run
until prepare records the new times, and says so). A change that keeps both the size and the
time (a deliberate ``touch -r``, bit rot) is not seen; ``verify(..., full=True)`` rehashes all.
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

from clipbench import files
from clipbench.errors import ClipbenchError

FILES = "files.tsv"  # beside the manifest, written before it
DIGEST_OF = "sha256 of the sorted lines 'path<TAB>size<TAB>sha256\\n' of the files the loader reads"
SHOWN = 5  # names shown per kind of difference


class DataDriftError(ClipbenchError, RuntimeError):
    """The data on disk are not those the manifest lists; the message names the difference."""


class DataLinkError(ClipbenchError, RuntimeError):
    """A data file is a link to a file outside the dataset's root."""


# ------------------------------------------------------------------ hashing


def data_digest(entries: dict[str, tuple]) -> str:
    """The digest of the data: ``entries`` maps relative path to (size, mtime_ns, sha256)."""
    h = hashlib.sha256()
    for rel in sorted(entries):
        size, _, sha = entries[rel]
        h.update(f"{rel}\t{size}\t{sha}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------ finding the files


def scan(root, candidates, log=None) -> dict[str, os.stat_result]:
    """The candidate files (paths relative to ``root``) that exist, with their stats.

    A link that leads outside ``root`` is refused (its bytes are not the dataset's and can
    change unseen); a second name for a file already taken (a link inside the root, a hard
    link) is left out with a message, so no image is read twice.
    """
    root = Path(root)
    real_root = os.path.realpath(root)
    log = log or _stderr
    out: dict[str, os.stat_result] = {}
    seen: dict[tuple[int, int], str] = {}
    outside, dupes = [], []
    dirs_ok: dict[str, bool] = {}
    for rel in sorted(set(candidates)):
        path = os.path.join(root, rel)
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            continue  # referenced but absent: the loader names it when it reads it
        parent = os.path.dirname(path)
        if parent not in dirs_ok:  # a linked class folder leads every file in it elsewhere
            dirs_ok[parent] = _inside(os.path.realpath(parent), real_root)
        if not dirs_ok[parent] or (stat.S_ISLNK(lst.st_mode) and not _inside(os.path.realpath(path), real_root)):
            outside.append(rel)
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # a broken link
        if not stat.S_ISREG(st.st_mode):
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dupes.append((rel, seen[key]))
            continue
        seen[key] = rel
        out[rel] = st
    if outside:
        raise DataLinkError(
            f"{root}: {len(outside)} data file(s) are links to files outside the dataset's root "
            f"({_names(outside)}); the dataset must hold its own files. Copy them in (`cp -rL`), or "
            f"point the dataset's root at the folder the links lead to")
    if dupes:
        shown = ", ".join(f"{a} (= {b})" for a, b in dupes[:SHOWN])
        log(f"WARNING: {root}: {len(dupes)} file(s) are second names (links) of files already listed and are "
            f"left out, so that no image is read twice: {shown}{_more(dupes)}")
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def discover(manifest: dict, log=None) -> dict[str, os.stat_result]:
    """The files the task's loader would read under the manifest's root, found on disk by
    the dataset's own rules, with their stats."""
    from clipbench.data.datasets import DATASETS  # the dataset modules, imported when needed

    name = manifest.get("dataset")
    if name not in DATASETS:
        raise ValueError(f"manifest of unknown dataset {name!r} (known: {', '.join(DATASETS)}); "
                         f"rerun `clipbench prepare`")
    root = Path(manifest["root"])
    return scan(root, DATASETS[name].data_files(root, manifest), log)


# ------------------------------------------------------------------ the list


def record(manifest: dict, out, log=None) -> dict:
    """List the files the loader of ``manifest``'s dataset reads into ``out/files.tsv``;
    returns the manifest's ``files`` entry. Every file is hashed (once, at prepare)."""
    out = Path(out)
    root = Path(manifest["root"])
    if not root.is_absolute():
        root = out / root
    found = discover({**manifest, "root": str(root)}, log)
    entries = {}
    for rel, st in found.items():
        if "\t" in rel or "\n" in rel:
            raise ValueError(f"{root / rel}: a tab or newline in a data file's name; rename the file")
        entries[rel] = (st.st_size, st.st_mtime_ns, files.file_sha256(root / rel, st))
    text = "".join(f"{rel}\t{size}\t{mtime}\t{sha}\n" for rel, (size, mtime, sha) in sorted(entries.items()))
    files.write_text(out / FILES, text)
    return {"list": FILES, "list_sha256": hashlib.sha256(text.encode()).hexdigest(), "count": len(entries),
            "sha256": data_digest(entries), "sha256_of": DIGEST_OF,
            "list_format": "path<TAB>size<TAB>mtime_ns<TAB>sha256, sorted by path"}


def read_list(manifest: dict) -> dict[str, tuple[int, int, str]] | None:
    """The manifest's file list (relative path -> (size, mtime_ns, sha256)); None for a
    manifest written before lists existed. ``load_manifest`` makes ``files.list`` absolute."""
    entry = manifest.get("files")
    if not entry:
        return None
    path = Path(entry["list"])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the file list of the prepared {manifest.get('dataset')} is missing; "
                                f"rerun `clipbench prepare {manifest.get('dataset')}`") from None
    if hashlib.sha256(data).hexdigest() != entry["list_sha256"]:
        raise DataDriftError(f"{path}: the file list does not match its manifest (edited or damaged); rerun "
                             f"`clipbench prepare {manifest.get('dataset')}`")
    out = {}
    for line in data.decode().splitlines():
        rel, size, mtime, sha = line.split("\t")
        out[rel] = (int(size), int(mtime), sha)
    return out


def listed(manifest: dict | None) -> set[str] | None:
    """The relative paths the manifest lists (what the loader may read); None without a list."""
    entries = read_list(manifest) if manifest else None
    return set(entries) if entries is not None else None


# ------------------------------------------------------------------ checking


def verify(manifest: dict, log=None, full: bool = False) -> dict:
    """Check the disk holds exactly the files the manifest lists, before a run reads them;
    returns what the run reads (for ``metrics.json``'s ``data``). Raises ``DataDriftError``
    naming the files added, removed and changed. ``full``: rehash every file (see the module)."""
    log = log or _stderr
    name = manifest.get("dataset")
    record_ = {"dataset": name, **(manifest.get("loaded_from") or {})}
    entries = read_list(manifest)
    if entries is None:
        log(f"WARNING: the {name} manifest lists no files (prepared by an older clipbench), so the data this run "
            f"reads are not checked against it; rerun `clipbench prepare {name}` to list them")
        return {**record_, "files_sha256": None, "read_sha256": None, "files": None, "checked": "no file list"}
    root = Path(manifest["root"])
    found = discover(manifest, log)
    added = sorted(set(found) - set(entries))
    removed, changed, rehashed = [], [], 0
    for rel, (size, mtime, sha) in sorted(entries.items()):
        st = found.get(rel)
        if st is None:
            removed.append(rel)
        elif st.st_size != size:
            changed.append(rel)
        elif full or st.st_mtime_ns != mtime:
            rehashed += st.st_mtime_ns != mtime
            if files.file_sha256(root / rel, st) != sha:
                changed.append(rel)
    if added or removed or changed:
        raise DataDriftError(drift_message(manifest, added, removed, changed))
    if rehashed:
        log(f"{root}: {rehashed} file(s) have new modification times; their contents were hashed and match "
            f"the manifest. Rerun `clipbench prepare {name}` to record the times and skip this hashing")
    digest = data_digest(entries)  # what was read: the listed contents, checked as above
    return {**record_, "files_sha256": manifest["files"]["sha256"], "read_sha256": digest, "files": len(entries),
            "checked": "every file's content" if full else
                       "every file's size and time; contents hashed where the time changed"}


def drift_message(manifest: dict, added, removed, changed) -> str:
    name = manifest.get("dataset")
    parts = [f"{kind} {len(rels)} ({_names(rels)})"
             for kind, rels in (("added", added), ("removed", removed), ("changed", changed)) if rels]
    where = (manifest.get("loaded_from") or {}).get("manifest", "its manifest")
    return (f"{manifest['root']}: the {name} data differ from {where}, made by `clipbench prepare`: "
            f"{'; '.join(parts)}. Nothing was trained. If the change is intended, rerun `clipbench prepare {name}` "
            f"(in the workflow: `snakemake --forcerun prepare`), else restore the files")


def _names(rels) -> str:
    return ", ".join(rels[:SHOWN]) + _more(rels)


def _more(items) -> str:
    return f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
