"""The training engine on a tiny BN-free task: resume, determinism, accumulation, divergence, telemetry."""
from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch
import torch.nn as nn

from tests._kills import DieAfterSaves, Killed
from tests._tensortask import ReportingSGD, tensor_task_spec, use_tensor_task
from tests._torchstate import restore_torch_globals, torch_globals
from clipbench import config as cfgmod
from clipbench.engine import checkpoint, train as T
from clipbench.engine.distributed import Dist, EpochBatchSampler
from clipbench.engine.schedule import build_scheduler


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


def without_timing(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "timing"}


def read_history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def final_params(run_dir):
    return checkpoint.load(run_dir / "checkpoint.pt")["model"]


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_metrics(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    a = T.train(tensor_task_spec(), None, tmp_path / "a")
    b = T.train(tensor_task_spec(), None, tmp_path / "b")
    assert a["status"] == "ok" and a["steps"] == 8
    assert without_timing(a) == without_timing(b)
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()
    assert set(a["timing"]) >= {"wall_time_s", "images_per_s", "peak_rss_mb"}
    c = T.train(tensor_task_spec(seed=1), None, tmp_path / "c")
    assert c["final"] != a["final"]


@pytest.mark.parametrize("accumulate,kill_after", [(1, 3), (1, 4), (2, 3)])
def test_resume_mid_epoch_is_bit_for_bit(monkeypatch, tmp_path, accumulate, kill_after):
    """Stop right after a mid-epoch (or epoch-end) checkpoint, as a crash would, and resume."""
    use_tensor_task(monkeypatch)
    spec = tensor_task_spec(epochs=3, engine={"checkpoint_every_steps": 1},
                            lr=0.1, momentum=0.9, batch_multiplier=accumulate)
    ref = T.train(copy.deepcopy(spec), None, tmp_path / "ref")

    die = DieAfterSaves(monkeypatch, kill_after)
    with pytest.raises(Killed):
        T.train(copy.deepcopy(spec), None, tmp_path / "run")
    die.disarm()
    assert not (tmp_path / "run" / "metrics.json").exists()
    resumed = T.train(copy.deepcopy(spec), None, tmp_path / "run")
    assert resumed["timing"]["resumed_at_steps"] == [die.saves[-1]]
    assert without_timing(resumed) == without_timing(ref)
    assert (tmp_path / "run" / "history.csv").read_text() == (tmp_path / "ref" / "history.csv").read_text()
    assert_same_params(final_params(tmp_path / "run"), final_params(tmp_path / "ref"))


def test_checkpoint_of_other_settings_is_not_resumed(monkeypatch, tmp_path, capsys):
    use_tensor_task(monkeypatch)
    T.train(tensor_task_spec(epochs=1), None, tmp_path / "run")
    (tmp_path / "run" / "metrics.json").unlink()
    other = T.train(tensor_task_spec(epochs=2, lr=0.05), None, tmp_path / "run")
    assert "other settings" in capsys.readouterr().out
    fresh = T.train(tensor_task_spec(epochs=2, lr=0.05), None, tmp_path / "fresh")
    assert without_timing(other) == without_timing(fresh)
    assert other["timing"]["resumed_at_steps"] == []


def test_settings_that_do_not_change_numbers_keep_the_checkpoint(monkeypatch, tmp_path):
    a = tensor_task_spec(engine={"num_workers": 0, "fail_on_divergence": False})
    b = tensor_task_spec(engine={"num_workers": 2, "fail_on_divergence": True, "checkpoint_every_steps": 5})
    assert checkpoint.spec_hash(a) == checkpoint.spec_hash(b)
    assert checkpoint.spec_hash(a) != checkpoint.spec_hash(tensor_task_spec(lr=0.2))


def test_complete_checkpoint_writes_the_results_without_training(monkeypatch, tmp_path, capsys):
    """Killed between the last checkpoint and metrics.json, or its results deleted (a forced
    Snakemake rerun): the results come from the checkpoint, not from training it all again."""
    use_tensor_task(monkeypatch)
    first = T.train(tensor_task_spec(), None, tmp_path / "run")
    history = (tmp_path / "run" / "history.csv").read_text()
    again = T.train(tensor_task_spec(), None, tmp_path / "run")  # metrics.json there: nothing to do
    assert again == json.loads(json.dumps(first))
    for name in ("metrics.json", "history.csv"):
        (tmp_path / "run" / name).unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(T, "train_one_epoch", no_training)
    finished = T.train(tensor_task_spec(), None, tmp_path / "run")
    assert "without training" in capsys.readouterr().out
    assert without_timing(finished) == without_timing(json.loads(json.dumps(first)))
    assert (tmp_path / "run" / "history.csv").read_text() == history
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"] == first["final"]


def test_rerun_command_trains_from_step_0(monkeypatch, tmp_path, capsys):
    from clipbench import cli

    use_tensor_task(monkeypatch)
    first = T.train(tensor_task_spec(), None, tmp_path / "run")
    assert cli.main(["rerun", str(tmp_path / "run")]) == 0
    assert not any((tmp_path / "run" / n).exists() for n in ("metrics.json", "history.csv", "checkpoint.pt"))
    again = T.train(tensor_task_spec(), None, tmp_path / "run")
    assert again["timing"]["resumed_at_steps"] == [] and without_timing(again) == without_timing(first)
    with pytest.raises(SystemExit, match="not a run folder"):
        cli.main(["rerun", str(tmp_path)])


def test_checkpoint_loads_weights_only(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    T.train(tensor_task_spec(engine={"checkpoint_every_steps": 3}, epochs=1), None, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "meter", "clip", "spec_hash", "history"} <= set(state)
    assert state["completed"] is True


# -- batch multipliers -----------------------------------------------------------------------------

def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("bn", ["none", "eval"])
def test_accumulated_gradient_is_the_large_batch_gradient(bn):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)]
    if bn == "eval":
        layers.insert(1, nn.BatchNorm2d(4))
    model = nn.Sequential(*layers)
    if bn == "eval":
        model[1].running_mean.uniform_(-0.5, 0.5)
        model.eval()  # BN uses running statistics: samples stay independent
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 5, (32,))
    loss = nn.CrossEntropyLoss()
    loss(model(x), y).backward()
    big = _grads(model)
    model.zero_grad()
    micro = list(zip(x.split(8), y.split(8)))
    done = T.accumulate_gradients(model, loss, micro)
    assert len(done) == 4
    for g, h in zip(_grads(model), big):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-7)


def test_bn_in_train_mode_normalises_each_micro_batch():
    """Documented, not a bug: BN statistics are per micro-batch (as on the thesis' hardware)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 5, (32,))
    loss = nn.CrossEntropyLoss()
    loss(model(x), y).backward()
    big = _grads(model)
    model.zero_grad()
    T.accumulate_gradients(model, loss, list(zip(x.split(8), y.split(8))))
    assert not all(torch.allclose(g, h, rtol=1e-5, atol=1e-7) for g, h in zip(_grads(model), big))


def test_batch_multiplier_steps(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    r = T.train(tensor_task_spec(lr=0.1, batch_multiplier=2), None, tmp_path / "run")
    assert r["steps"] == 2 * 2 and r["batch_multiplier"] == 2


def test_sampler_resumes_and_shards_like_one_process():
    one = EpochBatchSampler(40, 8, 2, seed=3)
    one.set_epoch(5)
    full = list(one)
    assert len(full) == 4 and len({i for b in full for _, i in b}) == 32  # 40 // 8 = 5 -> 4 usable
    one.set_epoch(5, start=3)
    assert list(one) == full[3:]
    shards = []
    for rank in range(2):
        s = EpochBatchSampler(40, 8, 2, seed=3, d=Dist(rank=rank, world=2))
        s.set_epoch(5)
        shards.append(list(s))
    assert [a + b for a, b in zip(*shards)] == full
    one.set_epoch(6)
    assert list(one) != full
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(40, 9, 1, seed=0, d=Dist(rank=0, world=2))


def test_workers_do_not_change_the_numbers(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    a = T.train(tensor_task_spec(engine={"num_workers": 0}), None, tmp_path / "a")
    b = T.train(tensor_task_spec(engine={"num_workers": 2}), None, tmp_path / "b")
    assert a["final"] == b["final"]
    assert_same_params(final_params(tmp_path / "a"), final_params(tmp_path / "b"))


# -- divergence ------------------------------------------------------------------------------------

def test_nan_loss_ends_the_run_as_diverged(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch, nan_at_step=6)
    r = T.train(tensor_task_spec(epochs=3), None, tmp_path / "run")
    assert r["status"] == "diverged" and r["diverged_at_step"] == 6 and r["steps"] == 6
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "diverged"
    assert set(m["final"]) == {"train", "val"}  # epoch 1's, the last finite ones
    assert all(math.isfinite(v) for s in m["final"].values() for v in s.values())
    ckpt = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 4  # the last good state is kept, never a NaN one


def test_nonfinite_gradient_norm_ends_the_run(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    monkeypatch.setattr("clipbench.optim.build.build_optimizer",
                        lambda name, params, cfg: ReportingSGD(params, lr=0.1, inf_norm_at=5))
    r = T.train(tensor_task_spec(epochs=3), None, tmp_path / "run")
    assert r["status"] == "diverged" and r["diverged_at_step"] == 5


def test_diverged_run_without_a_finite_epoch(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch, nan_at_step=1)
    r = T.train(tensor_task_spec(), None, tmp_path / "run")
    assert r["status"] == "diverged" and r["final"] == {} and r["diverged_at_step"] == 1


def test_cli_fails_on_divergence_only_when_asked(monkeypatch, tmp_path):
    from clipbench import cli

    use_tensor_task(monkeypatch, nan_at_step=2)
    for fail, rc in ((False, 0), (True, 3)):
        spec = tensor_task_spec(engine={"fail_on_divergence": fail})
        assert cli.main(["train", "--spec", json.dumps(spec), "--out", str(tmp_path / f"run{fail}")]) == rc
        assert json.loads((tmp_path / f"run{fail}" / "metrics.json").read_text())["status"] == "diverged"


# -- telemetry -------------------------------------------------------------------------------------

def test_clip_telemetry_lr_and_thinned_losses(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch, n_train=64)
    monkeypatch.setattr("clipbench.optim.build.build_optimizer", lambda name, params, cfg: ReportingSGD(params, lr=0.1))
    r = T.train(tensor_task_spec(epochs=3, engine={"max_loss_points": 5}), None, tmp_path / "run")
    assert r["steps"] == 24
    assert r["telemetry"]["clip_fraction"] == 0.5 and r["telemetry"]["clip_scale_mean"] == pytest.approx(0.625)
    assert r["telemetry"]["lr"] == 0.1
    rows = read_history(tmp_path / "run" / "history.csv")
    losses = [int(x["step"]) for x in rows if x["split"] == "train_step"]
    assert losses == [5, 10, 15, 20, 24]
    assert {x["metric"] for x in rows if x["split"] == "train"} == {"loss", "top1", "top5", "clip_fraction",
                                                                   "clip_scale_mean", "lr"}
    assert set(r["final"]["train"]) == {"loss", "top1", "top5"}


def test_dvclive_logs_without_a_repository(monkeypatch, tmp_path):
    pytest.importorskip("dvclive")
    use_tensor_task(monkeypatch)
    monkeypatch.chdir(tmp_path)
    T.train(tensor_task_spec(engine={"dvclive": True}), None, tmp_path / "run")
    live = tmp_path / "run" / "dvclive"
    assert json.loads((live / "metrics.json").read_text())["val"]["top1"] >= 0
    assert (live / "plots" / "metrics" / "train_step" / "loss.tsv").exists()
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / "dvc.yaml").exists()


# -- schedules -------------------------------------------------------------------------------------

def _lrs(sched_cfg, steps=10, per_epoch=2):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, sched_cfg, per_epoch, steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
    return out


def test_schedules():
    assert _lrs(None) == [1.0] * 10 and _lrs({"name": "constant"}) == [1.0] * 10
    assert _lrs({"name": "step", "step_size": 2, "gamma": 0.5}) == [1, 1, 1, 1, .5, .5, .5, .5, .25, .25]
    cos = _lrs({"name": "cosine", "eta_min": 0.1})
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.55) and all(a > b for a, b in zip(cos, cos[1:]))
    assert _lrs({"name": "poly", "power": 2.0})[5] == pytest.approx(0.25)


def test_schedule_resumes(monkeypatch, tmp_path):
    use_tensor_task(monkeypatch)
    spec = tensor_task_spec(epochs=3, engine={"checkpoint_every_steps": 1},
                            lr=0.1, schedule={"name": "cosine", "eta_min": 0.0})
    ref = T.train(copy.deepcopy(spec), None, tmp_path / "ref")
    assert ref["telemetry"]["lr"] == pytest.approx(0.0, abs=1e-12)
    die = DieAfterSaves(monkeypatch, 6)
    with pytest.raises(Killed):
        T.train(copy.deepcopy(spec), None, tmp_path / "run")
    die.disarm()
    assert without_timing(T.train(copy.deepcopy(spec), None, tmp_path / "run")) == without_timing(ref)


def test_sstm_schedule_is_rejected(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["tasks"]["classification"]["methods"]["clipped_sstm"]["schedule"] = {"name": "cosine"}
    with pytest.raises(cfgmod.ConfigError, match=r"methods\.clipped_sstm\.schedule: clipped-SSTM has no"):
        cfgmod.validate(cfg)
    cfg["tasks"]["classification"]["methods"]["clipped_sstm"]["schedule"] = {"name": "constant"}
    cfgmod.validate(cfg)
    cfg["tasks"]["classification"]["methods"]["sgd"]["schedule"] = {"name": "cosine", "t_max": 100}
    cfgmod.validate(cfg)
    cfg["tasks"]["classification"]["methods"]["sgd"]["schedule"] = {"name": "cosin"}
    with pytest.raises(cfgmod.ConfigError, match=r"methods\.sgd\.schedule\.name"):
        cfgmod.validate(cfg)


def test_schedule_needs_a_learning_rate():
    class NoLR(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"a": 1.0})

    with pytest.raises(ValueError, match="no learning rate"):
        build_scheduler(NoLR([nn.Parameter(torch.zeros(1))]), {"name": "step"}, 1, 10, where="x.schedule")


def test_engine_config_keys_validate(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["engine"].update({"checkpoint_every_steps": 100, "amp": "bf16", "channels_last": True, "compile": False,
                          "ddp": False, "max_loss_points": 200, "dvclive": False})
    cfgmod.validate(cfg)
    cfg["engine"]["amp"] = "fp8"
    with pytest.raises(cfgmod.ConfigError, match="engine.amp"):
        cfgmod.validate(cfg)


def test_amp_needs_cuda_and_is_recorded(monkeypatch, tmp_path, capsys):
    use_tensor_task(monkeypatch)
    r = T.train(tensor_task_spec(engine={"amp": "fp16", "channels_last": True}), None, tmp_path / "run")
    assert r["status"] == "ok" and r["amp"] == "none"
    assert "needs CUDA" in capsys.readouterr().out


def test_bench_train_reports_ratios_and_skips_unknown_methods(capsys):
    from clipbench import cli

    rc = cli.main(["bench", "train", "--methods", "sgd,adam,no_such_method", "--image-size", "32", "--no-control",
                   "--batch-size", "2", "--num-classes", "3", "--rounds", "1", "--steps", "1", "--warmup", "0"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "| sgd |" in out and "1.000x" in out and "| adam |" in out
    assert "skipping no_such_method" in err


def test_clip_stats_for_coordinate_clipping_always_on():
    from clipbench.optim import make_optimizer

    cfg = {"lr": 0.1, "momentum": 0.9, "clipping": "coordinate", "clip_level": 0.1, "clip_target": "momentum"}
    p = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer("clipped_sgd", [p], cfg)
    p.grad = torch.tensor([1.0, 0.0, -0.05])
    opt.step()
    stats = opt.last_clip_stats
    assert stats["clipped"] is True and math.isclose(stats["entry_fraction"], 1 / 3)
