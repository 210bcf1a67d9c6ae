"""Run specs (``clipbench.spec.run_spec``) small enough for a test, validated as a user's
config is, for the tiny prepared data sets of conftest.py's fixtures:

``classification_spec``: resnet18 on ``tiny_imagenet`` (16 px, 2 epochs by default).
``segmentation_spec``: fcn32s_tiny on ``tiny_voc`` (64 px, 1 epoch); keyword arguments
override entries of the task's config.

(The engine tests' specs for a task patched in on tensors are tests/_tensortask.py's
``tensor_task_spec``: no data set, no config validation.)"""
from __future__ import annotations

import copy

from clipbench import config as cfgmod
from clipbench import spec as jobspec


def classification_spec(method: str = "sgd", seed: int = 0, epochs: int = 2, **method_cfg) -> dict:
    """A run spec for a fast classification run on ``tiny_imagenet``."""
    cfg = {
        "run": {"tasks": ["classification"], "methods": [method], "seeds": [seed]},
        "engine": {"device": "cpu", "threads": 1},
        "tasks": {"classification": {
            "dataset": "imagenet100", "model": "resnet18", "image_size": 16, "epochs": epochs,
            "batch_size": 8, "eval_batch_size": 16,
            "methods": {method: method_cfg or {"lr": 0.01, "momentum": 0.9}},
        }},
    }
    cfgmod.validate(cfg)
    return jobspec.run_spec(copy.deepcopy(cfg), "classification", method, seed)


def segmentation_spec(**task) -> dict:
    """A run spec for a one-epoch segmentation run on ``tiny_voc``."""
    cfg = {
        "run": {"tasks": ["segmentation"], "methods": ["sgd"], "seeds": [0]},
        "engine": {"device": "cpu", "threads": 1},
        "tasks": {"segmentation": {
            "model": "fcn32s_tiny", "pretrained": "none", "base_size": 64, "crop_size": 64, "eval_size": 64,
            "epochs": 1, "batch_size": 3, "eval_batch_size": 3, "methods": {"sgd": {"lr": 0.01, "momentum": 0.9}},
            **task}},
    }
    cfgmod.validate(cfg)
    return jobspec.run_spec(cfg, "segmentation", "sgd", 0)
