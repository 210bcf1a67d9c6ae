"""Super-resolution networks: EDSR-baseline (Lim et al. 2017) and ESPCN (Shi et al. 2016).

Both take RGB in [0, 1] and return RGB at ``scale`` times the size (unclamped; the metric
clamps and rounds).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

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


def build_sr_model(name: str, scale: int) -> nn.Module:
    if name == "edsr_baseline":
        return EDSR(scale=scale, n_blocks=16, features=64)
    if name == "espcn":
        return ESPCN(scale=scale)
    raise ValueError(f"unknown super-resolution model {name!r} (known: edsr_baseline, espcn)")
