"""SSTM is evaluated at its output y with BatchNorm statistics recomputed at y.

Its gradients are taken at x, so BatchNorm's running statistics are gathered at x; before the
evaluation at y the engine recomputes them at y over ``engine.bn_recompute_batches`` training
batches (``recompute_bn``, as ``torch.optim.swa_utils.update_bn``) and puts x's back after it.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import clipbench.engine.train as T
from clipbench.engine import checkpoint
from clipbench.engine.distributed import LeadingBatches, SeededSamples
from tests._tensortask import tensor_task, tensor_task_spec
from tests._torchstate import restore_torch_globals, torch_globals

SSTM = {"a": 2.0, "L": 2.0, "ratio_bound": 0.9}  # y lags x: its statistics differ from x's


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


def bn_task(dropout=0.1, **kw):
    """The tiny task with a BatchNorm layer (and dropout, which draws from the global RNG)."""
    task = tensor_task(dropout=dropout, **kw)
    dim, classes = task.model[0].in_features, task.model[-1].out_features
    task.model = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(dropout),
                               nn.Linear(16, classes))
    return task


def _spec(bn_batches, method="sstm", epochs=3, **engine):
    cfg = {"lr": 0.1, "momentum": 0.9} if method == "sgd" else dict(SSTM)
    return tensor_task_spec(method=method, epochs=epochs, batch_size=8,
                            engine={"bn_recompute_batches": bn_batches, "checkpoint_every_steps": 1, **engine}, **cfg)


def _direct_stats(model, batches):
    """Each BatchNorm's input, per batch, in a forward in train mode: the mean over the batches
    of its batch means and of its unbiased batch variances."""
    model = copy.deepcopy(model).train()
    seen: dict[nn.Module, list] = {}
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    hooks = [m.register_forward_pre_hook(lambda m, inp: seen.setdefault(m, []).append(inp[0].detach()))
             for m in bns]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    return [(torch.stack([x.mean(0) for x in seen[m]]).mean(0),
             torch.stack([x.var(0, unbiased=True) for x in seen[m]]).mean(0)) for m in bns]


def test_evaluation_at_y_uses_statistics_recomputed_at_y(monkeypatch, tmp_path):
    monkeypatch.setattr(T, "build_task", lambda spec, manifest: bn_task())
    seen = []
    evaluate = T.evaluate

    def spy(task, model, loader, *a, **k):
        bn = model[1]
        seen.append({"model": copy.deepcopy(model), "mean": bn.running_mean.clone(), "var": bn.running_var.clone(),
                     "count": int(bn.num_batches_tracked), "momentum": bn.momentum})
        return evaluate(task, model, loader, *a, **k)

    monkeypatch.setattr(T, "evaluate", spy)
    result = T.train(_spec(bn_batches=3, epochs=2), None, tmp_path / "run")
    # per epoch: at y (recomputed), then at x (x's statistics)
    assert len(seen) == 4
    task = bn_task()
    for epoch, (at_y, at_x) in enumerate(zip(seen[::2], seen[1::2])):
        # The same batches as the recompute: the first 3 global batches of the epoch's order.
        sampler = LeadingBatches(len(task.train_set), 8, 0, 3)
        sampler.set_epoch(epoch)
        data = SeededSamples(task.train_set)
        batches = [torch.stack([data[key][0] for key in keys]) for keys in sampler]
        assert len(batches) == 3
        (mean, var), = _direct_stats(at_y["model"], batches)
        torch.testing.assert_close(at_y["mean"], mean, rtol=1e-5, atol=1e-6 * float(mean.abs().max()))
        torch.testing.assert_close(at_y["var"], var, rtol=1e-5, atol=1e-6 * float(var.abs().max()))
        assert at_y["count"] == 3 and at_y["momentum"] == 0.1  # the layer's momentum is back
        # x is evaluated with x's own statistics: the training run's (count: steps so far)
        assert at_x["count"] == 4 * (epoch + 1)
        assert not torch.equal(at_x["mean"], at_y["mean"])
    assert result["final"]["val"] != result["final"]["val_x"]


def test_training_continues_bit_for_bit(monkeypatch, tmp_path):
    """With the recompute, training (x, x's BN statistics, the optimizer, the RNG stream via
    dropout, the data order) is exactly as without it, and so is a run resumed after a crash."""
    monkeypatch.setattr(T, "build_task", lambda spec, manifest: bn_task())
    on = T.train(_spec(bn_batches=10), None, tmp_path / "on")
    off = T.train(_spec(bn_batches=0), None, tmp_path / "off")
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("on", "off"))
    # The RNG after the last evaluation: what a resumed run would continue from.
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"]) and a["rng"]["python"] == b["rng"]["python"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    assert on["final"]["train"] == off["final"]["train"] and on["final"]["val_x"] == off["final"]["val_x"]
    losses = [[r for r in x.read_text().splitlines() if "train_step" in r] for x in
              (tmp_path / "on" / "history.csv", tmp_path / "off" / "history.csv")]
    assert losses[0] == losses[1] and losses[0]
    # Only the evaluation at y changed.
    assert on["final"]["val"] != off["final"]["val"]

    # A crash after an epoch end's recompute, then a rerun: the same end, bit for bit.
    train_step, calls = T.train_step, {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 2, after epoch 1's evaluation and a mid-epoch checkpoint
            raise RuntimeError("crash")
        return train_step(*a, **k)

    monkeypatch.setattr(T, "train_step", crashing)
    with pytest.raises(RuntimeError, match="crash"):
        T.train(_spec(bn_batches=10), None, tmp_path / "resumed")
    monkeypatch.setattr(T, "train_step", train_step)
    resumed = T.train(_spec(bn_batches=10), None, tmp_path / "resumed")
    assert resumed["timing"]["resumed_at_steps"] == [6]
    assert resumed["final"] == on["final"]
    c = checkpoint.load(tmp_path / "resumed" / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], c["model"][k]), k


@pytest.mark.parametrize("case", ["sstm_without_bn", "sgd_with_bn"])
def test_unaffected_without_bn_or_output(monkeypatch, tmp_path, case):
    """A BN-free model under SSTM, and a method evaluated at its iterate (SGD), are unaffected."""
    build, method = (tensor_task, "sstm") if case == "sstm_without_bn" else (bn_task, "sgd")
    monkeypatch.setattr(T, "build_task", lambda spec, manifest: build())
    runs = {n: T.train(_spec(bn_batches=n, method=method, epochs=2), None, tmp_path / str(n)) for n in (0, 10)}
    assert runs[0]["final"] == runs[10]["final"]
    a, b = (checkpoint.load(tmp_path / str(n) / "checkpoint.pt") for n in (0, 10))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_recompute_bn_is_update_bn(tmp_path):
    """``recompute_bn`` gives ``torch.optim.swa_utils.update_bn``'s statistics, restores the
    momentum and the mode, and leaves the global RNG alone (dropout in the model)."""
    torch.manual_seed(0)
    model = bn_task().model
    batches = [(torch.randn(8, 6), torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    ref = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn(((x,) for x, _ in batches), ref)
    model.eval()
    state = torch.random.get_rng_state()
    assert T.recompute_bn(model, batches, torch.device("cpu")) == 4
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not model.training and model[1].momentum == 0.1
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert T.recompute_bn(nn.Linear(2, 2), batches, torch.device("cpu")) == 0
