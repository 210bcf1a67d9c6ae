"""FCN-32s (Long, Shelhamer, Darrell 2015) on a VGG16 encoder, and a tiny variant for CPU demos.

The upsampling is the paper's: a transposed convolution with a fixed bilinear kernel
(FCN-32s keeps it frozen), stride 32, so optimizers never see it. The kernel is separable, so
the transposed convolution is computed as what it equals, ``U @ scores @ U.T`` with the 1-D
filter's matrix ``U`` (:func:`bilinear_matrix`): the same numbers to rounding, a tenth of
``conv_transpose2d``'s time on the CPU, and unlike ``F.interpolate``'s backward deterministic on
CUDA too. The input is
zero-padded up to a multiple of 32 and the scores are cropped back, so the output is exactly
the input's H x W for any size (the paper pads conv1 by 100 and crops; this is equivalent in
effect and cheaper).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

STRIDE = 32
# torchvision's ImageNet VGG16 checkpoint, pinned in clipbench.data.sources as "vgg16_imagenet".
VGG16_WEIGHTS = "vgg16_imagenet"
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"


def bilinear_filter(factor: int) -> torch.Tensor:
    """The 2 * ``factor`` taps (float64) of the 1-D bilinear filter of upsampling by ``factor``."""
    center = factor - 0.5
    return 1 - (torch.arange(2 * factor, dtype=torch.float64) - center).abs() / factor


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """Depthwise (channels, 1, 2f, 2f) kernel: with stride f and padding f/2 a transposed
    convolution by it is bilinear upsampling (``align_corners=False``) away from the border."""
    filt = bilinear_filter(factor)
    k = (filt[:, None] * filt[None, :]).float()
    return k.expand(channels, 1, 2 * factor, 2 * factor).clone()


def bilinear_matrix(n: int, factor: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | None = None) -> torch.Tensor:
    """(factor * n, n) matrix ``U``: ``U @ x @ U.T`` is ``conv_transpose2d`` of an n x n map by
    :func:`bilinear_kernel` (stride ``factor``, padding ``factor / 2``); output row ``o`` takes
    input row ``i`` with the 1-D filter's tap ``o + factor / 2 - factor * i`` (0 off the filter).
    Made once per size (every forward pass asks for it); read it, never write to it."""
    return _bilinear_matrix(n, factor).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n: int, factor: int) -> torch.Tensor:
    tap = torch.arange(n * factor)[:, None] + factor // 2 - factor * torch.arange(n)[None, :]
    on_filter = (tap >= 0) & (tap < 2 * factor)
    return torch.where(on_filter, bilinear_filter(factor)[tap.clamp(0, 2 * factor - 1)],
                       torch.zeros((), dtype=torch.float64))


class FCN32s(nn.Module):
    def __init__(self, encoder: nn.Module, encoder_channels: int, num_classes: int = 21,
                 fc_width: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = encoder
        # fc6/fc7 of the classifier, "convolutionalized": 7x7 then 1x1 convolutions.
        self.fc6 = nn.Conv2d(encoder_channels, fc_width, kernel_size=7, padding=3)
        self.fc7 = nn.Conv2d(fc_width, fc_width, kernel_size=1)
        self.drop = nn.Dropout2d(dropout)
        self.score = nn.Conv2d(fc_width, num_classes, kernel_size=1)
        for conv in (self.fc6, self.fc7):
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)
        # The paper zero-initialises the class scores.
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % STRIDE, 0, (-h) % STRIDE))
        x = self.encoder(x)
        x = self.drop(F.relu(self.fc6(x), inplace=True))
        x = self.drop(F.relu(self.fc7(x), inplace=True))
        x = self.score(x)
        # The output rows and columns past the input's H x W (its padding) are never computed.
        up_h = bilinear_matrix(x.shape[-2], STRIDE, x.dtype, x.device)[:h]
        up_w = bilinear_matrix(x.shape[-1], STRIDE, x.dtype, x.device)[:w]
        return up_h @ x @ up_w.T


def fcn32s_vgg16(num_classes: int = 21) -> FCN32s:
    # torchvision's own VGG16 definition and initialisation; its classifier is replaced by fc6/fc7.
    encoder = torchvision.models.vgg16(weights=None).features
    return FCN32s(encoder, 512, num_classes, fc_width=4096, dropout=0.5)


def fcn32s_tiny(num_classes: int = 21, widths: tuple[int, ...] = (16, 32, 64, 64, 64), fc_width: int = 128) -> FCN32s:
    """The same head on five small conv blocks (one conv each, with batch norm so a few
    hundred CPU steps from scratch get somewhere). Still stride 32, still FCN-32s."""
    layers: list[nn.Module] = []
    c_in = 3
    for c in widths:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2, 2)]
        c_in = c
    if len(widths) != 5:
        raise ValueError("fcn32s_tiny needs five blocks (five 2x poolings = stride 32)")
    encoder = nn.Sequential(*layers)
    for m in encoder.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return FCN32s(encoder, c_in, num_classes, fc_width=fc_width, dropout=0.1)


def default_vgg16_weights() -> Path:
    """Where ``pretrained: imagenet`` reads VGG16: ``data/weights/`` (fetched by the workflow's
    ``weights`` rule), else the torch hub cache."""
    from clipbench.data.weights import find_weights

    return find_weights(VGG16_WEIGHTS)


def load_vgg16_imagenet(model: FCN32s, path: str | Path) -> None:
    """Load torchvision's ImageNet VGG16 checkpoint into an FCN32s: ``features.*`` into the
    encoder, and the classifier's fc6/fc7 reshaped into the 7x7 and 1x1 convolutions, as the
    paper initialises FCN. The 1000-class layer is dropped."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"{path}: cannot read it as a torchvision VGG16 checkpoint ({exc}); "
                         f"delete it and fetch it again (`clipbench fetch-weights {VGG16_WEIGHTS}`)") from exc
    enc = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        model.encoder.load_state_dict(enc, strict=True)
        fc6_w = state["classifier.0.weight"].reshape(model.fc6.weight.shape)
        fc7_w = state["classifier.3.weight"].reshape(model.fc7.weight.shape)
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"{path}: not torchvision's VGG16 ImageNet checkpoint ({exc})") from exc
    with torch.no_grad():
        model.fc6.weight.copy_(fc6_w)
        model.fc6.bias.copy_(state["classifier.0.bias"])
        model.fc7.weight.copy_(fc7_w)
        model.fc7.bias.copy_(state["classifier.3.bias"])
