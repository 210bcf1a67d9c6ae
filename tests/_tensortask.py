"""A tiny classification Task on in-memory tensors (``tensor_task``: BN-free, no data set), and what
the engine tests drive it with: its run spec (``tensor_task_spec``, written out, not validated),
``use_tensor_task`` to patch it in for ``clipbench.engine.train.build_task`` (``monkeypatch``), a
test-local optimizer that reports clip telemetry (``ReportingSGD``), ``NoisyTensors`` and a
spawn target for one DDP process (``ddp_worker``).
So the engine tests run the real loop in well under a second.

tests/_plugintask.py is a different thing: a task registered from outside the package, the way
docs/adding-a-task.md describes, through the registry and the config schema (it reuses
``NoisyTensors``); tests/test_adding_a_task.py runs it through the CLI.
"""
from __future__ import annotations

import copy
import math
import os

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from clipbench.metrics import ClassificationMeter
from clipbench.tasks import Task


class NoisyTensors(Dataset):
    """Fixed inputs plus augmentation noise from the global torch RNG (as transforms use it)."""

    def __init__(self, x, y, noise=0.1):
        self.x, self.y, self.noise = x, y, noise

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + self.noise * torch.randn_like(self.x[i]), self.y[i]


def tensor_task(n_train=32, n_val=16, dim=6, classes=3, nan_at_step=None, dropout=0.1):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n_train + n_val, dim, generator=g)
    y = torch.randint(0, classes, (n_train + n_val,), generator=g)
    model = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, classes))
    ce = nn.CrossEntropyLoss()
    calls = {"n": 0}

    def loss(output, target):
        value = ce(output, target)
        if output.requires_grad:
            calls["n"] += 1
            if nan_at_step is not None and calls["n"] > nan_at_step:
                return value * math.nan
        return value

    return Task(name="classification", train_set=NoisyTensors(x[:n_train], y[:n_train]),
                val_set=NoisyTensors(x[n_train:], y[n_train:], noise=0.0), model=model, loss=loss,
                new_meter=ClassificationMeter, main_metric="top1")


def tensor_task_spec(method="sgd", epochs=2, batch_size=8, seed=0, engine=None, **method_cfg):
    return {
        "task": "classification", "method": method, "seed": seed,
        "task_config": {"epochs": epochs, "batch_size": batch_size, "eval_batch_size": 16},
        "method_config": method_cfg or {"lr": 0.1, "momentum": 0.9},
        "engine": {"device": "cpu", "threads": 1, "deterministic": True, "dvclive": False, **(engine or {})},
    }


def use_tensor_task(monkeypatch, **kw):
    import clipbench.engine.train as T

    monkeypatch.setattr(T, "build_task", lambda spec, manifest: tensor_task(**kw))


class ReportingSGD(torch.optim.SGD):
    """SGD that reports clip telemetry like ClippedSGD: clips every other step at scale 0.25."""

    def __init__(self, params, lr, inf_norm_at=None):
        super().__init__(params, lr=lr)
        self.k = 0
        self.inf_norm_at = inf_norm_at
        self.last_clip_stats = None

    def step(self, closure=None):
        super().step(closure)
        clipped = self.k % 2 == 0
        norm = math.inf if self.k == self.inf_norm_at else 1.0
        self.last_clip_stats = {"grad_norm": torch.tensor(norm), "scale": torch.tensor(0.25 if clipped else 1.0),
                                "clipped": torch.tensor(clipped)}
        self.k += 1


def ddp_worker(rank, world, port, spec, out_dir):
    """One process of the DDP equivalence test (torch.multiprocessing.spawn target)."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    import clipbench.engine.train as T

    T.build_task = lambda spec, manifest: tensor_task(dropout=0.0)
    T.train(copy.deepcopy(spec), None, out_dir)
