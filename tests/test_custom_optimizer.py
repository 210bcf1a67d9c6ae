"""A method of the user's own: an optimizer class defined here, named in the config by import
path, taken through the whole workflow (config check, training, a crash and resume, collect,
report), with nothing in src/ edited."""
from __future__ import annotations

import copy

import pytest
import torch

from clipbench import config as cfgmod
from clipbench.engine import checkpoint
from clipbench.engine import train as T
from clipbench.optim import build_optimizer
from clipbench.report import collect, render
from clipbench import spec as jobspec
from tests._kills import DieAfterSaves, Killed
from tests._torchstate import restore_torch_globals, torch_globals

PATH = "tests.test_custom_optimizer:SignMomentum"


class SignMomentum(torch.optim.Optimizer):
    """signSGD with momentum (Bernstein et al. 2018): x -= lr * sign(buf), buf = mu buf + g.
    It has per-parameter state, so a resume that lost it would show."""

    def __init__(self, params, lr: float, momentum: float = 0.9):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                buf = state.setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.add_(buf.sign(), alpha=-group["lr"])


class NotAnOptimizer:
    pass


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


def _config(**method) -> dict:
    cfg = {
        "run": {"tasks": ["classification"], "methods": ["sgd", "signsgd"], "seeds": [0]},
        "engine": {"device": "cpu", "threads": 1, "dvclive": False, "checkpoint_every_steps": 1},
        "tasks": {"classification": {
            "dataset": "imagenet100", "model": "resnet18", "image_size": 16, "epochs": 2,
            "batch_size": 8, "eval_batch_size": 16,
            "methods": {"sgd": {"lr": 0.01, "momentum": 0.9},
                        "signsgd": method or {"optimizer": PATH, "lr": 1e-3, "momentum": 0.8}},
        }},
    }
    return cfgmod.validate(cfg)


def test_config_takes_a_method_by_class_and_refuses_typos():
    cfg = _config()
    assert cfg["tasks"]["classification"]["methods"]["signsgd"]["batch_multiplier"] == 1  # engine default
    assert "signsgd" in cfgmod.methods(cfg)
    typo = copy.deepcopy(cfg)
    typo["run"]["methods"] = ["sgd", "signsdg"]
    with pytest.raises(cfgmod.ConfigError, match=r"signsdg.*check the spelling.*tasks\.classification"):
        cfgmod.validate(typo)
    no_class = copy.deepcopy(cfg)
    no_class["tasks"]["classification"]["methods"]["signsgd"].pop("optimizer")
    with pytest.raises(cfgmod.ConfigError, match=r"tasks\.classification\.methods\.signsgd: 'optimizer'"):
        cfgmod.validate(no_class)


@pytest.mark.parametrize("path,message", [
    ("tests.test_custom_optimizer:Missing", "has no attribute 'Missing'"),
    ("tests.no_such_module:SignMomentum", "cannot import module"),
    ("tests.test_custom_optimizer:NotAnOptimizer", "not a subclass of torch.optim.Optimizer"),
    ("torch.optim.AdamW", "must look like 'package.module:Class'"),
])
def test_clear_errors_name_the_key(path, message):
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match=f"method 'mine': optimizer: '{path}'.*{message}"):
        build_optimizer("mine", params, {"optimizer": path, "lr": 0.1})
    with pytest.raises(ValueError, match="method 'mine'.*does not take these options"):
        build_optimizer("mine", params, {"optimizer": PATH, "lr": 0.1, "betas": [0.9, 0.99]})


def test_adamw_by_name():
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer("adamw", params, {"optimizer": "torch.optim:AdamW", "lr": 1e-3, "weight_decay": 0.01,
                                            "betas": [0.9, 0.95], "batch_multiplier": 2})
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_own_optimizer_trains_resumes_and_is_reported(tiny_imagenet, tmp_path, monkeypatch):
    cfg = _config()
    spec = jobspec.run_spec(cfg, "classification", "signsgd", 0)
    ref = T.train(copy.deepcopy(spec), tiny_imagenet, tmp_path / "runs/classification/signsgd/seed0")
    assert ref["status"] == "ok" and ref["steps"] == 8 and ref["telemetry"]["lr"] == 1e-3
    state = checkpoint.load(tmp_path / "runs/classification/signsgd/seed0/checkpoint.pt")["optimizer"]
    assert state["param_groups"][0]["momentum"] == 0.8 and state["state"]  # its buffers are checkpointed

    # A crash after the 3rd checkpoint, then the same command again: bit-for-bit the same run.
    die = DieAfterSaves(monkeypatch, 3)
    with pytest.raises(Killed):
        T.train(copy.deepcopy(spec), tiny_imagenet, tmp_path / "crashed")
    die.disarm()
    resumed = T.train(copy.deepcopy(spec), tiny_imagenet, tmp_path / "crashed")
    assert resumed["timing"]["resumed_at_steps"] == [die.saves[-1]]
    assert {k: v for k, v in resumed.items() if k != "timing"} == {k: v for k, v in ref.items() if k != "timing"}
    assert (tmp_path / "crashed/history.csv").read_text() == \
        (tmp_path / "runs/classification/signsgd/seed0/history.csv").read_text()

    sgd = T.train(jobspec.run_spec(cfg, "classification", "sgd", 0), tiny_imagenet,
                  tmp_path / "runs/classification/sgd/seed0")
    assert sgd["status"] == "ok"
    runs = [tmp_path / "runs/classification" / m / "seed0" for m in ("sgd", "signsgd")]
    summary = collect.collect(runs, tmp_path / "summary.csv")
    assert set(summary.method) == {"sgd", "signsgd"}
    render.build_report(tmp_path / "summary.csv", tmp_path / "report")
    html = (tmp_path / "report/index.html").read_text()
    assert "signsgd" in html and "SGD" in html
