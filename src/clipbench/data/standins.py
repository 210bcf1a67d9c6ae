"""Stand-in files of the real datasets' sizes, cut from scikit-image's sample photos: what the
loader benchmark (``clipbench bench data``) and the cost estimate's loader timing read when the
real data are not here. Their pixels are natural photos, so decoding costs what it would."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")
DIV2K_HR = (2040, 1356)  # the commonest DIV2K HR size (w, h)


def make_jpegs(root: Path, n: int, classes: int = 4, size=(500, 375), seed: int = 0) -> None:
    """``n`` JPEGs of ImageNet's and VOC's typical size (crops of the photos), in ``classes``
    class folders under ``root/train``."""
    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skdata, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        photos.append(Image.fromarray(img[..., :3]).resize((size[0] * 2, size[1] * 2), Image.Resampling.BICUBIC))
    for i in range(n):
        src = photos[i % len(photos)]
        x, y = rng.integers(0, src.width - size[0]), rng.integers(0, src.height - size[1])
        d = root / "train" / f"n{i % classes:08d}"
        d.mkdir(parents=True, exist_ok=True)
        src.crop((x, y, x + size[0], y + size[1])).save(d / f"img_{i}.JPEG", "JPEG", quality=90)


def make_div2k_like(root: Path, n: int, seed: int = 0) -> None:
    """``n`` DIV2K-sized HR/LR x4 PNG pairs in DIV2K's layout (``valid`` gets one)."""
    rng = np.random.default_rng(seed)
    w, h = DIV2K_HR
    for split, count, first in (("train", n, 1), ("valid", 1, 801)):
        hr_dir, lr_dir = root / f"DIV2K_{split}_HR", root / f"DIV2K_{split}_LR_bicubic" / "X4"
        hr_dir.mkdir(parents=True)
        lr_dir.mkdir(parents=True)
        for i in range(count):
            photo = np.asarray(getattr(skdata, PHOTOS[(first + i) % len(PHOTOS)])())
            photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
            big = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
            big = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
            hr = Image.fromarray(big)
            hr.save(hr_dir / f"{first + i:04d}.png")
            hr.resize((w // 4, h // 4), Image.Resampling.BICUBIC).save(lr_dir / f"{first + i:04d}x4.png")
