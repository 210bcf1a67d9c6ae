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
