"""One module per task: its data, model, loss and metrics, behind one small interface.

A task has an entry in ``registry.TASKS`` (name, label, main metric, ...) and a module that
provides ``build(spec, manifest) -> Task``; the engine needs nothing else.
This package imports no torch, so the registry is cheap to reach from anywhere.
"""
from __future__ import annotations

import random
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
    # The training items as evaluation sees them (no augmentation), for tuning's held-out
    # split: train_set[j] is drawn from item j % len(train_eval_set). None: train_set itself.
    train_eval_set: Dataset | None = None
    # The data the run read, checked against the prepared dataset's manifest before training
    # (``clipbench.data.filelist.verify``); the engine writes it into metrics.json as "data".
    data: dict | None = None


def build_task(spec: dict, manifest: dict | None) -> Task:
    """The task of a complete spec (its task_config with the schema's defaults: a spec from
    ``clipbench.spec``, or one written by hand through ``clipbench.spec.complete``)."""
    name = spec["task"]
    info = get(name)
    mod = load_module(name)
    task = mod.build(spec, manifest)
    if not task.main_metric:
        task.main_metric, task.higher_is_better = info.main_metric, info.higher_is_better
    if spec.get("holdout"):
        hold_out(task, float(spec["holdout"]["fraction"]), int(spec["holdout"]["seed"]))
    return task


def holdout_items(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held out): a seeded draw of ``round(fraction * n)`` of ``n`` items (at least one
    each way), the same on every machine (Python's own generator, not torch's)."""
    if n < 2:
        raise ValueError(f"tuning's held-out split needs 2 or more training items, not {n}")
    order = list(range(n))
    random.Random(f"holdout:{seed}").shuffle(order)
    k = min(max(1, round(fraction * n)), n - 1)
    return sorted(order[k:]), sorted(order[:k])


def hold_out(task: Task, fraction: float, seed: int) -> Task:
    """Train on the training data less a held-out part, and evaluate on that part (tuning's
    split), so the validation set is never used to choose a setting."""
    from torch.utils.data import Subset

    items = task.train_eval_set if task.train_eval_set is not None else task.train_set
    n = len(items)
    kept, held = holdout_items(n, fraction, seed)
    keep = set(kept)
    task.train_set = Subset(task.train_set, [j for j in range(len(task.train_set)) if j % n in keep])
    task.val_set = Subset(items, held)
    task.extra = {**task.extra, "holdout": {"fraction": fraction, "seed": seed, "train_items": len(kept),
                                            "held_out_items": len(held),
                                            "augmented": task.train_eval_set is None}}
    return task

