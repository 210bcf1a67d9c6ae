"""Fetch the public datasets in their real layout: download, verify, extract.

Archives land in ``dest/archives/`` (the folder DVC tracks) and are extracted into
``dest`` exactly as the official archives unpack.  Everything already done is skipped:
verified archives are not downloaded again and extracted ones are not re-extracted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clipbench.data import sources
from clipbench.data.download import download, mirror_urls
from clipbench.data.extract import safe_extract

ARCHIVES = "archives"

VOC_SUBDIRS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
DIV2K_SUBDIRS = (
    "DIV2K_train_HR",
    "DIV2K_valid_HR",
    "DIV2K_train_LR_bicubic/X4",
    "DIV2K_valid_LR_bicubic/X4",
)


class DatasetLayoutError(RuntimeError):
    """A dataset folder does not have the expected layout."""


def fetch_files(dataset: str, dest, *, mirrors=None, checksums=None, progress=True,
                retries=5, backoff=1.0, timeout=60, archive_dir=None) -> list[Path]:
    """Download and verify every pinned file of ``dataset`` into ``dest/archives/``.

    ``mirrors`` (a list of base URLs) replaces the pinned bases of every file.
    ``checksums`` maps a file name to ``{"md5"|"sha256"|"size": value}`` and replaces
    that file's pinned values; it exists for tests and for a user's own re-packed copy.
    Archives marked for extraction are safe-extracted into ``dest``.
    """
    dest = Path(dest)
    archive_dir = Path(archive_dir) if archive_dir is not None else dest / ARCHIVES
    if isinstance(mirrors, str):  # a single URL written without a YAML list
        mirrors = [mirrors]
    paths = []
    for spec in sources.files(dataset):
        name = spec["name"]
        expected = {k: spec.get(k) for k in ("md5", "sha256", "size")}
        if checksums and name in checksums:
            expected = {k: checksums[name].get(k) for k in ("md5", "sha256", "size")}
        bases = list(mirrors) if mirrors else spec["mirrors"]
        path = download(
            name,
            mirror_urls(name, bases),
            archive_dir,
            **expected,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            progress=progress,
        )
        if spec.get("extract"):
            safe_extract(path, dest, progress=progress)
        paths.append(path)
    return paths


def fetch_voc2012(dest, mirrors=None, sbd=False, *, sbd_mirrors=None, checksums=None,
                  progress=True, retries=5, backoff=1.0, timeout=60, archive_dir=None) -> Path:
    """PASCAL VOC 2012 into ``dest/VOCdevkit/VOC2012``; with ``sbd``, SBD into
    ``dest/benchmark_RELEASE/dataset`` (plus its ``train_noval.txt`` there).
    Returns the VOC2012 folder."""
    dest = Path(dest)
    archive_dir = Path(archive_dir) if archive_dir is not None else dest / ARCHIVES
    opts = dict(checksums=checksums, progress=progress, retries=retries, backoff=backoff,
                timeout=timeout, archive_dir=archive_dir)
    fetch_files("voc2012", dest, mirrors=mirrors, **opts)
    voc = check_voc_root(dest)
    if sbd:
        fetch_files("sbd", dest, mirrors=sbd_mirrors, **opts)
        sbd_root = dest / "benchmark_RELEASE" / "dataset"
        if not sbd_root.is_dir():
            raise DatasetLayoutError(
                f"{archive_dir / 'benchmark.tgz'} did not unpack to {sbd_root}; "
                f"delete the archive and its marker {dest / '.extracted-benchmark.tgz'} "
                f"and fetch again."
            )
        # torchvision's SBDataset and most code expect the split next to the other lists.
        split = sbd_root / "train_noval.txt"
        if not split.exists():
            tmp = split.with_name(split.name + ".tmp")
            shutil.copyfile(archive_dir / "train_noval.txt", tmp)
            os.replace(tmp, split)
    return voc


def fetch_div2k(dest, mirrors=None, *, checksums=None, progress=True, retries=5,
                backoff=1.0, timeout=60, archive_dir=None) -> Path:
    """DIV2K HR train/valid and bicubic x4 LR into ``dest`` as the official zips unpack."""
    dest = Path(dest)
    fetch_files("div2k", dest, mirrors=mirrors, checksums=checksums, progress=progress,
                retries=retries, backoff=backoff, timeout=timeout, archive_dir=archive_dir)
    return check_div2k_root(dest)


def check_voc_root(root) -> Path:
    """``root/VOCdevkit/VOC2012`` when it has the segmentation layout; else a clear error."""
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    missing = [str(voc / sub) for sub in VOC_SUBDIRS if not (voc / sub).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{root} is not a PASCAL VOC 2012 folder: missing {', '.join(missing)}. "
            f"Point datasets.voc2012.root at the folder that contains VOCdevkit/, or "
            f"let `clipbench prepare` download it."
        )
    return voc


SBD_SUBDIRS = ("img", "cls")
SBD_LISTS = ("train.txt", "val.txt")


def check_sbd_root(root) -> Path:
    """``root/benchmark_RELEASE/dataset`` (SBD as ``benchmark.tgz`` unpacks) when it has
    ``img/``, ``cls/``, ``train.txt`` and ``val.txt``; else a clear error naming what is missing."""
    sbd = Path(root) / "benchmark_RELEASE" / "dataset"
    if not sbd.is_dir():
        raise DatasetLayoutError(
            f"datasets.voc2012.sbd is true but SBD is not at {sbd}. Unpack SBD's benchmark.tgz "
            f"next to VOCdevkit/ (so {sbd} holds img/, cls/, train.txt, val.txt), let "
            f"`clipbench prepare` download it, or set sbd: false."
        )
    missing = [str(sbd / sub) for sub in SBD_SUBDIRS if not (sbd / sub).is_dir()]
    missing += [str(sbd / name) for name in SBD_LISTS if not (sbd / name).is_file()]
    if missing:
        raise DatasetLayoutError(f"{sbd} is not an SBD folder: missing {', '.join(missing)}")
    return sbd


def check_div2k_root(root) -> Path:
    """``root`` when it has the DIV2K HR and bicubic x4 folders; else a clear error."""
    root = Path(root)
    missing = [str(root / sub) for sub in DIV2K_SUBDIRS if not (root / sub).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{root} is not a DIV2K folder: missing {', '.join(missing)}. Point "
            f"datasets.div2k.root at the folder that contains DIV2K_train_HR/ etc., or let "
            f"`clipbench prepare` download it."
        )
    return root
