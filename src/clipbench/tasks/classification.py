"""ImageNet-100 classification with ResNet-18, as the thesis' section 4.1."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn
from torchvision import datasets
from torchvision.transforms import v2 as T
import torch

from clipbench.data.imagenet100 import MEAN, STD  # as torchvision's classification reference
from clipbench.metrics import ClassificationMeter
from clipbench.models import build_model
from clipbench.tasks import Task, TaskInfo

INFO = TaskInfo(
    name="classification",
    label="Classification (ImageNet-100, ResNet-18)",
    dataset="imagenet100",
    main_metric="top1",
)


def transforms(image_size: int, train: bool):
    # torchvision's reference recipe: random-resized crop and flip for training,
    # resize to 256/224 of the crop then center-crop for evaluation.
    if train:
        ops = [T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(round(image_size * 256 / 224)), antialias=True), T.CenterCrop(image_size)]
    return T.Compose([T.PILToTensor(), *ops, T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


class ClassFolders(datasets.ImageFolder):
    """ImageFolder over the manifest's classes only (a root may hold more, e.g. all of
    ImageNet), labelled in sorted order as ImageFolder labels a folder of exactly those."""

    def __init__(self, root, wnids, transform) -> None:
        self.wnids = sorted(wnids)
        super().__init__(root, transform=transform)

    def find_classes(self, directory):
        return list(self.wnids), {w: i for i, w in enumerate(self.wnids)}


def build(spec: dict, manifest: dict) -> Task:
    cfg = spec["task_config"]
    root = Path(manifest["root"])
    size = cfg["image_size"]
    # The manifest's classes (datasets.imagenet100.class_list) set the model's output size.
    wnids = manifest.get("wnids") or sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train_set = ClassFolders(root / "train", wnids, transform=transforms(size, train=True))
    val_set = ClassFolders(root / "val", wnids, transform=transforms(size, train=False))
    if train_set.classes != val_set.classes:
        raise ValueError(f"{root}: train/ and val/ hold different classes")
    model = build_model(cfg["model"], num_classes=len(train_set.classes))
    return Task(
        name="classification",
        train_set=train_set,
        val_set=val_set,
        model=model,
        loss=nn.CrossEntropyLoss(),
        new_meter=ClassificationMeter,
        train_eval_set=ClassFolders(root / "train", wnids, transform=transforms(size, train=False)),
    )
