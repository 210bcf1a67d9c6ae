"""One module per task: its data, model, loss and metrics, behind one small interface.

A task module provides ``build(spec, manifest) -> Task``; the engine needs nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn
from torch.utils.data import Dataset


@dataclass
class Task:
    name: str
    train_set: Dataset
    val_set: Dataset
    model: nn.Module
    loss: Callable
    new_meter: Callable[[], object]
    # The metric that decides "best" and is reported first, and whether higher is better.
    main_metric: str
    higher_is_better: bool = True
    # Facts about this run the task knows (e.g. whether pretrained weights were loaded, a
    # baseline's score); the engine writes them into metrics.json under "task_info".
    extra: dict = field(default_factory=dict)


def build_task(spec: dict, manifest: dict | None) -> Task:
    name = spec["task"]
    if name == "classification":
        from clipbench.tasks import classification as mod
    elif name == "segmentation":
        from clipbench.tasks import segmentation as mod
    elif name == "superres":
        from clipbench.tasks import superres as mod
    else:
        raise ValueError(f"unknown task {name!r}")
    return mod.build(spec, manifest)
