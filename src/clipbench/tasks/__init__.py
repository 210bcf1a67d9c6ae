"""One module per task: its data, model, loss and metrics, behind one small interface.

A task module declares ``INFO = TaskInfo(...)`` (name, label, main metric, ...; see
``registry``) and provides ``build(spec, manifest) -> Task``; the engine needs nothing else.
This package imports no torch, so the registry is cheap to reach from anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from clipbench.tasks.registry import TaskInfo, get, load_module, names, register  # noqa: F401  (the package's API)

if TYPE_CHECKING:
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
    # The metric that decides "best" and is reported first, and whether higher is better;
    # main_metric left empty, build_task takes both from the task's INFO.
    main_metric: str = ""
    higher_is_better: bool = True
    # Facts about this run the task knows (e.g. whether pretrained weights were loaded, a
    # baseline's score); the engine writes them into metrics.json under "task_info".
    extra: dict = field(default_factory=dict)


def build_task(spec: dict, manifest: dict | None) -> Task:
    from clipbench.config import with_task_defaults

    name = spec["task"]
    info = get(name)
    mod = load_module(name)
    # The schema holds every default; a spec written by hand gets them here too.
    spec = {**spec, "task_config": with_task_defaults(name, spec.get("task_config", {}))}
    task = mod.build(spec, manifest)
    if not task.main_metric:
        task.main_metric, task.higher_is_better = info.main_metric, info.higher_is_better
    return task

