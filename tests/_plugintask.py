"""A task defined outside the package, as a plug-in or a new task would be: what
docs/adding-a-task.md describes, with nothing in src/ or workflow/ edited.

``INFO`` carries the task's metadata and its config schema block; ``build`` makes the Task.
tests/test_adding_a_task.py registers it and takes it through train, baseline, collect and report.

tests/_tensortask.py is a different thing: a task the engine tests patch in for ``build_task``,
bypassing the registry and the config, so they test the training loop alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from clipbench.metrics import ClassificationMeter
from clipbench.tasks import Task, TaskInfo
from tests._tensortask import NoisyTensors

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dim": {"type": "integer", "minimum": 1, "default": 6, "description": "input features"},
        "classes": {"type": "integer", "minimum": 2, "default": 3},
        "epochs": {"$ref": "#/definitions/task_common/epochs"},
        "batch_size": {"$ref": "#/definitions/task_common/batch_size"},
        "eval_batch_size": {"type": "integer", "minimum": 1, "default": 16},
        "methods": {"$ref": "#/definitions/methods"},
    },
    "required": ["epochs", "batch_size", "methods"],
}

INFO = TaskInfo(
    name="toy",
    label="Toy (noisy Gaussian classes)",
    main_metric="top1",
    notes=("A linear-tanh network on 48 Gaussian points: a test of the plumbing, not of the methods.",),
    baseline="chance_baseline",
    module=__name__,
    schema=SCHEMA,
)


def build(spec: dict, manifest: dict | None) -> Task:
    cfg = spec["task_config"]  # the schema's defaults are already in
    g = torch.Generator().manual_seed(123)
    x = torch.randn(48, cfg["dim"], generator=g)
    y = torch.randint(0, cfg["classes"], (48,), generator=g)
    model = nn.Sequential(nn.Linear(cfg["dim"], 16), nn.Tanh(), nn.Linear(16, cfg["classes"]))
    return Task(name="toy", train_set=NoisyTensors(x[:32], y[:32]), val_set=NoisyTensors(x[32:], y[32:], noise=0.0),
                model=model, loss=nn.CrossEntropyLoss(), new_meter=ClassificationMeter)


def chance_baseline(cfg: dict, manifest: dict) -> dict:
    return {"method": "chance", "label": "chance (no training)", "metrics": {"top1": 1 / cfg["classes"]}}
