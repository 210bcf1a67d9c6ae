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
                "miou": "mIoU", "pixel_acc": "pixel accuracy", "psnr": "PSNR (dB)", "psnr_y": "PSNR-Y (dB)"}
# Metrics recorded per class (segmentation's iou_<class>): a table of their own, no curves.
PER_CLASS_PREFIX = "iou_"
# How each task's numbers are computed, stated beside its table.
TASK_NOTES = {
    "segmentation": [
        "mIoU from one confusion matrix accumulated over every validation pixel; void pixels (label 255) are "
        "ignored; the mean is over the classes present in the ground truth or the prediction (a class absent "
        "from both is left out). Pixel accuracy from the same matrix.",
    ],
    "superres": [
        "PSNR as DIV2K/NTIRE results and EDSR compute it: the output clamped to [0, 1] and rounded to 8 bits, "
        "4 px shaved at each border, PSNR per image then averaged over the images. PSNR (the thesis' metric) is "
        "on RGB with data range 1; PSNR-Y on BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B (RGB in "
        "[0, 1]) with data range 255.",
        "The bicubic row is the validation score of plain bicubic upsampling of the LR inputs (torch's bicubic, "
        "a = -0.75, no antialiasing; close to but not identical with MATLAB's imresize), with no training. On "
        "the real DIV2K validation set x4 bicubic scores about 26.7 dB, while the thesis reports about 18 dB for "
        "its trained models (Table 2): below this trivial baseline.",
    ],
}


def method_label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def ordered_methods(methods) -> list[str]:
    present = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)
