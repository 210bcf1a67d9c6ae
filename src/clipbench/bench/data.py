"""``clipbench bench data``: is the input pipeline fast enough to keep a GPU busy?

It measures, on this machine, (1) how fast ImageNet-sized JPEGs are pre-resized (images/s
per core) and (2) how many training images/s the classification loader delivers with N
workers, from the original and from the pre-resized tree. The images are natural photos
(scikit-image's samples) cut to the size of a typical ImageNet JPEG (about 500x375).
(3) For super-resolution, training patches/s per core from DIV2K-sized PNG pairs (2040x1356
HR, photos with sensor-like noise so they compress like DIV2K's ~4-5 MB files) and from
their decoded cache, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets

from clipbench.data.div2k import build_cache
from clipbench.data.imagenet100 import resize_tree
from clipbench.data.standins import DIV2K_HR, make_div2k_like, make_jpegs
from clipbench.tasks.classification import transforms
from clipbench.tasks.superres import DIV2K

# ResNet-18 training at batch 32 on one current data-centre GPU (A100/H100, AMP,
# channels_last) runs at roughly 2,500-3,000 images/s; the loader must keep up with that.
GPU_IMAGES_PER_S = 2500


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


def patch_rate(dataset, seconds: float, start: int = 0) -> float:
    """Training samples (random patch, flips) per second of one core, for about ``seconds``."""
    t0, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - t0 < seconds:
        dataset[(start + n) % len(dataset)]
        n += 1
    return n / (time.perf_counter() - t0)


def superres_rows(tmp: Path, images: int, seconds: float, patch: int = 48, rounds: int = 5) -> list[str]:
    make_div2k_like(tmp / "div2k", images)
    t0 = time.perf_counter()
    build_cache(tmp / "div2k", tmp / "cache", workers=1, progress=False)
    decode = 2 * (images + 1) / (time.perf_counter() - t0)
    kw = dict(train=True, patch_size=patch, repeat=20)
    png = DIV2K(tmp / "div2k", "train", **kw)
    npy = DIV2K(tmp / "div2k", "train", cache=tmp / "cache", **kw)
    torch.manual_seed(0)
    png[0], npy[0]  # first touch (file cache, imports) outside the timing
    # Alternating short rounds, medians: a shared machine's drift hits both paths alike.
    rates = [(patch_rate(png, seconds / rounds, r), patch_rate(npy, seconds / rounds, r)) for r in range(rounds)]
    png_rate, npy_rate = (statistics.median(r[i] for r in rates) for i in (0, 1))
    ratio = statistics.median(c / p for p, c in rates)
    size = sum(p.stat().st_size for p in (tmp / "div2k" / "DIV2K_train_HR").glob("*.png")) / images / 1e6
    return [
        f"| super-resolution: decode into the cache (prepare), HR {DIV2K_HR[0]}x{DIV2K_HR[1]} PNG "
        f"~{size:.1f} MB + LR, 1 process | {decode:8.1f} images/s | per core |",
        f"| super-resolution: {patch}-px LR patches from the PNGs | {png_rate:8.1f} patches/s | per core |",
        f"| super-resolution: {patch}-px LR patches from the decoded cache | {npy_rate:8.1f} patches/s | per core |",
        f"| super-resolution: cache / PNG (median of {rounds} alternating rounds) | {ratio:8.0f}x | |",
    ]


def classification_rows(tmp: Path, images: int, batches: int, workers: list[int]) -> list[str]:
    make_jpegs(tmp / "orig", images)
    rows = []
    for w in sorted({1, os.cpu_count() or 1}):
        rate = resize_tree(tmp / "orig", tmp / f"resized{w}", shorter_side=256, quality=90, workers=w,
                           progress=False)
        rows.append(f"| pre-resize to 256 px, {w} process(es) | {rate:8.1f} | {rate / w:8.1f} per core |")
    for tree, label in ((tmp / "orig" / "train", "original ~500x375"), (tmp / "resized1" / "train", "pre-resized 256")):
        for w in workers:
            rate = loader_rate(tree, w, batches)
            rows.append(f"| loader, {label}, {w} worker(s) | {rate:8.1f} | {rate / GPU_IMAGES_PER_S:6.2f}x of a GPU's need |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipbench bench data", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=["classification", "superres"], default=["classification", "superres"])
    p.add_argument("--images", type=int, default=256, help="ImageNet-sized JPEGs to make")
    p.add_argument("--batches", type=int, default=12, help="batches timed per loader setting")
    p.add_argument("--workers", type=int, nargs="+", default=sorted({0, 1, os.cpu_count() or 1}))
    p.add_argument("--sr-images", type=int, default=3, help="DIV2K-sized PNG pairs to make")
    p.add_argument("--seconds", type=float, default=5.0, help="time per super-resolution path")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as in a loader worker: one core per worker
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "classification" in args.tasks:
            rows += classification_rows(Path(tmp), args.images, args.batches, args.workers)
        if "superres" in args.tasks:
            rows += superres_rows(Path(tmp), args.sr_images, args.seconds)
    print(f"{os.cpu_count()} CPU core(s); ResNet-18 at batch 32 on one modern GPU needs about {GPU_IMAGES_PER_S} images/s\n")
    print("| what | rate | |\n|---|---:|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
