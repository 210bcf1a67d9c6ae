"""How methods, tasks and metrics are shown: one order, one label, one colour each.

A task's label, notes and main metric are its own (``INFO`` in its module, via the registry)."""
from __future__ import annotations

from clipbench.tasks import registry

METHOD_ORDER = ["sgd", "clipped_sgd", "sstm", "clipped_sstm", "adam"]
METHOD_LABEL = {"sgd": "SGD", "clipped_sgd": "clipped-SGD", "sstm": "SSTM", "clipped_sstm": "clipped-SSTM",
                "adam": "Adam"}
METHOD_COLOR = {"sgd": "#1f77b4", "clipped_sgd": "#ff7f0e", "sstm": "#9467bd", "clipped_sstm": "#2ca02c",
                "adam": "#d62728"}
# Each clipped method and the same method without clipping: the pairs the report compares.
TWIN = {"clipped_sgd": "sgd", "clipped_sstm": "sstm"}
METRIC_LABEL = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "loss": "loss",
                "miou": "mIoU", "pixel_acc": "pixel accuracy", "psnr": "PSNR (dB)", "psnr_y": "PSNR-Y (dB)"}
# Metrics recorded per class (segmentation's iou_<class>): a table of their own, no curves.
PER_CLASS_PREFIX = "iou_"


def method_label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def ordered_methods(methods) -> list[str]:
    present = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)


def shown_tasks(tasks) -> list[str]:
    """The registered tasks among ``tasks``, in the registry's order."""
    present = set(tasks)
    return [t for t in registry.names() if t in present]


def _info(task: str):
    try:
        return registry.get(task)
    except ValueError:
        return None


def task_label(task: str) -> str:
    info = _info(task)
    return info.label if info else task


def task_notes(task: str) -> list[str]:
    info = _info(task)
    return list(info.notes) if info else []


def main_metric(task: str) -> str | None:
    """The metric a task is judged by (split "val"), as its runs' metrics.json also record."""
    info = _info(task)
    return info.main_metric if info else None
