"""DIV2K x4 super-resolution in the layout the official zips unpack to.

``ROOT/DIV2K_{train,valid}_HR/<id>.png`` and ``ROOT/DIV2K_{train,valid}_LR_bicubic/X4/<id>x4.png``.
``prepare`` makes it ready from a source (the embedded synthetic set, a download, or a folder
already on disk); ``find_pairs`` lists a split's (HR, LR) images, checked.

The decoded cache: a training sample is one small patch of a 2K image, and decoding the whole
PNG for it costs ~100 ms of a core, so ``prepare`` decodes every image once (in parallel)
into ``<out>/cache/``: one uint8 ``H x W x 3`` ``.npy`` per PNG, at the PNG's path relative
to the root. Training memory-maps it and reads only the patch's rows. The manifest's
``cache`` records it; ``datasets.div2k.cache: false`` (or a manifest without it) keeps
reading the PNGs. Both give the same pixels.

The cache is trusted by content, not shape: its ``index.json`` holds each ``.npy``'s size and
sha256 and the sha256 of the PNG it was decoded from. ``prepare`` redecodes an image whose PNG
or cached copy differs from the index; a run checks every cached copy's bytes when it opens
the cache (the whole cache is ~8 GB for the real set, seconds of hashing against hours of
training) and stops naming a damaged or stale one.
"""
from __future__ import annotations

import mmap
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from clipbench import files
from clipbench.data import DatasetLayoutError, sources, synthetic
from clipbench.data.download import fetch_files
from clipbench.data.images import image_size, open_rgb
from clipbench.errors import ClipbenchError
from clipbench.progress import tqdm

NAME = "div2k"
SUBDIRS = (
    "DIV2K_train_HR",
    "DIV2K_valid_HR",
    "DIV2K_train_LR_bicubic/X4",
    "DIV2K_valid_LR_bicubic/X4",
)
SPLITS = ("train", "valid")
SCALE = 4  # the bicubic track that is fetched and made
CACHE = "cache"  # the decoded cache, under the prepared folder
INDEX = "index.json"  # in the cache: each copy's size and sha256, and its PNG's sha256


def real_size(cfg: dict) -> tuple[int, int, str]:
    """(training images, validation images, where the numbers come from) of the real DIV2K."""
    return 800, 100, "DIV2K train / valid"


class CacheError(ClipbenchError, RuntimeError):
    """A decoded-cache file is missing, damaged or decoded from other PNG bytes."""


def prepare(cfg: dict, out: Path, source: str, root: Path | None, **options) -> dict:
    """Make DIV2K ready under ``out``; returns the manifest.

    ``options`` go to ``fetch_div2k`` (``checksums``, ``progress``, ...: tests).
    """
    if source == "synthetic":
        manifest = synthetic.build(out, lambda tmp: synthetic.make_div2k(tmp, **cfg.get("synthetic", {})))
    elif source == "root":
        check_div2k_root(root)
        manifest = {"root": str(root)}
    elif source == "download":
        fetch_div2k(out / "data", mirrors=cfg.get("mirrors") or None,
                    archive_dir=sources.archive_dir(NAME, cfg), **options)
        manifest = {"root": "data"}
    else:
        raise ValueError(f"datasets.{NAME}.source: unknown source {source!r}")
    if cfg.get("cache", True):
        data_root = root if source == "root" else out / manifest["root"]
        manifest["cache"] = build_cache(data_root, out / CACHE, progress=options.get("progress", True))
    manifest.update(dataset=NAME, source=source)
    return manifest


# ------------------------------------------------------------------ the decoded cache


def cache_file(cache_dir, root, png) -> Path:
    """Where the decoded copy of ``png`` (a file under ``root``) lives in ``cache_dir``."""
    return Path(cache_dir) / Path(png).relative_to(root).with_suffix(".npy")


def read_rgb(path) -> np.ndarray:
    """An image file as uint8 ``H x W x 3`` RGB, as training reads it."""
    return np.asarray(open_rgb(path))


def _decode(job: tuple[Path, Path]) -> int:
    png, dst = job
    arr = read_rgb(png)
    with files.atomic_path(dst) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)  # a file object: np.save would append .npy to a path
    return dst.stat().st_size


def read_index(cache_dir) -> dict:
    """The cache's index: ``.npy`` path (relative to the cache) -> {size, sha256, source_sha256};
    empty when there is none (a cache made before indexes: every image is decoded again)."""
    path = Path(cache_dir) / INDEX
    return files.read_json(path)["files"] if path.is_file() else {}


def _is_cached(png: Path, dst: Path, entry: dict | None) -> bool:
    """A copy of ``png``'s current bytes, whole and unchanged since it was written: nothing
    to redo. Shape alone is not enough: a changed PNG of the same size, or flipped bytes in
    the copy, keep it."""
    if entry is None or not dst.is_file() or dst.stat().st_size != entry["size"]:
        return False
    return entry["source_sha256"] == files.file_sha256(png) and entry["sha256"] == files.file_sha256(dst)


def build_cache(root, cache_dir, *, scale: int = SCALE, workers: int | None = None,
                progress: bool = True) -> dict:
    """Decode every HR and LR PNG of both splits under ``root`` into ``cache_dir`` (in
    ``workers`` processes, default all cores; copies that match their PNG and the index are
    kept, the others decoded again, with a message); returns the manifest's ``cache`` entry."""
    root, cache_dir = Path(root), Path(cache_dir)
    pngs = [png for split in SPLITS for pair in find_pairs(root, split, scale) for png in pair]
    jobs = [(png, cache_file(cache_dir, root, png)) for png in pngs]
    index = read_index(cache_dir)
    key = lambda dst: dst.relative_to(cache_dir).as_posix()  # noqa: E731
    todo = [job for job in jobs if not _is_cached(*job, index.get(key(job[1])))]
    stale = [str(dst) for _, dst in todo if key(dst) in index]
    if stale:
        print(f"div2k cache: {len(stale)} decoded copies differ from their PNG or are damaged and are decoded "
              f"again: {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}", file=sys.stderr)
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="div2k decoded cache", unit="img",
              disable=not progress) as bar:
        if workers == 1:
            for job in todo:
                _decode(job)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_decode, todo, chunksize=2):
                    bar.update()
    index = {key(dst): {"size": dst.stat().st_size, "sha256": files.file_sha256(dst),
                        "source": png.relative_to(root).as_posix(), "source_sha256": files.file_sha256(png)}
             for png, dst in jobs}
    files.write_json(cache_dir / INDEX, {"files": index})
    return {"dir": CACHE, "format": "npy, uint8 H x W x 3 RGB, one per PNG at its relative path",
            "images": len(jobs), "bytes": sum(e["size"] for e in index.values()),
            "index": INDEX, "index_sha256": files.file_sha256(cache_dir / INDEX)}


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def map_cached(path, headers: dict) -> np.ndarray:
    """A read-only memory map of a cached image (uint8 H x W x 3); nothing is read until sliced.

    ``np.load(mmap_mode="r")`` parses the header with ``ast`` on every call, over half the
    cost of a patch; ``headers`` (one dict per dataset, per loader process) keeps each file's
    (offset, shape) after the first read.
    """
    head = headers.get(path)
    if head is None:
        with open(path, "rb") as f:
            shape, fortran, dtype = _NPY_HEADERS[np.lib.format.read_magic(f)](f)
            if fortran or dtype != np.uint8 or len(shape) != 3:
                raise ValueError(f"{path}: not a decoded-cache image (uint8 H x W x 3, C order); "
                                 f"delete it and rerun `clipbench prepare div2k`")
            head = headers[path] = (f.tell(), shape)
    offset, shape = head
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return np.frombuffer(buf, np.uint8, count=shape[0] * shape[1] * shape[2], offset=offset).reshape(shape)
    except ValueError as exc:  # numpy's "buffer is smaller than requested size" names no file
        raise CacheError(f"{path}: the decoded-cache file is truncated ({exc}); rerun `clipbench prepare div2k` "
                         f"to decode it again") from exc


REBUILD = "rerun `clipbench prepare div2k` to decode it again (or set datasets.div2k.cache: false to read the PNGs)"


def check_cache(cache_dir, root, pairs) -> list[tuple[Path, Path]]:
    """The cached (HR, LR) arrays of ``pairs``, each checked by content against the cache's
    index: an error naming the first one missing, damaged (size or sha256) or decoded from
    other PNG bytes. Hashes are kept per process, so the sets of one run hash each file once."""
    cache_dir = Path(cache_dir)
    index = read_index(cache_dir)
    if not index:
        raise CacheError(f"{cache_dir / INDEX}: the DIV2K cache has no index of its contents (made by an older "
                         f"clipbench, or interrupted); {REBUILD}")
    out = []
    for hr, lr in pairs:
        copies = (cache_file(cache_dir, root, hr), cache_file(cache_dir, root, lr))
        for png, npy in zip((hr, lr), copies):
            if not npy.is_file():
                raise FileNotFoundError(f"{npy}: the decoded copy of {png} is missing from the DIV2K cache; {REBUILD}")
            entry = index.get(npy.relative_to(cache_dir).as_posix())
            if entry is None:
                raise CacheError(f"{npy}: not in the DIV2K cache's index {cache_dir / INDEX}; {REBUILD}")
            size = npy.stat().st_size
            if size != entry["size"]:
                raise CacheError(f"{npy}: the decoded copy of {png} is {size} bytes, not {entry['size']} "
                                 f"(truncated or damaged); {REBUILD}")
            if files.file_sha256(npy) != entry["sha256"]:
                raise CacheError(f"{npy}: the decoded copy of {png} is damaged (its sha256 differs from the "
                                 f"cache's index); {REBUILD}")
            if files.file_sha256(png) != entry["source_sha256"]:
                raise CacheError(f"{npy}: decoded from other bytes than {png} holds now (the PNG changed after "
                                 f"prepare); {REBUILD}")
        out.append(copies)
    return out


def data_files(root, manifest: dict) -> list[str]:
    """What the superres loader reads (relative to ``root``): every PNG of the HR and bicubic
    x4 folders of both splits (``find_pairs`` pairs them; the decoded cache is checked apart)."""
    root = Path(root)
    return [f"{sub}/{entry.name}" for sub in SUBDIRS if (root / sub).is_dir()
            for entry in os.scandir(root / sub) if entry.name.endswith(".png")]


def fetch_div2k(dest, mirrors=None, *, checksums=None, progress=True, retries=5,
                backoff=1.0, timeout=60, archive_dir=None) -> Path:
    """DIV2K HR train/valid and bicubic x4 LR into ``dest`` as the official zips unpack."""
    dest = Path(dest)
    fetch_files(NAME, dest, mirrors=mirrors, checksums=checksums, progress=progress,
                retries=retries, backoff=backoff, timeout=timeout, archive_dir=archive_dir)
    return check_div2k_root(dest)


def check_div2k_root(root) -> Path:
    """``root`` when it has the DIV2K HR and bicubic x4 folders; else a clear error."""
    root = Path(root)
    missing = [str(root / sub) for sub in SUBDIRS if not (root / sub).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{root} is not a DIV2K folder: missing {', '.join(missing)}. Point "
            f"datasets.div2k.root at the folder that contains DIV2K_train_HR/ etc., or let "
            f"`clipbench prepare` download it."
        )
    return root


def find_pairs(root: str | Path, split: str, scale: int, listed: set[str] | None = None) -> list[tuple[Path, Path]]:
    """(HR, LR) files of a DIV2K split, checked: every HR has its LR, sizes divide exactly.
    ``listed``: the manifest's files (relative to ``root``); an HR image not among them is not read."""
    root = Path(root)
    hr_dir = root / f"DIV2K_{split}_HR"
    lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    hrs = sorted(hr_dir.glob("*.png"))
    if listed is not None:
        hrs = [hr for hr in hrs if hr.relative_to(root).as_posix() in listed]
    if not hrs:
        raise FileNotFoundError(f"{hr_dir}: no HR .png images; point datasets.div2k.root at the folder "
                                f"that holds DIV2K_{split}_HR/")
    pairs = []
    for hr in hrs:
        lr = lr_dir / f"{hr.stem}x{scale}.png"
        if not lr.is_file():
            raise FileNotFoundError(f"{lr}: missing; it is the x{scale} LR image of {hr} "
                                    f"(DIV2K names it <id>x{scale}.png in DIV2K_{split}_LR_bicubic/X{scale}/)")
        w, h = image_size(hr)  # names a bomb or a file that is no image
        if w % scale or h % scale:
            raise ValueError(f"{hr}: size {w}x{h} is not divisible by the scale {scale}; crop it to "
                             f"{w - w % scale}x{h - h % scale} (and remake its LR image)")
        lw, lh = image_size(lr)
        if (lw, lh) != (w // scale, h // scale):
            raise ValueError(f"{lr}: size {lw}x{lh}, expected {w // scale}x{h // scale} "
                             f"(its HR image {hr} is {w}x{h}, scale {scale})")
        pairs.append((hr, lr))
    return pairs
