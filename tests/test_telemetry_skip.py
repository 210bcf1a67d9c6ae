"""A step an fp16 GradScaler skips (inf/NaN gradient) adds nothing to the clip statistics.

On a skipped step ``optimizer.step()`` does not run, so ``opt.last_clip_stats`` still holds the
previous step's record; it must not be counted a second time. A real skip needs CUDA (a
GradScaler with ``enabled=True``), so a scaler with the same protocol simulates it on the CPU.
"""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from clipbench.engine import telemetry
from clipbench.engine import train as T
from tests._tensortask import ReportingSGD, tensor_task_spec, use_tensor_task
from tests._torchstate import restore_torch_globals, torch_globals


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


class SkippingScaler:
    """GradScaler's protocol (scale, unscale_, step, update, state) at scale 1 on the CPU; it
    skips ``optimizer.step()`` at the given 0-based step numbers, as GradScaler does on inf/NaN."""

    def __init__(self, skip_at=()) -> None:
        self.skip_at, self.k = set(skip_at), 0

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer):
        skip = self.k in self.skip_at
        self.k += 1
        return None if skip else optimizer.step()

    def update(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.k = state["k"]


def record(clipped: bool, scale: float) -> dict:
    return {"clipped": torch.tensor(clipped), "scale": torch.tensor(scale), "grad_norm": torch.tensor(1.0)}


def test_a_skipped_step_adds_nothing_to_the_statistics():
    clip = telemetry.ClipStats()
    clip.update(record(True, 0.25))
    clip.update(record(True, 0.25), skipped=True)  # the same, stale record: ignored
    clip.update(record(True, 0.25), skipped=True)
    clip.update(record(False, 1.0))
    assert clip.compute() == {"clip_fraction": 0.5, "clip_scale_mean": pytest.approx(0.625)}
    assert clip.skipped == 2 and clip.counts["clipped"] == 2
    # Checkpointed mid-epoch and resumed; an old checkpoint without the count reads 0.
    again = telemetry.ClipStats()
    again.load_state_dict(clip.state_dict())
    assert again.compute() == clip.compute() and again.skipped_total == 2
    old = telemetry.ClipStats()
    old.load_state_dict({"sums": {"clipped": 1.0}, "counts": {"clipped": 2}})
    assert old.skipped_total == 0 and telemetry.ClipStats.skipped_in(None) == 0
    # The next epoch starts from the run's count so far.
    nxt = telemetry.ClipStats(telemetry.ClipStats.skipped_in(clip.state_dict()))
    nxt.update(None, skipped=True)
    assert nxt.skipped == 1 and nxt.skipped_total == 3 and nxt.compute() == {}


def test_step_watch_sees_whether_the_optimizer_stepped():
    opt = ReportingSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(2)
    with telemetry.StepWatch(opt) as watch:
        pass
    assert not watch.ran
    with telemetry.StepWatch(opt) as watch:
        opt.step()
    assert watch.ran
    with telemetry.StepWatch(opt) as watch:  # the hook is gone once the block ends
        pass
    assert not watch.ran


def test_a_run_with_skipped_fp16_steps_counts_only_the_steps_taken(monkeypatch, tmp_path):
    """2 epochs of 4 steps; the scaler skips steps 1 and 2 (epoch 1). ReportingSGD clips every
    other step it takes (scale 0.25), so the steps taken clip 1/2 of the time in each epoch;
    re-reading the stale record at the skipped steps would make epoch 1 read 3/4."""
    use_tensor_task(monkeypatch)
    monkeypatch.setattr("clipbench.optim.build.build_optimizer", lambda name, params, cfg: ReportingSGD(params, lr=0.1))
    real_setup = T.setup
    monkeypatch.setattr(T, "setup", lambda *a, **kw: dataclasses.replace(real_setup(*a, **kw),
                                                                         scaler=SkippingScaler({1, 2})))
    r = T.train(tensor_task_spec(epochs=2), None, tmp_path / "run")
    assert r["status"] == "ok" and r["steps"] == 8
    assert r["telemetry"]["skipped_steps"] == 2
    assert r["telemetry"]["clip_fraction"] == 0.5 and r["telemetry"]["clip_scale_mean"] == pytest.approx(0.625)
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    per_epoch = {int(x["epoch"]): float(x["value"]) for x in rows
                 if x["split"] == "train" and x["metric"] == "clip_fraction"}
    assert per_epoch == {1: 0.5, 2: 0.5}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["telemetry"]["skipped_steps"] == 2
    # Without the scaler no step is skipped, and metrics.json says so.
    monkeypatch.setattr(T, "setup", real_setup)
    plain = T.train(tensor_task_spec(epochs=2), None, tmp_path / "plain")
    assert plain["telemetry"]["skipped_steps"] == 0 and plain["telemetry"]["clip_fraction"] == 0.5


def test_a_real_grad_scaler_skip_through_train_step():
    """torch's GradScaler on the CPU (enabled) skips the step whose gradient has an inf; the
    train step then adds no clip record and counts the skip."""
    from types import SimpleNamespace

    from clipbench.engine.checkpoint import Progress
    from clipbench.engine.distributed import Dist
    from clipbench.metrics import ClassificationMeter

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    poison = {"on": False}
    model.weight.register_hook(lambda g: g * float("inf") if poison["on"] else g)
    s = SimpleNamespace(dist=Dist(), device=torch.device("cpu"), channels_last=False, model=model,
                        task=SimpleNamespace(loss=torch.nn.CrossEntropyLoss()), scaler=torch.amp.GradScaler("cpu"),
                        amp="none", accumulate=1, optimizer=ReportingSGD(model.parameters(), lr=0.1), scheduler=None)
    progress, meter, clip = Progress(), ClassificationMeter(), telemetry.ClipStats()
    batch = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    for step in range(4):
        poison["on"] = step in (1, 2)
        before = model.weight.detach().clone()
        assert T.train_step(s, progress, meter, clip, batch) is not None
        assert torch.equal(model.weight, before) == poison["on"]  # a skipped step changes nothing
    # Two steps taken (ReportingSGD clips the first, not the second), two skipped.
    assert clip.skipped == 2 and clip.counts["clipped"] == 2
    assert clip.compute() == {"clip_fraction": 0.5, "clip_scale_mean": pytest.approx(0.625)}
