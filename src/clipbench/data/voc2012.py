"""PASCAL VOC 2012 segmentation, optionally with SBD, in the official layouts.

VOC as ``ROOT/VOCdevkit/VOC2012/…`` and SBD as ``benchmark.tgz`` unpacks,
``ROOT/benchmark_RELEASE/dataset/…``. ``prepare`` makes one ready from a source (the
embedded synthetic set, a download, or a folder already on disk); ``trainaug_files`` lists
the augmented training set the segmentation task trains on when SBD is there.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from clipbench.data import DatasetLayoutError, sources, synthetic
from clipbench.data.download import ARCHIVES, fetch_files

NAME = "voc2012"
VOC_SUBDIRS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
SBD_SUBDIRS = ("img", "cls")
SBD_LISTS = ("train.txt", "val.txt")


def real_size(cfg: dict) -> tuple[int, int, str]:
    """(training images, validation images, where the numbers come from) of the real dataset
    that ``cfg`` (``datasets.voc2012``, with or without SBD) describes, without it."""
    if cfg["sbd"]:
        return 10_582, 1_449, "VOC 2012 + SBD 'trainaug' / VOC val"
    return 1_464, 1_449, "VOC 2012 segmentation train / val"


def prepare(cfg: dict, out: Path, source: str, root: Path | None, **options) -> dict:
    """Make VOC 2012 (and SBD where ``cfg["sbd"]``) ready under ``out``; returns the manifest.

    ``options`` go to ``fetch_voc2012`` (``checksums``, ``progress``, ...: tests).
    """
    sbd = bool(cfg.get("sbd", False))
    if source == "synthetic":
        manifest = synthetic.build(out, lambda tmp: synthetic.make_voc2012(tmp, **cfg.get("synthetic", {})))
    elif source == "root":
        check_voc_root(root)
        if sbd:
            check_sbd_root(root)  # fail now, not at the first training run
        manifest = {"root": str(root)}
    elif source == "download":
        fetch_voc2012(out / "data", sbd=sbd, mirrors=cfg.get("mirrors") or None,
                      archive_dir=sources.archive_dir(NAME, cfg), **options)
        manifest = {"root": "data"}
    else:
        raise ValueError(f"datasets.{NAME}.source: unknown source {source!r}")
    manifest.update(dataset=NAME, source=source)
    # Synthetic VOC has no SBD part, whatever the config says.
    manifest["sbd"] = sbd and source in ("download", "root")
    return manifest


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


def data_files(root, manifest: dict) -> list[str]:
    """What the segmentation loader reads (relative to ``root``): the split lists of
    ``ImageSets/Segmentation`` and the image and mask of every id they name; with SBD, its
    ``train.txt``, ``val.txt`` and ``train_noval.txt`` and the image and ``.mat`` of their ids.
    An id twice in one list is refused: torchvision's reader would train on it twice."""
    root = Path(root)
    voc = "VOCdevkit/VOC2012"
    parts = [(voc, sorted((root / voc / "ImageSets" / "Segmentation").glob("*.txt")),
              "JPEGImages/{}.jpg", "SegmentationClass/{}.png")]
    if manifest.get("sbd"):
        sbd = "benchmark_RELEASE/dataset"
        lists = [root / sbd / n for n in (*SBD_LISTS, "train_noval.txt") if (root / sbd / n).is_file()]
        parts.append((sbd, lists, "img/{}.jpg", "cls/{}.mat"))
    out = []
    for base, lists, image, mask in parts:
        for path in lists:
            out.append(str(path.relative_to(root)))
            ids = _read_ids(path)
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            if twice:
                raise DatasetLayoutError(f"{path}: ids listed twice ({', '.join(twice[:5])}); each image once, "
                                         f"or training reads it twice. Remove the repeats")
            out.extend(f"{base}/{pattern.format(i)}" for i in ids for pattern in (image, mask))
    return out


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image list not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def trainaug_files(voc: Path, sbd: Path, train_split: str = "train", val_split: str = "val"):
    """The "trainaug" training set: VOC 2012 ``train`` plus SBD ``train`` and ``val``, minus
    every VOC 2012 ``val`` image, each image once.

    With the real sets this is 10,582 images, the augmented set of DeepLab (Chen et al.) and
    most later VOC papers. SBD's own val overlaps VOC val, so the subtraction is what keeps
    validation images out of training. Where an image is in both VOC train and SBD, VOC's
    image and PNG mask are used (the official annotation; SBD's differs at object borders).
    Returns ``(ids, images, masks, n_from_sbd)``, ids sorted.
    """
    lists = voc / "ImageSets" / "Segmentation"
    held_out = set(_read_ids(lists / f"{val_split}.txt"))
    pairs: dict[str, tuple[str, str]] = {}
    for i in _read_ids(lists / f"{train_split}.txt"):
        if i not in held_out:
            pairs[i] = (str(voc / "JPEGImages" / f"{i}.jpg"), str(voc / "SegmentationClass" / f"{i}.png"))
    n_voc = len(pairs)
    for i in _read_ids(sbd / "train.txt") + _read_ids(sbd / "val.txt"):
        if i not in held_out and i not in pairs:
            pairs[i] = (str(sbd / "img" / f"{i}.jpg"), str(sbd / "cls" / f"{i}.mat"))
    ids = sorted(pairs)
    return ids, [pairs[i][0] for i in ids], [pairs[i][1] for i in ids], len(pairs) - n_voc
