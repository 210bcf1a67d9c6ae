"""How methods, tasks and metrics are shown: one order, one label, one colour each."""
from __future__ import annotations

METHOD_ORDER = ["sgd", "clipped_sgd", "clipped_sstm", "adam"]
METHOD_LABEL = {"sgd": "SGD", "clipped_sgd": "clipped-SGD", "clipped_sstm": "clipped-SSTM", "adam": "Adam"}
METHOD_COLOR = {"sgd": "#1f77b4", "clipped_sgd": "#ff7f0e", "clipped_sstm": "#2ca02c", "adam": "#d62728"}
TASK_LABEL = {
    "classification": "Classification (ImageNet-100, ResNet-18)",
    "segmentation": "Segmentation (Pascal VOC 2012, FCN-32s)",
    "superres": "Super-resolution x4 (DIV2K)",
    "heavytail": "Convex check (heavy-tailed noise)",
}
METRIC_LABEL = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "loss": "loss",
                "miou": "mIoU", "psnr": "PSNR (dB)", "psnr_y": "PSNR-Y (dB)"}


def method_label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def ordered_methods(methods) -> list[str]:
    present = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)
