"""Metrics that accumulate over batches and are exact over the whole split."""
from __future__ import annotations

import math

import torch


def topk_correct(output: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many samples have their target among the k highest scores, for each k.

    With fewer classes than k, every sample counts as correct, as in torchvision's reference.
    """
    maxk = min(max(ks), output.shape[1])
    pred = output.topk(maxk, dim=1, largest=True, sorted=True).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


class ClassificationMeter:
    """Mean loss, top-1 and top-5 accuracy over everything passed to ``update``."""

    names = ("loss", "top1", "top5")

    def __init__(self) -> None:
        self.n = 0
        self.loss_sum = 0.0
        self.correct = [0, 0]

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | float) -> None:
        b = target.shape[0]
        self.n += b
        self.loss_sum += float(loss) * b
        for i, c in enumerate(topk_correct(output, target, (1, 5))):
            self.correct[i] += c

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {name: math.nan for name in self.names}
        return {
            "loss": self.loss_sum / self.n,
            "top1": self.correct[0] / self.n,
            "top5": self.correct[1] / self.n,
        }


# --- segmentation ---------------------------------------------------------------------------

# Pascal VOC's 21 classes, in label order (0 is background; 255 marks "void" pixels).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``cm[t, p]`` = pixels of true class t predicted as p; ``ignore_index`` pixels are left out."""
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target labels must be in 0..{num_classes - 1} or {ignore_index}; got {sorted(set(t.unique().tolist()))}")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both prediction and truth."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


class SegmentationMeter:
    """Mean loss, mIoU, pixel accuracy and per-class IoU from one confusion matrix over the split.

    The confusion matrix is accumulated over every pixel of the split before any ratio is taken
    (as the VOC devkit and torchvision's reference do), not averaged per image. The mean IoU is
    over the classes present in the prediction or the ground truth; a class absent from both
    has no IoU (NaN) and is left out of the mean.
    """

    def __init__(self, num_classes: int = 21, class_names: tuple[str, ...] = VOC_CLASSES,
                 ignore_index: int = IGNORE_INDEX, per_class: bool = True) -> None:
        self.num_classes = num_classes
        self.class_names = class_names if len(class_names) == num_classes else tuple(str(c) for c in range(num_classes))
        self.ignore_index = ignore_index
        self.per_class = per_class
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.n = 0
        self.loss_sum = 0.0

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | float) -> None:
        b = target.shape[0]
        self.n += b
        self.loss_sum += float(loss) * b
        # max(1).indices is argmax(1) (both take the first maximum), but argmax over the class
        # dimension of an N x C x H x W tensor is ~7x slower on the CPU: an eighth of a demo segmentation run.
        pred = output.max(1).indices
        self.cm += confusion_matrix(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {"loss": math.nan, "miou": math.nan, "pixel_acc": math.nan}
        iou = iou_from_confusion(self.cm)
        present = ~torch.isnan(iou)
        total = int(self.cm.sum())
        out = {
            "loss": self.loss_sum / self.n,
            "miou": float(iou[present].mean()) if present.any() else math.nan,
            "pixel_acc": float(self.cm.diag().sum()) / total if total else math.nan,
        }
        if self.per_class:
            # Only classes that occur: a NaN would read as divergence, and means "no such class".
            out.update({f"iou_{name}": float(v) for name, v, p in zip(self.class_names, iou, present) if p})
        return out


# --- super-resolution -----------------------------------------------------------------------

def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Luma of RGB in [0, 1], as ITU-R BT.601 / MATLAB ``rgb2ycbcr``: Y in [16, 235] on a 0-255 scale.

    The convention of the SR literature's "PSNR on Y" (EDSR, RCAN, BasicSR's ``rgb2ycbcr``).
    """
    w = torch.tensor([65.481, 128.553, 24.966], dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return 16.0 + (img * w).sum(1, keepdim=True)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels: the image that would be saved and scored."""
    return img.clamp(0, 1).mul(255).round().div(255)


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, shave: int = 0, y_only: bool = False) -> torch.Tensor:
    """PSNR (dB) of each image in a batch of RGB images in [0, 1]; ``shave`` border pixels are dropped.

    RGB: data range 1, MSE over all channels. Y: data range 255 on BT.601 luma (see ``rgb_to_y``).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if shave < 0:
        raise ValueError(f"shave={shave} must be >= 0")
    if shave and min(pred.shape[-2:]) <= 2 * shave:
        raise ValueError(f"a {pred.shape[-1]}x{pred.shape[-2]} image has no pixels left after shaving {shave} px "
                         "at each border; use larger images (tasks.superres.val_crop) "
                         "or a smaller tasks.superres.shave")
    if shave:  # before the conversion to float64, which then converts only what is scored
        pred, target = pred[..., shave:-shave, shave:-shave], target[..., shave:-shave, shave:-shave]
    pred, target = pred.double(), target.double()
    data_range = 1.0
    if y_only:
        pred, target, data_range = rgb_to_y(pred), rgb_to_y(target), 255.0
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def div2k_shave(scale: int) -> int:
    """The border, px, that EDSR shaves when it scores DIV2K: ``scale + 6`` (10 at x4).

    EDSR-PyTorch's ``utility.calc_psnr`` shaves ``scale + 6`` px at each border on DIV2K (on RGB),
    and ``scale`` px only on the benchmark sets (Set5, Set14, B100, Urban100, Manga109, on Y).
    """
    return int(scale) + 6


class SuperResolutionMeter:
    """Mean loss, and PSNR on RGB (``psnr``) and on Y (``psnr_y``) averaged over images.

    The output is clamped and rounded to 8 bits, ``shave`` pixels are dropped at each border,
    PSNR is computed per image and then averaged over the images (not from the pooled MSE), as
    EDSR scores DIV2K. ``shave=None``: EDSR's border on DIV2K, ``scale + 6`` px (``div2k_shave``;
    10 at x4); an integer: that many px. A perfect image (MSE 0) would score +inf; we cap it at
    100 dB so one such image cannot make the mean infinite.
    """

    names = ("loss", "psnr", "psnr_y")

    def __init__(self, scale: int = 4, shave: int | None = None) -> None:
        self.shave = div2k_shave(scale) if shave is None else int(shave)
        if self.shave < 0:
            raise ValueError(f"shave={shave} must be >= 0")
        self.n = 0
        self.loss_sum = 0.0
        self.psnr_sum = 0.0
        self.psnr_y_sum = 0.0

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | float) -> None:
        b = target.shape[0]
        self.n += b
        self.loss_sum += float(loss) * b
        sr = quantize(output.detach())
        self.psnr_sum += float(psnr_per_image(sr, target, self.shave).clamp(max=100).sum())
        self.psnr_y_sum += float(psnr_per_image(sr, target, self.shave, y_only=True).clamp(max=100).sum())

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {name: math.nan for name in self.names}
        return {"loss": self.loss_sum / self.n, "psnr": self.psnr_sum / self.n, "psnr_y": self.psnr_y_sum / self.n}
