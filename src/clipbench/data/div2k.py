"""DIV2K x4 super-resolution in the layout the official zips unpack to.

``ROOT/DIV2K_{train,valid}_HR/<id>.png`` and ``ROOT/DIV2K_{train,valid}_LR_bicubic/X4/<id>x4.png``.
``prepare`` makes it ready from a source (the embedded synthetic set, a download, or a folder
already on disk); ``find_pairs`` lists a split's (HR, LR) images, checked.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from clipbench.data import DatasetLayoutError, sources, synthetic
from clipbench.data.download import fetch_files

NAME = "div2k"
SUBDIRS = (
    "DIV2K_train_HR",
    "DIV2K_valid_HR",
    "DIV2K_train_LR_bicubic/X4",
    "DIV2K_valid_LR_bicubic/X4",
)


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
    manifest.update(dataset=NAME, source=source)
    return manifest


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


def find_pairs(root: str | Path, split: str, scale: int) -> list[tuple[Path, Path]]:
    """(HR, LR) files of a DIV2K split, checked: every HR has its LR, sizes divide exactly."""
    root = Path(root)
    hr_dir = root / f"DIV2K_{split}_HR"
    lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    hrs = sorted(hr_dir.glob("*.png"))
    if not hrs:
        raise FileNotFoundError(f"{hr_dir}: no HR .png images; point datasets.div2k.root at the folder "
                                f"that holds DIV2K_{split}_HR/")
    pairs = []
    for hr in hrs:
        lr = lr_dir / f"{hr.stem}x{scale}.png"
        if not lr.is_file():
            raise FileNotFoundError(f"{lr}: missing; it is the x{scale} LR image of {hr} "
                                    f"(DIV2K names it <id>x{scale}.png in DIV2K_{split}_LR_bicubic/X{scale}/)")
        with Image.open(hr) as im:
            w, h = im.size
        if w % scale or h % scale:
            raise ValueError(f"{hr}: size {w}x{h} is not divisible by the scale {scale}; crop it to "
                             f"{w - w % scale}x{h - h % scale} (and remake its LR image)")
        with Image.open(lr) as im:
            lw, lh = im.size
        if (lw, lh) != (w // scale, h // scale):
            raise ValueError(f"{lr}: size {lw}x{lh}, expected {w // scale}x{h // scale} "
                             f"(its HR image {hr} is {w}x{h}, scale {scale})")
        pairs.append((hr, lr))
    return pairs
