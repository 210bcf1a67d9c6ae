"""The training loop every task and method shares.

A plain loop in the manner of torchvision's references: one epoch of training, one pass of
evaluation, a checkpoint, repeat. The data order and augmentation of epoch ``e`` depend only
on (seed, e), so a run resumed from an epoch checkpoint replays exactly what it would have.
"""
from __future__ import annotations

import contextlib
import csv
import io as _io
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from clipbench import io
from clipbench.config import split_method_config
from clipbench.engine import checkpoint, env
from clipbench.optim import build_optimizer
from clipbench.tasks import build_task

HISTORY_FIELDS = ("step", "epoch", "split", "metric", "value")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def output_point(optimizer):
    """Evaluate where the method says its answer is (clipped-SSTM: y, not x)."""
    return optimizer.output() if hasattr(optimizer, "output") else contextlib.nullcontext()


def evaluate(task, model, loader, device) -> dict[str, float]:
    model.eval()
    meter = task.new_meter()
    with torch.no_grad():
        for inputs, target in loader:
            inputs, target = inputs.to(device), target.to(device)
            output = model(inputs)
            meter.update(output, target, task.loss(output, target))
    return meter.compute()


def write_history(path: Path, rows: list[dict]) -> None:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buf.getvalue())


def train(spec: dict, manifest: dict | None, out_dir: str | Path) -> dict:
    """Run (or resume) one training run and write its results into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eng = spec.get("engine", {})
    seed = int(spec["seed"])
    torch.set_num_threads(eng.get("threads", 2))
    env.set_determinism(eng.get("deterministic", True))
    device = env.pick_device(eng.get("device", "cpu"))

    env.seed_everything(seed)
    task = build_task(spec, manifest)
    model = task.model.to(device)
    opt_cfg, eng_method = split_method_config(spec["method_config"])
    optimizer = build_optimizer(spec["method"], model.parameters(), opt_cfg)
    accumulate = int(eng_method.get("batch_multiplier", 1))
    cfg = spec["task_config"]
    batch_size, epochs = int(cfg["batch_size"]), int(cfg["epochs"])
    num_workers = int(eng.get("num_workers", 0))

    val_loader = DataLoader(task.val_set, batch_size=cfg.get("eval_batch_size", batch_size),
                            shuffle=False, num_workers=num_workers)

    ckpt_path = out_dir / "checkpoint.pt"
    state = checkpoint.load(ckpt_path)
    history: list[dict] = []
    start_epoch, step, wall, images, status, diverged_at = 0, 0, 0.0, 0, "ok", None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        history = list(state["history"])
        start_epoch, step, wall, images = state["epoch"], state["step"], state["wall_time_s"], state["images"]
        tqdm.write(f"resuming {out_dir} from epoch {start_epoch}")

    last_finite: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        env.seed_everything(_epoch_seed(seed, epoch))
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        loader = DataLoader(task.train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                            num_workers=num_workers, generator=gen)
        usable = (len(loader) // accumulate) * accumulate
        if usable == 0:
            raise ValueError(
                f"tasks.{spec['task']}: {len(task.train_set)} training samples give no full batch of "
                f"{batch_size} x batch_multiplier {accumulate}; lower batch_size or add data"
            )
        model.train()
        meter = task.new_meter()
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(total=usable // accumulate, desc=f"{spec['task']}/{spec['method']} seed{seed} epoch {epoch + 1}/{epochs}",
                   unit="step", leave=False, mininterval=1.0)
        for i, (inputs, target) in enumerate(loader):
            if i >= usable:
                break
            inputs, target = inputs.to(device), target.to(device)
            output = model(inputs)
            loss = task.loss(output, target)
            if not torch.isfinite(loss):
                status, diverged_at = "diverged", step
                break
            # Mean over micro-batches: the accumulated gradient is the large-batch gradient.
            (loss / accumulate).backward()
            meter.update(output.detach(), target, loss.detach())
            images += inputs.shape[0]
            if (i + 1) % accumulate == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        if status == "diverged":
            break
        train_metrics = meter.compute()
        with output_point(optimizer):
            val_metrics = evaluate(task, model, val_loader, device)
        if not all(math.isfinite(v) for v in val_metrics.values()):
            status, diverged_at = "diverged", step
            break
        wall += time.perf_counter() - t0
        for split, metrics in (("train", train_metrics), ("val", val_metrics)):
            for name, value in metrics.items():
                history.append({"step": step, "epoch": epoch + 1, "split": split, "metric": name, "value": value})
        last_finite = {"train": train_metrics, "val": val_metrics}
        tqdm.write(f"[{spec['task']}/{spec['method']}/seed{seed}] epoch {epoch + 1}/{epochs} "
                   + " ".join(f"{s}.{k}={v:.4f}" for s, m in last_finite.items() for k, v in m.items()))
        write_history(out_dir / "history.csv", history)
        checkpoint.save(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(),
            "history": history, "epoch": epoch + 1, "step": step, "wall_time_s": wall, "images": images,
        })

    if not last_finite and history:
        last_finite = _final_from_history(history)
    write_history(out_dir / "history.csv", history)
    result = {
        "task": spec["task"], "method": spec["method"], "seed": seed,
        "status": status, "diverged_at_step": diverged_at,
        "final": last_finite,
        "main_metric": task.main_metric,
        "task_info": task.extra,
        "epochs": epochs, "steps": step, "batch_size": batch_size, "batch_multiplier": accumulate,
        "wall_time_s": wall, "images_per_s": images / wall if wall > 0 else None,
        "device": str(device), "versions": env.versions(), "spec": spec,
    }
    io.write_json(out_dir / "metrics.json", result)
    return result


def _final_from_history(history: list[dict]) -> dict:
    last_epoch = max(r["epoch"] for r in history)
    out: dict[str, dict[str, float]] = {}
    for r in history:
        if r["epoch"] == last_epoch:
            out.setdefault(r["split"], {})[r["metric"]] = r["value"]
    return out
