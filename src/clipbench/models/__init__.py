"""Model builders by config name."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def build_model(name: str, num_classes: int) -> nn.Module:
    if name == "resnet18":
        # The thesis trains ResNet-18 from scratch on ImageNet-100 (no pretraining is named).
        return linear_on_1x1_maps(torchvision.models.resnet18(weights=None, num_classes=num_classes))
    raise ValueError(f"unknown model {name!r} (known: resnet18; segmentation models: "
                     f"clipbench.models.fcn, super-resolution models: clipbench.models.sr.build_sr_model)")


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes a "same" convolution of a 1 x 1 map as the linear map it is.

    Zero padding leaves only the kernel's centre tap on a 1 x 1 input, so the output is
    ``linear(x, weight[..., centre, centre])`` (and the other taps' gradient is exactly zero, as
    a convolution's would be). On the CPU, oneDNN's weight gradient for that shape is about ten
    times slower than the same product as a matrix multiply: ResNet-18 at 32 px has three
    512 -> 512 3x3 convolutions on 1 x 1 maps, and they were over half of its backward pass
    (one thread, batch 32: 55 ms each against 5 ms for their input gradient). Any other input
    goes to ``nn.Conv2d`` unchanged; the parameters, and so the state dict, are the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if (x.dim() == 4 and x.shape[-2:] == (1, 1) and kh % 2 and kw % 2 and self.padding == (kh // 2, kw // 2)
                and self.dilation == (1, 1) and self.groups == 1 and self.padding_mode == "zeros"):
            return F.linear(x.flatten(1), self.weight[:, :, kh // 2, kw // 2], self.bias)[:, :, None, None]
        return super().forward(x)


def linear_on_1x1_maps(model: nn.Module) -> nn.Module:
    """``model`` with each plain ``nn.Conv2d`` made a :class:`Conv2d` (in place; same parameters)."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = Conv2d
    return model
