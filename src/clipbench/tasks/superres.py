"""DIV2K x4 single-image super-resolution, as the thesis' section 4.3 (MSE loss, PSNR).

Training samples are random aligned patches (an LR patch of ``patch_size`` px and the HR patch
``scale`` times larger at the same place) with random flips and 90-degree rotations, as EDSR
trains; ``repeat`` patches per image make one epoch. Validation uses the full images (batch 1,
as sizes differ) or, with ``val_crop``, the same HR center crop of each.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from clipbench.data import filelist
from clipbench.data.div2k import check_cache, check_div2k_root, find_pairs, map_cached, read_rgb
from clipbench.metrics import SuperResolutionMeter, div2k_shave
from clipbench.models.sr import bicubic_upsample, build_sr_model
from clipbench.progress import tqdm
from clipbench.tasks import Task


SPLITS = {"train": "train", "val": "valid"}
CONVENTION = ("PSNR per image, then averaged over images; output clamped to [0, 1] and rounded to 8 bits; "
              "{shave} px shaved at each border ({shave_source}); psnr: RGB, data range 1; psnr_y: BT.601 luma "
              "(Y = 16 + (65.481 R + 128.553 G + 24.966 B), RGB in [0, 1]), data range 255")


def _to_float(hwc) -> torch.Tensor:
    """uint8 H x W x 3 (a patch, after cutting) -> contiguous float C x H x W in [0, 1]."""
    # One copy into a writable C x H x W array (memory maps and PIL's arrays are read-only).
    chw = np.ascontiguousarray(np.moveaxis(hwc, -1, 0), dtype=np.uint8)
    return TF.to_dtype(torch.from_numpy(chw), torch.float32, scale=True)


class DIV2K(Dataset):
    """(LR, HR) float RGB in [0, 1]. Train: random aligned patches, flipped and rotated.

    ``cache``: the folder of the decoded cache (``manifest["cache"]["dir"]``); then images are
    memory-mapped instead of decoded, with the same pixels, draws and results.
    """

    def __init__(self, root, split: str, scale: int = 4, train: bool = False, patch_size: int = 48,
                 repeat: int = 1, val_crop: int | None = None, cache=None, listed: set[str] | None = None) -> None:
        self.pairs = find_pairs(root, split, scale, listed)  # listed: the manifest's files, no others
        # What __getitem__ reads: the PNGs, or their decoded copies.
        self.files = check_cache(cache, root, self.pairs) if cache else self.pairs
        self.scale, self.train, self.patch, self.repeat = scale, train, patch_size, repeat if train else 1
        if val_crop is not None and val_crop % scale:
            raise ValueError(f"tasks.superres.val_crop={val_crop} must be divisible by the scale {scale}")
        self.val_crop = val_crop
        self._headers: dict = {}  # the cache's .npy headers, read once per process

    def _load(self, path: Path) -> np.ndarray:
        """uint8 H x W x 3: a memory map of the decoded cache, or a PNG decoded whole."""
        return map_cached(path, self._headers) if path.suffix == ".npy" else read_rgb(path)

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        hr_path, lr_path = self.files[index % len(self.pairs)]
        hr, lr = self._load(hr_path), self._load(lr_path)
        s = self.scale
        if self.train:
            p = self.patch
            lh, lw = lr.shape[:2]
            if lh < p or lw < p:
                raise ValueError(f"{lr_path}: {lw}x{lh} is smaller than patch_size {p}; lower tasks.superres.patch_size")
            y, x = int(torch.randint(0, lh - p + 1, ())), int(torch.randint(0, lw - p + 1, ()))
            lr, hr = lr[y:y + p, x:x + p], hr[s * y:s * (y + p), s * x:s * (x + p)]
            # The eight flips/rotations of the square, the same for both; as views of the
            # uint8 H x W x 3 patch, so the one copy is _to_float's.
            if torch.rand(()) < 0.5:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            if torch.rand(()) < 0.5:
                lr, hr = lr[::-1], hr[::-1]
            if torch.rand(()) < 0.5:
                lr, hr = lr.swapaxes(0, 1), hr.swapaxes(0, 1)
            return _to_float(lr), _to_float(hr)
        if self.val_crop:
            c = self.val_crop
            h, w = hr.shape[:2]
            ch, cw = min(c, h), min(c, w)
            ch, cw = ch - ch % s, cw - cw % s
            top, left = ((h - ch) // 2) // s * s, ((w - cw) // 2) // s * s
            hr = hr[top:top + ch, left:left + cw]
            lr = lr[top // s:(top + ch) // s, left // s:(left + cw) // s]
        return _to_float(lr), _to_float(hr)


def shave_of(cfg: dict, scale: int) -> int:
    """``tasks.superres.shave``: the px dropped at each border before PSNR. null (the default):
    ``scale + 6``, the border EDSR's ``calc_psnr`` shaves on DIV2K (10 at x4)."""
    shave = cfg.get("shave")
    if shave is None:
        return div2k_shave(scale)
    if isinstance(shave, bool) or not isinstance(shave, int) or shave < 0:
        raise ValueError(f"tasks.superres.shave={shave!r} must be null (scale + 6, as EDSR on DIV2K) "
                         "or an integer >= 0")
    return shave


def convention(cfg: dict, scale: int) -> str:
    """The PSNR convention in words, with the border actually shaved."""
    source = ("scale + 6, as EDSR's calc_psnr on DIV2K" if cfg.get("shave") is None
              else "tasks.superres.shave; EDSR shaves scale + 6 on DIV2K")
    return CONVENTION.format(shave=shave_of(cfg, scale), shave_source=source)


def datasets_from(cfg: dict, manifest: dict) -> tuple[DIV2K, DIV2K]:
    root = check_div2k_root(manifest["root"])
    scale = int(cfg.get("scale", 4))
    shave, val_crop = shave_of(cfg, scale), cfg.get("val_crop")
    if val_crop is not None and val_crop <= 2 * shave:
        raise ValueError(f"tasks.superres.val_crop={val_crop} leaves no pixels once {shave} px are shaved at each "
                         f"border (tasks.superres.shave); use a crop larger than {2 * shave}")
    cache = (manifest.get("cache") or {}).get("dir")
    listed = filelist.listed(manifest)
    train_set = DIV2K(root, "train", scale, train=True, patch_size=int(cfg.get("patch_size", 48)),
                      repeat=int(cfg["repeat"]), cache=cache, listed=listed)
    val_set = DIV2K(root, "valid", scale, val_crop=cfg.get("val_crop"), cache=cache, listed=listed)
    return train_set, val_set


def bicubic_baseline(cfg: dict, manifest: dict) -> dict:
    """The validation metrics of bicubic upsampling: what a network must beat."""
    from clipbench.config import with_task_defaults

    cfg = with_task_defaults("superres", cfg)
    _, val_set = datasets_from(cfg, manifest)
    scale = val_set.scale
    meter = SuperResolutionMeter(scale, shave_of(cfg, scale))  # the trained runs' border
    for i in tqdm(range(len(val_set)), desc="bicubic baseline", unit="img", leave=False):
        lr, hr = val_set[i]
        sr = bicubic_upsample(lr[None], scale)
        meter.update(sr, hr[None], F.mse_loss(sr, hr[None]))
    return {
        "task": "superres", "method": "bicubic", "label": "bicubic (no training)", "phrase": "bicubic",
        "metrics": meter.compute(), "val_images": len(val_set), "val_crop": val_set.val_crop,
        "upsampling": "torch.nn.functional.interpolate(mode='bicubic', align_corners=False, antialias=False), clamped",
        "shave": meter.shave, "convention": convention(cfg, scale),
    }


def build(spec: dict, manifest: dict) -> Task:
    cfg = spec["task_config"]
    train_set, val_set = datasets_from(cfg, manifest)
    name = cfg.get("model", "edsr_baseline")
    return Task(
        name="superres",
        train_set=train_set,
        val_set=val_set,
        model=build_sr_model(name, train_set.scale, residual=cfg["residual"]),
        loss=nn.MSELoss(),
        new_meter=lambda: SuperResolutionMeter(train_set.scale, shave_of(cfg, train_set.scale)),
        extra={"model": name, "residual": cfg["residual"], "train_images": len(train_set.pairs), "val_images": len(val_set.pairs),
               "val_crop": val_set.val_crop, "psnr_shave": shave_of(cfg, train_set.scale),
               "psnr_convention": convention(cfg, train_set.scale)},
        # Tuning's held-out images, scored as the validation images are.
        train_eval_set=DIV2K(check_div2k_root(manifest["root"]), "train", train_set.scale, val_crop=val_set.val_crop,
                             listed=filelist.listed(manifest)),
    )


# -- without the data (the cost estimate, `clipbench bench cost`) ----------------------------------

DIV2K_TYPICAL_SIZE = (1356, 2040)  # (height, width) of a typical DIV2K HR image, validated whole


def example_model(cfg: dict, dataset_cfg: dict) -> tuple[nn.Module, nn.Module]:
    """The model and loss a run of ``cfg`` trains, built without the data."""
    return build_sr_model(cfg["model"], int(cfg["scale"]), residual=cfg["residual"]), nn.MSELoss()


def example_batch(cfg: dict, dataset_cfg: dict, batch_size: int, train: bool = True):
    """Random (LR, HR) of the shape of a training batch (``patch_size`` LR patches) or of a
    validation batch (the ``val_crop``, or a typical DIV2K image whole)."""
    s = int(cfg["scale"])
    if train:
        h = w = cfg["patch_size"]
    elif cfg["val_crop"]:
        h = w = cfg["val_crop"] // s
    else:
        h, w = (side // s for side in DIV2K_TYPICAL_SIZE)
    return torch.rand(batch_size, 3, h, w), torch.rand(batch_size, 3, h * s, w * s)


def stand_in_dataset(cfg: dict, dataset_cfg: dict, root: Path, n: int):
    """The training dataset of a run of ``cfg`` on up to 3 stand-in DIV2K-sized PNGs, decoded
    into the cache when the config caches."""
    from clipbench.data.standins import make_div2k_like
    from clipbench.data.div2k import build_cache

    make_div2k_like(root, max(1, min(n, 3)))
    cache = None
    if dataset_cfg["cache"]:
        cache = root.with_name(root.name + "_cache")
        build_cache(root, cache, workers=1, progress=False)
    return DIV2K(root, "train", int(cfg["scale"]), train=True, patch_size=int(cfg["patch_size"]), repeat=20, cache=cache)

