"""Model builders by config name."""
from __future__ import annotations

import torch.nn as nn
import torchvision


def build_model(name: str, num_classes: int) -> nn.Module:
    if name == "resnet18":
        # The thesis trains ResNet-18 from scratch on ImageNet-100 (no pretraining is named).
        return torchvision.models.resnet18(weights=None, num_classes=num_classes)
    raise ValueError(f"unknown model {name!r} (known: resnet18; segmentation models: "
                     f"clipbench.models.fcn, super-resolution models: clipbench.models.sr.build_sr_model)")
