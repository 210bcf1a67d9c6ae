"""The training loop every task and method shares.

A plain loop in the manner of torchvision's references: one epoch of training, one pass of
evaluation, a checkpoint, repeat; helpers live in small modules beside this one.

What is exact (see also docs in ``distributed.py``):

* The data order and augmentation of epoch ``e`` depend only on (seed, e) (and the sample),
  never on the number of workers or on where a run was resumed.
* A checkpoint holds everything the loop carries from one step to the next (model,
  optimizer incl. clipped-SSTM's y and z, scheduler, GradScaler, RNG states, the epoch's
  running meter, telemetry, history), written at every epoch end and every
  ``engine.checkpoint_every_steps`` optimizer steps, always between two optimizer steps.
  So on the CPU a run killed at any moment and restarted ends bit-for-bit where an
  uninterrupted run ends (same ``engine.threads``; on CUDA as far as its kernels are
  deterministic, i.e. with ``engine.deterministic: true``).
* ``batch_multiplier`` accumulates micro-batch gradients: the optimizer sees the mean
  gradient of ``batch_multiplier x batch_size`` samples. BatchNorm normalises each
  micro-batch with its own statistics, as on the thesis' hardware.
* DDP: ``batch_size`` is the global batch; each process takes ``batch_size / world`` of every
  global batch and DDP averages gradients, so clipping sees the global gradient.
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
from clipbench.engine import checkpoint, distributed, env, telemetry
from clipbench.engine.distributed import EpochBatchSampler, SeededSamples, epoch_seed
from clipbench.engine.schedule import build_scheduler
from clipbench.optim import build_optimizer
from clipbench.tasks import build_task

HISTORY_FIELDS = ("step", "epoch", "split", "metric", "value")


def make_optimizer(method: str, params, opt_cfg: dict):
    """The optimizer as training uses it (the benchmark builds it the same way).

    The clipped methods always report their clipping statistics (``last_clip_stats``).
    """
    return build_optimizer(method, params, opt_cfg)


def output_point(optimizer):
    """Evaluate where the method says its answer is (clipped-SSTM: y, not x)."""
    return optimizer.output() if hasattr(optimizer, "output") else contextlib.nullcontext()


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4 and x.is_floating_point():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def evaluate(task, model, loader, device, amp: str = "none", channels_last: bool = False) -> dict[str, float]:
    model.eval()
    meter = task.new_meter()
    with torch.no_grad():
        for inputs, target in loader:
            inputs, target = to_device(inputs, device, channels_last), target.to(device, non_blocking=True)
            with autocast(device, amp):
                output = model(inputs)
                loss = task.loss(output, target)
            meter.update(output.float(), target, loss.float())
    return meter.compute()


def accumulate_gradients(model, loss_fn, micro_batches, *, ddp: bool = False, scaler=None,
                         device: torch.device | None = None, amp: str = "none", stop=None):
    """Forward and backward over the micro-batches of one optimizer step.

    Each loss is divided by the number of micro-batches, so the summed gradient is the mean
    over all their samples: exactly the large-batch gradient for equal micro-batches and a
    loss that is a mean over samples (BatchNorm in train mode still normalises each
    micro-batch on its own). With DDP, gradients are all-reduced only on the last one.
    Returns ``[(output, loss, loss_value)]``, or None when ``stop(loss_value)`` says so, which
    is asked before that loss's backward so no non-finite gradient is ever made.
    """
    n = len(micro_batches)
    out = []
    for m, (inputs, target) in enumerate(micro_batches):
        sync = model.no_sync() if ddp and m < n - 1 else contextlib.nullcontext()
        with sync:
            with autocast(device or inputs.device, amp):
                output = model(inputs)
                loss = loss_fn(output, target)
            value = float(loss.detach())
            if stop is not None and stop(value):
                return None
            scaled = loss / n
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        out.append((output.detach(), loss.detach(), value))
    return out


def write_history(path: Path, rows: list[dict]) -> None:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buf.getvalue())


def params_finite(model: torch.nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def train(spec: dict, manifest: dict | None, out_dir: str | Path) -> dict:
    """Run (or resume) one training run and write its results into ``out_dir``."""
    eng = spec.get("engine", {})
    torch.set_num_threads(eng.get("threads", 2))
    env.set_determinism(eng.get("deterministic", True))
    device = env.pick_device(eng.get("device", "cpu"))
    owns_group = distributed.wanted(eng) and not torch.distributed.is_initialized()
    d = distributed.init(eng, device.type)
    if d.enabled and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    try:
        return _run(spec, manifest, Path(out_dir), eng, device, d)
    finally:
        if owns_group:
            distributed.shutdown(d)


def _resumable(state: dict | None, digest: str, out_dir: Path, log) -> dict | None:
    if state is None:
        return None
    if state.get("spec_hash") != digest:
        log(f"{out_dir}: checkpoint.pt is from other settings (spec hash {state.get('spec_hash')} != {digest}); "
            "starting afresh")
        return None
    if state.get("completed") and not (out_dir / "metrics.json").exists():
        log(f"{out_dir}: the run is complete but metrics.json is missing, i.e. a deliberate rerun; starting afresh")
        return None
    return state


def _run(spec: dict, manifest, out_dir: Path, eng: dict, device: torch.device, d) -> dict:
    seed = int(spec["seed"])
    name = f"{spec['task']}/{spec['method']}/seed{seed}"
    log = tqdm.write if d.main else (lambda msg: None)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    amp = eng.get("amp", "none")
    if amp != "none" and device.type != "cuda":
        log(f"[{name}] engine.amp: {amp} needs CUDA; training in float32 on {device}")
        amp = "none"
    channels_last = bool(eng.get("channels_last", False))
    num_workers = int(eng.get("num_workers", 0))

    env.seed_everything(seed)
    task = build_task(spec, manifest)
    raw_model = task.model.to(device)
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    opt_cfg, eng_method = split_method_config(spec["method_config"])
    optimizer = make_optimizer(spec["method"], raw_model.parameters(), opt_cfg)
    accumulate = int(eng_method.get("batch_multiplier", 1))
    cfg = spec["task_config"]
    batch_size, epochs = int(cfg["batch_size"]), int(cfg["epochs"])

    sampler = EpochBatchSampler(len(task.train_set), batch_size, accumulate, seed, d)
    if sampler.usable == 0:
        raise ValueError(
            f"tasks.{spec['task']}: {len(task.train_set)} training samples give no full batch of "
            f"{batch_size} x batch_multiplier {accumulate}; lower batch_size or add data"
        )
    steps_per_epoch = sampler.usable // accumulate
    total_steps = steps_per_epoch * epochs
    scheduler = build_scheduler(optimizer, eng_method.get("schedule"), steps_per_epoch, total_steps,
                                where=f"tasks.{spec['task']}.methods.{spec['method']}.schedule")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    model = raw_model
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if eng.get("compile", False):
        model = torch.compile(model)
    eval_model = raw_model if d.enabled else model

    loader_kw = {"num_workers": num_workers, "pin_memory": device.type == "cuda",
                 "persistent_workers": num_workers > 0}
    # A generator of its own, so that starting an iterator never draws from the global RNG.
    train_loader = DataLoader(SeededSamples(task.train_set), batch_sampler=sampler,
                              generator=torch.Generator().manual_seed(seed), **loader_kw)
    val_loader = DataLoader(task.val_set, batch_size=cfg.get("eval_batch_size", batch_size), shuffle=False,
                            **loader_kw)

    ckpt_path = out_dir / "checkpoint.pt"
    digest = checkpoint.spec_hash(spec)
    state = _resumable(checkpoint.load(ckpt_path), digest, out_dir, log)
    if state is not None and state.get("completed"):
        log(f"[{name}] already complete; metrics.json kept")
        return io.read_json(out_dir / "metrics.json")

    stride = telemetry.loss_stride(total_steps, int(eng.get("max_loss_points", 500)))
    clip = telemetry.ClipStats()
    history: list[dict] = []
    epoch0, batch0, step, wall, train_time, images = 0, 0, 0, 0.0, 0.0, 0
    meter_state, resumes = None, []
    if state is not None:
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        history = list(state["history"])
        epoch0, batch0, step = state["epoch"], state["batch_in_epoch"], state["step"]
        wall, train_time, images = state["wall_time_s"], state["train_time_s"], state["images"]
        meter_state, resumes = state.get("meter"), list(state.get("resumes", [])) + [step]
        clip.load_state_dict(state["clip"])
        log(f"[{name}] resuming from epoch {epoch0 + 1}, step {step} (batch {batch0} of the epoch)")
    use_dvclive = d.main and telemetry.dvclive_enabled(eng)

    def snapshot(epoch: int, batch_in_epoch: int, meter, completed: bool) -> None:
        if not d.main:
            return
        # Mid-epoch the running epoch's time is not in the totals yet.
        running = time.perf_counter() - t0
        checkpoint.save(ckpt_path, {
            "spec_hash": digest, "completed": completed,
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": checkpoint.rng_state(), "history": history,
            "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step,
            "meter": telemetry.meter_state(meter) if meter is not None else None, "clip": clip.state_dict(),
            "wall_time_s": wall + running, "train_time_s": train_time + (running if batch_in_epoch else 0.0),
            "images": images, "resumes": resumes,
        })

    every = int(eng.get("checkpoint_every_steps", 0))
    status, diverged_at = "ok", None
    for epoch in range(epoch0, epochs):
        t0 = time.perf_counter()
        meter = task.new_meter()
        if epoch == epoch0 and batch0 > 0:
            telemetry.load_meter_state(meter, meter_state)  # the RNG is the checkpoint's
        else:
            env.seed_everything(epoch_seed(seed, epoch))
            clip.reset()
            batch0 = 0
        sampler.set_epoch(epoch, batch0)
        model.train()
        bar = tqdm(total=steps_per_epoch, initial=batch0 // accumulate, unit="step", leave=False,
                   mininterval=5.0, disable=not d.main, desc=f"{name} epoch {epoch + 1}/{epochs}")
        batches = iter(train_loader)
        for k in range(batch0 // accumulate, steps_per_epoch):
            micro = [next(batches) for _ in range(accumulate)]
            micro = [(to_device(x, device, channels_last), y.to(device, non_blocking=True)) for x, y in micro]
            # Every rank must agree to stop, or DDP waits forever for the others' gradients.
            done = accumulate_gradients(
                model, task.loss, micro, ddp=d.enabled, scaler=scaler, device=device, amp=amp,
                stop=lambda v: distributed.any_flag(not math.isfinite(v), d, device))
            if done is None:
                status, diverged_at = "diverged", step
                break
            for (inputs, target), (output, loss, _) in zip(micro, done):
                meter.update(output.float(), target, loss.float())
                images += inputs.shape[0] * d.world
            step_loss = sum(v for _, _, v in done) / accumulate
            if scaler is not None:
                # Clipping must see the unscaled, accumulated gradient.
                scaler.unscale_(optimizer)
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            stats = getattr(optimizer, "last_clip_stats", None)  # read once: it may sync
            clip.update(stats)
            # A skipped fp16 step (inf in the scaled gradient) is the GradScaler's business.
            if scaler is None and telemetry.nonfinite_grad_norm(stats):
                status, diverged_at = "diverged", step
                break
            step += 1
            if step % stride == 0 or step == total_steps:
                loss_row = distributed.mean_dict({"loss": step_loss}, d, device)["loss"]
                history.append({"step": step, "epoch": epoch + 1, "split": "train_step", "metric": "loss",
                                "value": loss_row})
            bar.update()
            if bar.n % 10 == 0 or k == steps_per_epoch - 1:
                bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
            if every and step % every == 0 and k + 1 < steps_per_epoch:
                if not params_finite(raw_model):
                    status, diverged_at = "diverged", step - 1
                    break
                snapshot(epoch, (k + 1) * accumulate, meter, completed=False)
        bar.close()
        del batches
        if status == "diverged":
            break
        train_time += time.perf_counter() - t0
        train_metrics = distributed.mean_dict(meter.compute(), d, device)
        val_metrics: dict[str, float] = {}
        if d.main:
            with output_point(optimizer):
                val_metrics = evaluate(task, eval_model, val_loader, device, amp, channels_last)
        bad = not params_finite(raw_model) or not all(math.isfinite(v) for v in val_metrics.values())
        distributed.barrier(d)
        if distributed.any_flag(bad, d, device):
            status, diverged_at = "diverged", step
            break
        extra = {**clip.compute(), **_lr(optimizer)}
        for split, metrics in (("train", {**train_metrics, **extra}), ("val", val_metrics)):
            for metric, value in metrics.items():
                history.append({"step": step, "epoch": epoch + 1, "split": split, "metric": metric, "value": value})
        log(f"[{name}] epoch {epoch + 1}/{epochs} "
            + " ".join(f"{s}.{k}={v:.4f}" for s, m in (("train", train_metrics), ("val", val_metrics))
                       for k, v in m.items()))
        snapshot(epoch + 1, 0, None, completed=epoch + 1 == epochs)
        wall += time.perf_counter() - t0
        if d.main:
            write_history(out_dir / "history.csv", history)
            if use_dvclive:
                telemetry.write_dvclive(out_dir, history, {"task": spec["task"], "method": spec["method"], "seed": seed})

    result = {
        "task": spec["task"], "method": spec["method"], "seed": seed,
        "status": status, "diverged_at_step": diverged_at,
        "final": _final_from_history(history),
        "main_metric": task.main_metric,
        "task_info": task.extra,
        "epochs": epochs, "steps": step, "batch_size": batch_size, "batch_multiplier": accumulate,
        "world_size": d.world, "amp": amp,
        "telemetry": {**_last(history, "train", TELEMETRY_METRICS),
                      "loss_points_stride": stride},
        # Everything that depends on the machine or on how the run went (not what it computed).
        "timing": {"wall_time_s": wall, "train_time_s": train_time,
                   "images_per_s": images / train_time if train_time > 0 else None,
                   **telemetry.peak_memory_mb(device), "resumed_at_steps": resumes},
        "device": device.type, "versions": env.versions(), "spec_hash": digest, "spec": spec,
    }
    if d.main:
        write_history(out_dir / "history.csv", history)
        if use_dvclive and status != "ok":
            telemetry.write_dvclive(out_dir, history, {"task": spec["task"], "method": spec["method"], "seed": seed})
        io.write_json(out_dir / "metrics.json", result)
    if status == "diverged":
        log(f"[{name}] diverged at step {diverged_at}: non-finite loss, gradient or parameters")
    return result


TASK_SPLITS = ("train", "val")
TELEMETRY_METRICS = (*telemetry.ClipStats.METRICS.values(), "lr")


def _lr(optimizer) -> dict[str, float]:
    group = optimizer.param_groups[0]
    return {"lr": float(group["lr"])} if "lr" in group else {}


def _last(history: list[dict], split: str, metrics: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for r in history:
        if r["split"] == split and r["metric"] in metrics:
            out[r["metric"]] = r["value"]
    return out


def _final_from_history(history: list[dict]) -> dict:
    """The task metrics of the last completed epoch (for a diverged run: its last finite ones)."""
    rows = [r for r in history if r["split"] in TASK_SPLITS and r["metric"] not in TELEMETRY_METRICS]
    if not rows:
        return {}
    last_epoch = max(r["epoch"] for r in rows)
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["epoch"] == last_epoch:
            out.setdefault(r["split"], {})[r["metric"]] = r["value"]
    return out
