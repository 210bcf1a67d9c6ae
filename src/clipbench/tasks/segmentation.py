"""Pascal VOC 2012 semantic segmentation with FCN-32s on VGG16, as the thesis' section 4.2.

Data and transforms follow torchvision's segmentation reference: random resize of the
shorter side to 0.5-2x ``base_size``, horizontal flip, a ``crop_size`` random crop (the mask
padded with 255), for training; for evaluation, resize to ``base_size`` or, with
``eval_size: null``, the original resolution (the VOC protocol; then use eval_batch_size 1).
Label 255 ("void") is ignored by the loss and the metric.

Training is on VOC 2012 ``train`` (1,464 images, what the thesis names), or, when the manifest
says ``sbd: true``, on "trainaug": VOC ``train`` plus SBD ``train`` and ``val`` minus every
VOC ``val`` image (10,582 images, the set of DeepLab and most later papers). Validation is
VOC 2012 ``val`` either way.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2 as T

from clipbench.data import decoded, filelist
from clipbench.data.imagenet100 import MEAN, STD
from clipbench.data.images import CorruptImageError, open_rgb
from clipbench.data.voc2012 import check_sbd_root, check_voc_root, trainaug_files
from clipbench.metrics import IGNORE_INDEX, VOC_CLASSES, SegmentationMeter
from clipbench.models import fcn
from clipbench.tasks import Task


NUM_CLASSES = len(VOC_CLASSES)
_VALID = np.zeros(256, dtype=bool)
_VALID[:NUM_CLASSES] = True
_VALID[IGNORE_INDEX] = True


def transforms(train: bool, base_size: int, crop_size: int, eval_size: int | None):
    if train:
        ops = [
            T.RandomResize(int(0.5 * base_size), int(2.0 * base_size)),
            T.RandomHorizontalFlip(0.5),
            T.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Mask: IGNORE_INDEX, "others": 0}),
        ]
    else:
        ops = [T.Resize(eval_size)] if eval_size else []
    return T.Compose([
        *ops,
        T.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        T.Normalize(MEAN, STD),
        T.ToPureTensor(),
    ])


def _check_labels(arr: np.ndarray, path) -> np.ndarray:
    # Compare before any cast to uint8: a 300 in a .mat would otherwise wrap to a valid 44.
    arr = np.asarray(arr)
    flat = arr.astype(np.int64, copy=False)
    ok = (flat >= 0) & (flat <= 255)
    ok[ok] = _VALID[flat[ok]]
    if not ok.all():
        bad = sorted(int(v) for v in np.unique(flat[~ok]))
        raise ValueError(f"{path}: labels {bad[:10]} outside 0..{NUM_CLASSES - 1} and {IGNORE_INDEX} "
                         f"(VOC class indices; 255 = void)")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """A VOC label PNG as class indices; an error naming the file if it is not one."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: mask mode {im.mode!r}; VOC masks are palette ('P') PNGs whose pixel "
                                 f"values are class indices (0..20, 255 = void), not colour images")
            arr = np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's errors name no file
        raise CorruptImageError(f"{path}: cannot decode the mask ({exc}); replace or delete the file") from exc
    return _check_labels(arr, path)


def read_sbd_mask(path: str | Path) -> np.ndarray:
    """An SBD ``cls/<id>.mat`` as class indices (0..20; SBD has no 255 borders).

    The field path ``GTcls[0]["Segmentation"][0]`` is the one torchvision's SBDataset reads.
    """
    from scipy.io import loadmat

    try:
        arr = loadmat(path)["GTcls"][0]["Segmentation"][0]
    except Exception as e:  # scipy raises several types for a file that is not a .mat
        raise ValueError(f"{path}: not an SBD class mask (a MATLAB file with struct GTcls and its "
                         f"field Segmentation): {type(e).__name__}: {e}") from e
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.dtype.kind not in "iub":
        raise ValueError(f"{path}: GTcls.Segmentation is {arr.dtype} of shape {arr.shape}; "
                         f"expected a 2-D integer array of class indices")
    return _check_labels(arr, path)


def _decode_pair(image: str, mask: str) -> tuple[torch.Tensor, np.ndarray]:
    pixels = T.functional.pil_to_tensor(open_rgb(image))
    return pixels, read_sbd_mask(mask) if str(mask).endswith(".mat") else read_mask(mask)


def _load_pair(image: str, mask: str, transforms):
    """Image and mask as tv_tensors (masks by suffix: VOC PNG or SBD .mat), transformed together."""
    pixels, arr = decoded.CACHE.get("segmentation pair", (image, mask), lambda: _decode_pair(image, mask))
    img, target = tv_tensors.Image(pixels), tv_tensors.Mask(torch.from_numpy(arr))
    if img.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"{mask}: mask {tuple(target.shape)} and image "
                         f"{image} {tuple(img.shape[-2:])} differ in size")
    return transforms(img, target) if transforms is not None else (img, target)


class VOCSegmentation(datasets.VOCSegmentation):
    """torchvision's VOC reader (the same file lists), with masks checked and image and mask
    transformed together as tv_tensors."""

    def __getitem__(self, index: int):
        return _load_pair(self.images[index], self.masks[index], self.transforms)


class SegmentationFiles(torch.utils.data.Dataset):
    """Explicit lists of images and masks (VOC PNGs and SBD .mat files mixed), read like
    ``VOCSegmentation``; ``ids`` names each sample."""

    def __init__(self, ids: list[str], images: list[str], masks: list[str], transforms=None):
        self.ids, self.images, self.masks, self.transforms = ids, images, masks, transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return _load_pair(self.images[index], self.masks[index], self.transforms)


def only_listed(dataset, root: Path, listed: set[str] | None):
    """Keep the samples whose image and mask the manifest lists (``listed``, relative to
    ``root``): a second name of a file, left out of the list by prepare, is not read."""
    def known(path) -> bool:  # a file absent from the disk stays: reading it names it
        return Path(path).relative_to(root).as_posix() in listed or not os.path.exists(path)

    if listed is not None:
        keep = [i for i, (image, mask) in enumerate(zip(dataset.images, dataset.masks)) if known(image) and known(mask)]
        if len(keep) < len(dataset.images):
            dataset.images = [dataset.images[i] for i in keep]
            dataset.masks = [dataset.masks[i] for i in keep]
            if hasattr(dataset, "ids"):
                dataset.ids = [dataset.ids[i] for i in keep]
    return dataset


def load_pretrained(model: nn.Module, cfg: dict) -> dict:
    """Load ImageNet weights as ``pretrained`` says; never downloads (the workflow's ``weights``
    rule fetches them before the run). Returns what happened."""
    name = cfg.get("model", "fcn32s_vgg16")
    want = cfg.get("pretrained", "imagenet")
    if want in (None, "none"):
        return {"pretrained": "none", "loaded": False}
    if name != "fcn32s_vgg16":
        raise ValueError(f"tasks.segmentation.pretrained: {want!r}, but {name} has no ImageNet weights; "
                         f"set pretrained: none (or model: fcn32s_vgg16)")
    path = fcn.default_vgg16_weights() if want == "imagenet" else Path(want).expanduser()
    if path.is_file():
        fcn.load_vgg16_imagenet(model, path)
        return {"pretrained": str(path), "loaded": True}
    msg = (f"ImageNet VGG16 weights not found at {path}. Training never downloads them: fetch them "
           f"(verified) with `clipbench fetch-weights {fcn.VGG16_WEIGHTS}` or `snakemake "
           f"data/weights/{fcn.VGG16_FILE}` (or set tasks.segmentation.pretrained to the file)")
    if cfg.get("if_pretrained_missing", "fail") == "fail":
        raise FileNotFoundError(msg + ", or set tasks.segmentation.if_pretrained_missing: scratch to train "
                                      "from scratch (not the thesis' setting)")
    print(f"WARNING: {msg}. Training the encoder from scratch (if_pretrained_missing: scratch).", file=sys.stderr)
    return {"pretrained": str(path), "loaded": False, "missing": True, "fallback": "scratch"}


def new_model(cfg: dict) -> nn.Module:
    """``tasks.segmentation.model``, untrained (no ImageNet weights: see :func:`load_pretrained`)."""
    name = cfg.get("model", "fcn32s_vgg16")
    if name == "fcn32s_vgg16":
        return fcn.fcn32s_vgg16(NUM_CLASSES)
    if name == "fcn32s_tiny":
        return fcn.fcn32s_tiny(NUM_CLASSES)
    raise ValueError(f"tasks.segmentation.model: unknown model {name!r} (known: fcn32s_vgg16, fcn32s_tiny)")


def background_baseline(cfg: dict, manifest: dict) -> dict:
    """Predicting background everywhere, scored on the validation masks as the runs' metric is
    (the same eval transform, void ignored, one confusion matrix over all pixels)."""
    from clipbench.config import with_task_defaults
    from clipbench.metrics import confusion_matrix
    from clipbench.progress import tqdm

    cfg = with_task_defaults("segmentation", cfg)
    voc = check_voc_root(manifest["root"])
    eval_size = cfg.get("eval_size")
    val_set = VOCSegmentation(voc.parent.parent, year="2012", image_set=cfg.get("val_split", "val"), download=False,
                              transforms=transforms(False, int(cfg.get("base_size", 520)),
                                                    int(cfg.get("crop_size", 480)), eval_size))
    meter = SegmentationMeter(NUM_CLASSES, VOC_CLASSES, IGNORE_INDEX, per_class=False)
    for i in tqdm(range(len(val_set)), desc="background baseline", unit="img", leave=False):
        _, target = val_set[i]
        meter.cm += confusion_matrix(torch.zeros_like(target), target, NUM_CLASSES, IGNORE_INDEX)
        meter.n += 1
    metrics = {k: v for k, v in meter.compute().items() if k != "loss"}  # no logits, so no loss
    return {"task": "segmentation", "method": "background", "label": "background everywhere (no training)",
            "phrase": "predicting background", "metrics": metrics, "val_images": len(val_set), "eval_size": eval_size}


def build(spec: dict, manifest: dict) -> Task:
    cfg = spec["task_config"]
    voc = check_voc_root(manifest["root"])
    base, crop = int(cfg.get("base_size", 520)), int(cfg.get("crop_size", 480))
    eval_size = cfg.get("eval_size")
    root = voc.parent.parent  # torchvision wants the folder that holds VOCdevkit/
    train_split, val_split = cfg.get("train_split", "train"), cfg.get("val_split", "val")
    if manifest.get("sbd"):
        # The manifest promises SBD; a missing folder is a broken prepare, not a reason to
        # silently train on the smaller set.
        sbd = check_sbd_root(root)
        ids, images, masks, n_sbd = trainaug_files(voc, sbd, train_split, val_split)
        train_set = SegmentationFiles(ids, images, masks, transforms=transforms(True, base, crop, eval_size))
        train_eval = SegmentationFiles(ids, images, masks, transforms=transforms(False, base, crop, eval_size))
        train_info = {"train_set": f"voc_{train_split}+sbd (trainaug)", "sbd_images": n_sbd, "sbd_root": str(sbd)}
    else:
        train_set = VOCSegmentation(root, year="2012", image_set=train_split, download=False,
                                    transforms=transforms(True, base, crop, eval_size))
        train_eval = VOCSegmentation(root, year="2012", image_set=train_split, download=False,
                                     transforms=transforms(False, base, crop, eval_size))
        train_info = {"train_set": f"voc_{train_split}"}
    val_set = VOCSegmentation(root, year="2012", image_set=val_split, download=False,
                              transforms=transforms(False, base, crop, eval_size))
    listed = filelist.listed(manifest)
    train_set, train_eval, val_set = (only_listed(d, root, listed) for d in (train_set, train_eval, val_set))
    name = cfg.get("model", "fcn32s_vgg16")
    model = new_model(cfg)
    info = load_pretrained(model, cfg)
    return Task(
        name="segmentation",
        train_set=train_set,
        val_set=val_set,
        model=model,
        loss=nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX),
        new_meter=lambda: SegmentationMeter(NUM_CLASSES, VOC_CLASSES, IGNORE_INDEX,
                                            per_class=cfg.get("per_class_iou", True)),
        extra={"model": name, **info, **train_info, "train_images": len(train_set), "val_images": len(val_set)},
        train_eval_set=train_eval,  # tuning's held-out images, scored as the validation images are
    )


# -- without the data (the cost estimate, `clipbench bench cost`) ----------------------------------

VOC_TYPICAL_SIZE = (375, 500)  # (height, width) of a typical VOC image, as eval_size: null evaluates it


def example_model(cfg: dict, dataset_cfg: dict) -> tuple[nn.Module, nn.Module]:
    """The model and loss a run of ``cfg`` trains, built without the data (and its weights)."""
    return new_model(cfg), nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)


def example_batch(cfg: dict, dataset_cfg: dict, batch_size: int, train: bool = True):
    """Random (images, masks) of the shape of a training batch (``crop_size`` squares) or of
    a validation batch (a typical VOC image, its shorter side resized to ``eval_size`` if set)."""
    h, w = VOC_TYPICAL_SIZE
    if train:
        h = w = cfg["crop_size"]
    elif cfg["eval_size"]:
        h, w = cfg["eval_size"], round(cfg["eval_size"] * w / h)
    return torch.rand(batch_size, 3, h, w), torch.randint(0, NUM_CLASSES, (batch_size, h, w))


def stand_in_dataset(cfg: dict, dataset_cfg: dict, root: Path, n: int):
    """The training dataset and transforms of a run of ``cfg`` on ``n`` stand-in pairs of VOC's
    typical size: natural-photo JPEGs with palette masks of a few class rectangles."""
    from clipbench.data.standins import make_jpegs
    from clipbench.data.synthetic import voc_palette

    make_jpegs(root, n, classes=1)
    images = sorted(str(p) for p in root.rglob("*.JPEG"))
    rng = np.random.default_rng(0)
    masks = []
    for i, path in enumerate(images):
        w, h = Image.open(path).size
        mask = np.zeros((h, w), np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            mask[y:y + h // 3, x:x + w // 3] = int(rng.integers(1, 21))
        im = Image.fromarray(mask, mode="P")
        im.putpalette(voc_palette())
        masks.append(str(root / f"mask_{i}.png"))
        im.save(masks[-1])
    tf = transforms(True, int(cfg["base_size"]), int(cfg["crop_size"]), cfg["eval_size"])
    return SegmentationFiles([Path(i).stem for i in images], images, masks, tf)

