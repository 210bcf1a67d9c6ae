"""Small offline datasets, made deterministically, in the real on-disk layouts.

They let the whole pipeline run on a laptop with no download. Each one carries a signal a
network can learn, so the curves mean something, and noise, so that it is not trivial.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from pathlib import Path
from tqdm import tqdm

from clipbench.data.imagenet import load_class_list


def _class_styles(num_classes: int, rng: np.random.Generator) -> list[dict]:
    # Orientation and colour both identify a class, so a crop or a flip keeps the label.
    angles = np.linspace(0, np.pi, num_classes, endpoint=False)
    rng.shuffle(angles)
    styles = []
    for c in range(num_classes):
        styles.append({
            "angle": float(angles[c]),
            "freq": float(rng.uniform(0.08, 0.25)),
            "color": rng.uniform(0.15, 0.85, size=3),
            "accent": rng.uniform(0.0, 1.0, size=3),
        })
    return styles


def _draw(style: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = style["angle"] + rng.normal(0, 0.12)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(style["freq"] * (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / 4 + phase)
    img = style["color"][None, None, :] * (0.75 + 0.25 * wave[..., None])
    # A blob of the class' accent colour at a random place.
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    r = rng.uniform(0.1, 0.25) * size
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
    img[blob] = 0.5 * img[blob] + 0.5 * style["accent"]
    img = img * rng.uniform(0.7, 1.2) + rng.normal(0, 0.12, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_imagenet100(out: Path, num_classes: int = 10, train_per_class: int = 40,
                     val_per_class: int = 10, image_size: int = 64, seed: int = 0) -> dict:
    """Write ``out/train/<wnid>/<wnid>_<i>.JPEG`` and ``out/val/<wnid>/ILSVRC2012_val_<n>.JPEG``.

    The wnids are the first ``num_classes`` of the thesis' class list, so file names look
    like the real ImageNet-100 (the Kaggle layout) and the same code reads both.
    """
    wnids = load_class_list("first100")[:num_classes]
    if len(wnids) < num_classes:
        raise ValueError(f"num_classes={num_classes} exceeds the {len(wnids)} known wnids")
    rng = np.random.default_rng(seed)
    styles = _class_styles(num_classes, rng)
    counts = {"train": {}, "val": {}}
    val_index = 0
    total = num_classes * (train_per_class + val_per_class)
    with tqdm(total=total, desc="imagenet100 (synthetic)", unit="img") as bar:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for c, wnid in enumerate(wnids):
                folder = out / split / wnid
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    if split == "train":
                        name = f"{wnid}_{i}.JPEG"
                    else:
                        val_index += 1
                        name = f"ILSVRC2012_val_{val_index:08d}.JPEG"
                    Image.fromarray(_draw(styles[c], image_size, rng)).save(folder / name, "JPEG", quality=90)
                    bar.update()
                counts[split][wnid] = per_class
    return {"classes": wnids, "counts": counts}
