"""``clipbench bench cost``: what the configured replication costs on the device at hand.

    clipbench bench cost [--configfile config/config.yaml config/thesis.yaml] [--smoke]

For each task of ``run.tasks`` it builds the task's model as the config says (the thesis':
ResNet-18, FCN-32s on VGG16, EDSR-baseline) and times, separately,

* a training step: forward, backward and each method's optimizer step, on random inputs of
  the training shape (batch ``batch_size`` x ``batch_multiplier``), with the engine's
  ``amp`` and ``channels_last``; the model and the inputs are the task's, asked of its module
  (``example_model``, ``example_batch``), which needs no data;
* the loader: one training sample of the task's real pipeline (decode, augment, convert) on
  one core, on stand-in files of the real sizes (ImageNet-sized JPEGs, pre-resized when the
  config pre-resizes; VOC-sized image/mask pairs; DIV2K-sized PNGs, decoded into the cache
  when the config caches: the task's ``stand_in_dataset``), times the samples of a step, over
  the task's loader workers.

With loader workers the two overlap and the slower one bounds a step; without, they add.
A run is ``epochs`` x (steps x that bound + one evaluation pass, estimated as a forward pass
per validation pixel at a third of a training step's cost per pixel). The replication is every
method x seed of ``run``. Dataset sizes are the real ones (each dataset module's
``real_size``), so the estimate does not need the data.

``--smoke`` (the default on a CPU): two steps at batch 2, scaled linearly to the configured
batch; it checks that every thesis model builds and steps here, and its hours are a CPU's,
not a GPU's.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipbench import config as cfgmod
from clipbench.engine.env import autocast, loader_options, pick_device
from clipbench.optim import make_optimizer
from clipbench.tasks import registry

MARGIN = 1.25  # ask for a quarter more than the estimate: evaluation outliers, restarts


@dataclass
class TaskCost:
    task: str
    batch: int
    timed_batch: int
    step_s: dict  # method -> seconds per optimizer step (all its micro-batches)
    sample_s: float  # loader: seconds of one core per training sample
    workers: int
    steps_per_run: dict  # method -> optimizer steps per run
    eval_s: float  # one evaluation pass
    epochs: int
    seeds: int

    def loader_s(self, method: str, accumulate: int) -> float:
        """Loader seconds per optimizer step: its samples over the workers (cores permitting)."""
        parallel = max(1, min(self.workers, os.cpu_count() or 1))
        return self.batch * accumulate * self.sample_s / parallel

    def run_s(self, method: str, accumulate: int) -> float:
        step, load = self.step_s[method], self.loader_s(method, accumulate)
        per_step = max(step, load) if self.workers > 0 else step + load
        return self.steps_per_run[method] * per_step + self.epochs * self.eval_s


# -- models and inputs: the task's ----------------------------------------------------------------

def task_function(task: str, name: str):
    """``name`` of the task's module (``example_model``, ``example_batch``: see
    docs/adding-a-task.md); an error naming both when the task has none."""
    module = registry.load_module(task)
    fn = getattr(module, name, None)
    if fn is None:
        raise ValueError(f"clipbench bench cost: task {task!r} cannot be costed: its module {module.__name__} has no "
                         f"{name}() (docs/adding-a-task.md, 'Without the data')")
    return fn


def example_step(task: str, cfg: dict, ds_cfg: dict, batch: int):
    """(model, loss, a random training batch of ``batch``, pixels of one validation input per
    pixel of one training input), as the task builds them without its data."""
    model, loss_fn = task_function(task, "example_model")(cfg, ds_cfg)
    example_batch = task_function(task, "example_batch")
    torch.manual_seed(0)
    inputs, targets = example_batch(cfg, ds_cfg, batch, train=True)
    val_inputs, _ = example_batch(cfg, ds_cfg, 1, train=False)
    return model, loss_fn, (inputs, targets), val_inputs[0, 0].numel() / inputs[0, 0].numel()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(model, loss_fn, batch, methods: dict, device, eng: dict, steps: int, warmup: int) -> tuple[float, dict]:
    """(seconds of forward + backward of one micro-batch, {method: seconds of its optimizer step})."""
    amp, channels_last = eng.get("amp", "none") if device.type == "cuda" else "none", eng.get("channels_last", False)
    model = model.to(device)
    x, y = (t.to(device) for t in batch)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    model.train()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(x), y)
        loss.backward()

    times = []
    for k in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        fwd_bwd()
        _sync(device)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    opt_s = {}
    for method, mcfg in methods.items():  # on the last gradients; each from the same weights
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # A level measured from the noise ({quantile: q}) does not change a step's cost: any will do.
        mcfg = {k: (1.0 if isinstance(v, dict) and "quantile" in v else v) for k, v in mcfg.items()}
        opt = make_optimizer(method, model.parameters(), mcfg)
        opt.step()  # the first step allocates the state
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(max(2, steps)):
            opt.step()
        _sync(device)
        opt_s[method] = (time.perf_counter() - t0) / max(2, steps)
        model.load_state_dict(state)
        del opt
    return float(np.median(times)), opt_s


# -- the loader ------------------------------------------------------------------------------------

def sample_seconds(dataset, samples: int) -> float:
    """Seconds of one core per training sample (as in a loader worker: one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        dataset[0]
        t0 = time.perf_counter()
        for i in range(samples):
            dataset[(i + 1) % len(dataset)]
        return (time.perf_counter() - t0) / samples
    finally:
        torch.set_num_threads(threads)


# -- the estimate ----------------------------------------------------------------------------------

def dataset_size(cfg: dict, config: dict) -> tuple[int, int, str]:
    """(training samples per epoch, validation images, where the sizes come from), the real
    dataset's as its module states them; a task with ``repeat`` draws that many samples per
    training image and epoch."""
    from clipbench.data.datasets import DATASETS

    n_train, n_val, note = DATASETS[cfg["dataset"]].real_size(config["datasets"][cfg["dataset"]])
    return n_train * int(cfg.get("repeat", 1)), n_val, note


def estimate_task(task: str, config: dict, device, smoke: bool, steps: int, samples: int, tmp: Path) -> TaskCost:
    cfg = config["tasks"][task]
    eng = config.get("engine", {})
    from clipbench.config import task_methods

    methods = {m: cfg["methods"][m] for m in task_methods(config, task)}
    batch = int(cfg["batch_size"])
    timed = min(batch, 2) if smoke else batch
    ds_cfg = config["datasets"].get(cfg.get("dataset"), {})
    model, loss_fn, example, eval_pixels = example_step(task, cfg, ds_cfg, timed)
    fwd_bwd, opt_s = time_step(model, loss_fn, example, methods, device, eng, steps=steps, warmup=1 if smoke else 3)
    del model, example
    micro = fwd_bwd * batch / timed  # a CPU's step time grows about linearly with the batch
    n_train, n_val, _ = dataset_size(cfg, config)
    step_s, steps_per_run = {}, {}
    for method, mcfg in methods.items():
        k = int(mcfg.get("batch_multiplier", 1))
        step_s[method] = k * micro + opt_s[method]
        steps_per_run[method] = (n_train // (batch * k)) * int(cfg["epochs"])
    eval_s = n_val * (micro / batch) / 3 * eval_pixels
    dataset = task_function(task, "stand_in_dataset")(cfg, ds_cfg, tmp / task / "files", max(samples, 2))
    workers = loader_options(eng, task, device)["num_workers"]
    return TaskCost(task=task, batch=batch, timed_batch=timed, step_s=step_s, sample_s=sample_seconds(dataset, samples),
                    workers=workers, steps_per_run=steps_per_run, eval_s=eval_s, epochs=int(cfg["epochs"]),
                    seeds=len(config["run"]["seeds"]))


def report(costs: list[TaskCost], config: dict, device, smoke: bool) -> str:
    """The estimate as a markdown table (one row per task) and the totals."""
    gpus = max(1, int(config.get("engine", {}).get("gpus", 1))) if device.type == "cuda" else 1
    unit = "GPU-h" if device.type == "cuda" else "CPU-device-h"
    rows = ["| task | batch (timed) | step s | loader samples/s per core | loader s/step (workers) | bound | "
            f"one run h | runs | replication h | {unit} to request |", "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    total = 0.0
    for c in costs:
        acc = {m: int(config["tasks"][c.task]["methods"][m].get("batch_multiplier", 1)) for m in c.step_s}
        first = next(iter(c.step_s))
        step, load = c.step_s[first], c.loader_s(first, acc[first])
        bound = ("loader" if load > step else "step") if c.workers > 0 else "step + loader (no workers)"
        runs = [c.run_s(m, acc[m]) / 3600 for m in c.step_s]
        replication = sum(runs) * c.seeds
        total += replication
        rows.append(f"| {c.task} | {c.batch} ({c.timed_batch}) | {step:.3f} | {1 / c.sample_s:.0f} | "
                    f"{load:.3f} ({c.workers}) | {bound} | "
                    f"{min(runs):.1f}-{max(runs):.1f} | {len(runs) * c.seeds} | {replication:.1f} | "
                    f"{math.ceil(replication * gpus * MARGIN)} |")
    note = (f"\nSmoke test on {device.type}: steps timed at batch 2 and scaled linearly; hours are this device's, "
            "not a GPU's." if smoke else "")
    return "\n".join(rows) + (f"\n\nwhole replication: {total:.1f} h on this device, request "
                              f"{math.ceil(total * gpus * MARGIN)} {unit} (x{MARGIN} margin, {gpus} GPU(s) per run)."
                              + note)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipbench bench cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/thesis.yaml"],
                   help="config files, merged in order (default: the thesis' replication)")
    p.add_argument("--tasks", nargs="+", help="a subset of run.tasks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to time the steps")
    p.add_argument("--smoke", action="store_true", help="batch 2, two steps (the default on a CPU)")
    p.add_argument("--steps", type=int, help="timed training steps (default 20; smoke 2)")
    p.add_argument("--samples", type=int, help="timed loader samples (default 32; smoke 4)")
    args = p.parse_args(argv)
    config = cfgmod.load(*args.configfile)
    device = pick_device(args.device)
    smoke = args.smoke or device.type == "cpu"
    steps, samples = args.steps or (2 if smoke else 20), args.samples or (4 if smoke else 32)
    tasks = args.tasks or config["run"]["tasks"]
    unknown = [t for t in tasks if t not in config["run"]["tasks"]]
    if unknown:
        p.error(f"--tasks: {', '.join(unknown)} not in run.tasks of {' + '.join(args.configfile)} "
                f"({', '.join(config['run']['tasks'])})")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} core(s)"
    print(f"cost of {' + '.join(args.configfile)} on {name}: {len(config['run']['methods'])} methods x "
          f"{len(config['run']['seeds'])} seeds per task\n")
    costs = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            costs.append(estimate_task(task, config, device, smoke, steps, samples, Path(tmp)))
            print(f"  {task}: timed", flush=True)
    print("\n" + report(costs, config, device, smoke))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
