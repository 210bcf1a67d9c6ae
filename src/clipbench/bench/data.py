"""``clipbench bench data``: is the input pipeline fast enough to keep a GPU busy?

It measures, on this machine, (1) how fast ImageNet-sized JPEGs are pre-resized (images/s
per core) and (2) how many training images/s the classification loader delivers with N
workers, from the original and from the pre-resized tree. The images are natural photos
(scikit-image's samples) cut to the size of a typical ImageNet JPEG (about 500x375).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata
from torch.utils.data import DataLoader
from torchvision import datasets

from clipbench.data.imagenet100 import resize_tree
from clipbench.tasks.classification import transforms

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")
# ResNet-18 training at batch 32 on one current data-centre GPU (A100/H100, AMP,
# channels_last) runs at roughly 2,500-3,000 images/s; the loader must keep up with that.
GPU_IMAGES_PER_S = 2500


def make_jpegs(root: Path, n: int, classes: int = 4, size=(500, 375), seed: int = 0) -> None:
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


def loader_rate(root: Path, workers: int, batches: int, image_size: int = 224, batch_size: int = 32) -> float:
    ds = datasets.ImageFolder(root, transform=transforms(image_size, train=True))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # workers start and warm up outside the timing
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        seen += x.shape[0]
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipbench bench data", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256, help="ImageNet-sized JPEGs to make")
    p.add_argument("--batches", type=int, default=12, help="batches timed per loader setting")
    p.add_argument("--workers", type=int, nargs="+", default=sorted({0, 1, os.cpu_count() or 1}))
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as in a loader worker: one core per worker
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "orig", args.images)
        rows = []
        for workers in sorted({1, os.cpu_count() or 1}):
            dst = tmp / f"resized{workers}"
            rate = resize_tree(tmp / "orig", dst, shorter_side=256, quality=90, workers=workers, progress=False)
            rows.append(f"| pre-resize to 256 px, {workers} process(es) | {rate:8.1f} | {rate / workers:8.1f} per core |")
        for tree, label in ((tmp / "orig" / "train", "original ~500x375"), (tmp / "resized1" / "train", "pre-resized 256")):
            for w in args.workers:
                rate = loader_rate(tree, w, args.batches)
                rows.append(f"| loader, {label}, {w} worker(s) | {rate:8.1f} | {rate / GPU_IMAGES_PER_S:6.2f}x of a GPU's need |")
    print(f"{os.cpu_count()} CPU core(s); ResNet-18 at batch 32 on one modern GPU needs about {GPU_IMAGES_PER_S} images/s\n")
    print("| what | images/s | |\n|---|---:|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
