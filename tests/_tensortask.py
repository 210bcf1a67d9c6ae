"""A BN-free tiny task on tensors, and a test-local optimizer that reports clip telemetry.

Used by the engine tests (``from tests._tinytask import ...``) through ``monkeypatch`` of ``clipbench.engine.train.build_task``,
so they run the real loop in well under a second.
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


def tiny_task(n_train=32, n_val=16, dim=6, classes=3, nan_at_step=None, dropout=0.1):
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


def tiny_spec(method="sgd", epochs=2, batch_size=8, seed=0, engine=None, **method_cfg):
    return {
        "task": "classification", "method": method, "seed": seed,
        "task_config": {"epochs": epochs, "batch_size": batch_size, "eval_batch_size": 16},
        "method_config": method_cfg or {"lr": 0.1, "momentum": 0.9},
        "engine": {"device": "cpu", "threads": 1, "deterministic": True, "dvclive": False, **(engine or {})},
    }


def use_tiny_task(monkeypatch, **kw):
    import clipbench.engine.train as T

    monkeypatch.setattr(T, "build_task", lambda spec, manifest: tiny_task(**kw))


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

    T.build_task = lambda spec, manifest: tiny_task(dropout=0.0)
    T.train(copy.deepcopy(spec), None, out_dir)


def torch_globals():
    """What ``train()`` sets process-wide (threads, deterministic mode), to restore after a test."""
    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()


def restore_torch_globals(saved):
    threads, det, warn_only = saved
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
