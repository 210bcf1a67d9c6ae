"""Super-resolution networks: EDSR-baseline (Lim et al. 2017) and ESPCN (Shi et al. 2016).

Both take RGB in [0, 1] and return RGB at ``scale`` times the size (unclamped; the metric
clamps and rounds).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# DIV2K's mean RGB, as EDSR subtracts it at the input and adds it back at the output.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    def __init__(self, mean=DIV2K_MEAN, sign: float = -1.0) -> None:
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return x + self.shift


class ResBlock(nn.Module):
    def __init__(self, features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """EDSR; the defaults are the paper's "baseline" (16 blocks, 64 features, no batch norm).

    x4 upsampling is two conv + pixel-shuffle x2 stages, as in the paper.
    """

    def __init__(self, scale: int = 4, n_blocks: int = 16, features: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        self.sub_mean, self.add_mean = MeanShift(sign=-1.0), MeanShift(sign=1.0)
        self.head = nn.Conv2d(3, features, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(features, res_scale) for _ in range(n_blocks)],
                                  nn.Conv2d(features, features, 3, padding=1))
        up: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                up += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            up += [nn.Conv2d(features, 9 * features, 3, padding=1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR supports scales 2^n and 3, not {scale}")
        self.tail = nn.Sequential(*up, nn.Conv2d(features, 3, 3, padding=1))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


class ESPCN(nn.Module):
    """ESPCN: two feature layers at low resolution, then one sub-pixel convolution.

    On RGB rather than the paper's Y channel, so it is scored like the other models.
    """

    def __init__(self, scale: int = 4, features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, features, 5, padding=2), nn.Tanh(),
            nn.Conv2d(features, features // 2, 3, padding=1), nn.Tanh(),
            nn.Conv2d(features // 2, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x):
        return self.body(x)


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain bicubic upsampling (torch's, a = -0.75, no antialiasing), clamped to [0, 1]."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False).clamp(0, 1)


class BicubicResidual(nn.Module):
    """``bicubic(x) + net(x)``: the network learns only what bicubic upsampling misses.

    A global skip as VDSR (Kim et al. 2016) uses; the network's last layer starts at zero, so
    before training the output is exactly bicubic's and training can only add to it.
    """

    def __init__(self, net: nn.Module, scale: int) -> None:
        super().__init__()
        if isinstance(net, EDSR):
            net.add_mean = nn.Identity()  # a residual has no mean to add back
        last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net, self.scale = net, scale

    def forward(self, x):
        return bicubic_upsample(x, self.scale) + self.net(x)


def build_sr_model(name: str, scale: int, residual: bool = False) -> nn.Module:
    if name == "edsr_baseline":
        net = EDSR(scale=scale, n_blocks=16, features=64)
    elif name == "espcn":
        net = ESPCN(scale=scale)
    else:
        raise ValueError(f"unknown super-resolution model {name!r} (known: edsr_baseline, espcn)")
    return BicubicResidual(net, scale) if residual else net
