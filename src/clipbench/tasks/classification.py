"""ImageNet-100 classification with ResNet-18, as the thesis' section 4.1."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn
from torchvision import datasets
from torchvision.transforms import v2 as T
import torch

from clipbench.data import filelist
from clipbench.data.decoded import Cached
from clipbench.data.images import open_rgb
from clipbench.data.imagenet100 import MEAN, STD  # as torchvision's classification reference
from clipbench.data.imagenet100 import resolve_classes
from clipbench.metrics import ClassificationMeter
from clipbench.models import build_model
from clipbench.tasks import Task


def transforms(image_size: int, train: bool, val_transform: str = "center_crop"):
    # torchvision's reference recipe: random-resized crop and flip for training; for evaluation
    # resize to 256/224 of the crop then center-crop, or ("squash", the authors' notebook) resize
    # the whole image to image_size x image_size.
    if train:
        ops = [T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip()]
    elif val_transform == "squash":
        ops = [T.Resize((image_size, image_size), antialias=True)]
    else:
        ops = [T.Resize(int(round(image_size * 256 / 224)), antialias=True), T.CenterCrop(image_size)]
    return T.Compose([T.PILToTensor(), *ops, T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


def num_classes(manifest: dict) -> int:
    """The number of classes the prepared data holds, as its manifest lists them."""
    if manifest.get("wnids"):
        return len(manifest["wnids"])
    per_class = ((manifest.get("splits") or {}).get("train") or {}).get("per_class")
    if per_class:
        return len(per_class)
    raise ValueError("the imagenet100 manifest lists no classes (neither 'wnids' nor splits.train.per_class); "
                     "rerun `clipbench prepare imagenet100`")


def chance_baseline(cfg: dict, manifest: dict) -> dict:
    """Guessing uniformly at random: top-1 is 1/C and top-5 min(5, C)/C, in expectation."""
    c = num_classes(manifest)
    return {"task": "classification", "method": "chance", "label": "chance (no training)", "phrase": "chance",
            "metrics": {"top1": 1 / c, "top5": min(5, c) / c}, "classes": c}


class ClassFolders(datasets.ImageFolder):
    """ImageFolder over the manifest's classes only (a root may hold more, e.g. all of
    ImageNet), labelled in sorted order as ImageFolder labels a folder of exactly those.

    ``listed``: the manifest's files (paths relative to the folder's parent, ``train/<wnid>/x.JPEG``);
    then the samples are exactly those, in ImageFolder's order, and the folders are not searched
    again (a file added since prepare, a second name of a file, is not read)."""

    def __init__(self, root, wnids, transform, listed: set[str] | None = None) -> None:
        self.wnids = sorted(wnids)
        self.listed = listed
        super().__init__(root, transform=transform, loader=Cached(open_rgb))

    def find_classes(self, directory):
        return list(self.wnids), {w: i for i, w in enumerate(self.wnids)}

    def make_dataset(self, directory, class_to_idx, *args, **kwargs):
        if self.listed is None:
            return super().make_dataset(directory, class_to_idx, *args, **kwargs)
        split = Path(directory).name
        samples = []
        for rel in self.listed:
            part, wnid, name = rel.split("/", 2)
            if part == split and wnid in class_to_idx:
                samples.append((class_to_idx[wnid], name, str(Path(directory) / wnid / name)))
        samples.sort()  # by class, then file name: ImageFolder's order
        return [(path, target) for target, _, path in samples]


def build(spec: dict, manifest: dict) -> Task:
    cfg = spec["task_config"]
    root = Path(manifest["root"])
    size = cfg["image_size"]
    # The manifest's classes (datasets.imagenet100.class_list) set the model's output size.
    wnids = manifest.get("wnids") or sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    listed = filelist.listed(manifest)  # the files prepare listed, not a new search of the folders
    train_set = ClassFolders(root / "train", wnids, transform=transforms(size, train=True), listed=listed)
    val_set = ClassFolders(root / "val", wnids, transform=transforms(size, train=False,
                                                                     val_transform=cfg["val_transform"]),
                           listed=listed)
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
        train_eval_set=ClassFolders(root / "train", wnids, transform=transforms(size, train=False), listed=listed),
    )


# -- without the data (the cost estimate, `clipbench bench cost`) ----------------------------------

def configured_classes(dataset_cfg: dict) -> int:
    """The classes the data of ``datasets.imagenet100`` will hold once prepared: the synthetic
    set's ``num_classes``, else those ``class_list`` selects (``all`` reads ``root``)."""
    if dataset_cfg.get("root") is None and dataset_cfg["source"] == "synthetic":
        return int(dataset_cfg["synthetic"]["num_classes"])
    return len(resolve_classes(dataset_cfg["class_list"], dataset_cfg.get("root")))


def example_model(cfg: dict, dataset_cfg: dict) -> tuple[nn.Module, nn.Module]:
    """The model and loss a run of ``cfg`` trains, built without the data."""
    return build_model(cfg["model"], num_classes=configured_classes(dataset_cfg)), nn.CrossEntropyLoss()


def example_batch(cfg: dict, dataset_cfg: dict, batch_size: int, train: bool = True):
    """Random (inputs, targets) of the shape of a training batch (``train``) or of a
    validation batch; both are ``image_size`` squares."""
    size = cfg["image_size"]
    return (torch.rand(batch_size, 3, size, size),
            torch.randint(0, configured_classes(dataset_cfg), (batch_size,)))


def stand_in_dataset(cfg: dict, dataset_cfg: dict, root: Path, n: int):
    """The training dataset and transforms of a run of ``cfg`` on ``n`` stand-in JPEGs of
    ImageNet's typical size (500 x 375), pre-resized as the config pre-resizes."""
    from clipbench.data.standins import make_jpegs
    from clipbench.data.imagenet100 import resize_tree

    make_jpegs(root, n, classes=2)
    tree, resize = root, dataset_cfg["resize"]
    if resize["shorter_side"]:
        tree = root.with_name(root.name + "_resized")
        resize_tree(root, tree, shorter_side=resize["shorter_side"], quality=resize["quality"], workers=1, progress=False)
    return datasets.ImageFolder(tree / "train", transform=transforms(int(cfg["image_size"]), True))

