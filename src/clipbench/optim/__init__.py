"""TEMPORARY until the optimizers branch lands: torch's SGD and Adam only."""
import torch


def build_optimizer(name, params, cfg):
    if name == "sgd":
        return torch.optim.SGD(params, **cfg)
    if name == "adam":
        return torch.optim.Adam(params, **cfg)
    raise ValueError(f"optimizer {name!r} not available yet")
