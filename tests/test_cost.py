"""`clipbench bench cost` as a CPU smoke test, its arithmetic, and per-task loader settings."""
import types

import pytest
import torch

from clipbench.bench import cost
from clipbench.bench.cost import TaskCost, main
from clipbench.engine.checkpoint import spec_hash
from clipbench.engine.env import loader_options


def _cost(workers, step=1.0, sample=0.1):
    return TaskCost(task="superres", batch=4, timed_batch=2, step_s={"sgd": step}, sample_s=sample, workers=workers,
                    steps_per_run={"sgd": 100}, eval_s=5.0, epochs=2, seeds=3)


def test_the_slower_of_step_and_loader_bounds_a_step(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert _cost(0).loader_s("sgd", 1) == 4 * 0.1  # in the training process, and added
    assert _cost(0).run_s("sgd", 1) == 100 * (1.0 + 0.4) + 2 * 5.0
    assert _cost(8).loader_s("sgd", 2) == 8 * 0.1 / 2  # 8 workers on 2 cores run 2 at a time
    assert _cost(8).run_s("sgd", 2) == 100 * 1.0 + 2 * 5.0
    assert _cost(8, sample=1.0).run_s("sgd", 1) == 100 * 2.0 + 2 * 5.0  # loader-bound


def test_cost_smoke_runs_on_the_demo_config(repo, capsys, monkeypatch):
    monkeypatch.chdir(repo)
    assert main(["--configfile", "config/config.yaml", "--device", "cpu", "--smoke", "--steps", "1",
                 "--samples", "1", "--tasks", "superres", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "| superres | " in out and "| segmentation | " in out and "Smoke test on cpu" in out
    assert "whole replication:" in out and "CPU-device-h" in out


def test_loaders_per_task_override_the_engine_and_leave_the_spec_hash():
    eng = {"num_workers": 2, "loaders": {"superres": {"num_workers": 6, "pin_memory": False},
                                         "segmentation": {"pin_memory": True}}}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loader_options(eng, "superres", cuda) == {"num_workers": 6, "pin_memory": False, "persistent_workers": True}
    assert loader_options(eng, "segmentation", cuda)["num_workers"] == 2
    assert loader_options(eng, "segmentation", cuda)["pin_memory"] is True
    assert loader_options(eng, "classification", cpu) == {"num_workers": 2, "pin_memory": False,
                                                          "persistent_workers": True}
    assert loader_options({}, "superres", cuda) == {"num_workers": 0, "pin_memory": True, "persistent_workers": False}
    spec = {"task": "superres", "engine": {"num_workers": 2}}
    assert spec_hash(spec) == spec_hash({**spec, "engine": eng})


def test_a_task_is_asked_for_its_example_and_named_when_it_has_none(monkeypatch):
    from clipbench.tasks import registry

    model, loss, (x, y), eval_pixels = cost.example_step(
        "segmentation", {"model": "fcn32s_tiny", "crop_size": 32, "eval_size": None}, {}, 2)
    assert x.shape == (2, 3, 32, 32) and y.shape == (2, 32, 32) and eval_pixels == 375 * 500 / 32**2
    monkeypatch.setattr(registry, "load_module", lambda name: types.ModuleType("clipbench.tasks.bare"))
    with pytest.raises(ValueError, match=r"task 'superres' .* clipbench.tasks.bare has no example_model\(\)"):
        cost.example_step("superres", {}, {}, 2)


def test_the_loader_and_the_sizes_are_asked_of_the_task_and_the_dataset(tmp_path):
    from clipbench import config as cfgmod

    config = cfgmod.load("config/config.yaml", "config/thesis.yaml")
    seg = config["tasks"]["segmentation"]
    assert cost.dataset_size(seg, config)[:2] == (1_464, 1_449)
    config["datasets"]["voc2012"]["sbd"] = True
    assert cost.dataset_size(seg, config)[:2] == (10_582, 1_449)
    sr = config["tasks"]["superres"]
    assert cost.dataset_size(sr, config)[:2] == (800 * sr["repeat"], 100)
    dataset = cost.task_function("segmentation", "stand_in_dataset")(seg, config["datasets"]["voc2012"], tmp_path / "f", 2)
    image, mask = dataset[0]
    assert len(dataset) == 2 and image.shape[-2:] == mask.shape[-2:] == (seg["crop_size"],) * 2
