"""The real on-disk layouts: class lists and checks that a tree is what it claims."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def class_list(name: str) -> list[str]:
    """The ImageNet-100 class list ``first100`` or ``cmc`` shipped with clipbench."""
    res = resources.files("clipbench").joinpath(f"resources/imagenet100_{name}.txt")
    if not res.is_file():
        raise ValueError(f"unknown ImageNet-100 class list {name!r} (known: first100, cmc)")
    return [line.strip() for line in res.read_text().splitlines() if line.strip() and not line.startswith("#")]


def check_imagefolder(root: Path, what: str = "datasets.imagenet100.root") -> dict:
    """Check ``root/{train,val}/<wnid>/*.JPEG`` and count images per class.

    Train and val must hold the same classes, or the label indices would disagree.
    """
    root = Path(root)
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"{what}: {split_dir} does not exist; expected the ImageNet layout "
                f"{root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG"
            )
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if not classes:
            raise FileNotFoundError(f"{what}: {split_dir} holds no class folders (<wnid>/)")
        counts[split] = {}
        for wnid in classes:
            n = sum(1 for p in (split_dir / wnid).iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
            if n == 0:
                raise FileNotFoundError(f"{what}: {split_dir / wnid} holds no images (*.JPEG)")
            counts[split][wnid] = n
    if set(counts["train"]) != set(counts["val"]):
        only = sorted(set(counts["train"]) ^ set(counts["val"]))
        raise ValueError(f"{what}: train/ and val/ hold different classes: {only[:5]}")
    return {"classes": sorted(counts["train"]), "counts": counts}
