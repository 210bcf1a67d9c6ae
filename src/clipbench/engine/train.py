"""The training loop every task and method shares.

A plain loop in the manner of torchvision's references: one epoch of training, one pass of
evaluation, a checkpoint, repeat; helpers live in small modules beside this one.

* ``setup()`` builds a run once (:class:`Setup`: task, model, optimizer, schedule, loaders);
* ``fit()`` ties it together: restore the :class:`~clipbench.engine.checkpoint.Progress`,
  then ``train_one_epoch()`` and ``end_epoch()`` (evaluate, record, checkpoint) until the
  last epoch; a divergence, wherever it is seen, raises :class:`Diverged`, which ``fit()``
  catches to write the diverged run's results;
* ``_result()`` is what ``metrics.json`` holds; the run folder's file names and what is read
  from its history are :mod:`clipbench.runfiles`'.

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
* BatchNorm at the output: a method evaluated away from the points where its gradients are
  taken (SSTM: at y, trained at x) would be evaluated with x's running statistics. Before that
  evaluation they are recomputed at the output (``engine.bn_recompute_batches`` training
  batches, see :func:`recompute_bn`) and x's are put back afterwards, so training, its RNG
  stream and a resumed run are unchanged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from clipbench import files, runfiles
from clipbench import spec as jobspec
from clipbench.engine import checkpoint, distributed, env, telemetry, tracking
from clipbench.engine.checkpoint import Progress
from clipbench.engine.distributed import Dist, EpochBatchSampler, LeadingBatches, SeededSamples, epoch_seed
from clipbench.engine.env import autocast, keep_workers_on_sigterm, loader_options, to_device
from clipbench.engine.schedule import build_scheduler
from clipbench.optim.build import make_optimizer
from clipbench.progress import tqdm
from clipbench.tasks import build_task


class Diverged(Exception):
    """The run's loss, gradient or parameters became non-finite; ``step``: the last optimizer
    step whose state is finite (what metrics.json reports as ``diverged_at_step``). Raised
    where it is seen (every DDP rank agrees on it), caught once, by :func:`fit`."""

    def __init__(self, step: int, what: str):
        super().__init__(f"non-finite {what} at step {step}")
        self.step, self.what = step, what


def output_point(optimizer):
    """Evaluate where the method says its answer is (clipped-SSTM: y, not x)."""
    return optimizer.output() if hasattr(optimizer, "output") else contextlib.nullcontext()


def bn_modules(model: torch.nn.Module) -> list:
    """The BatchNorm layers that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recompute_bn(model: torch.nn.Module, batches, device: torch.device, amp: str = "none",
                 channels_last: bool = False) -> int:
    """Recompute the BatchNorm running statistics at the model's current parameters.

    As ``torch.optim.swa_utils.update_bn``: reset the statistics, momentum None (a cumulative
    average over the batches), forward in train mode without gradients, momentum restored.
    The forward passes run in a forked RNG (dropout draws nothing from the run's stream).
    ``batches`` yields ``(inputs, target)``. Returns the number of batches used.
    """
    bns = bn_modules(model)
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = 0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            for inputs, _ in batches:
                with autocast(device, amp):
                    model(to_device(inputs, device, channels_last))
                n += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return n


@contextlib.contextmanager
def bn_at_output(s: "Setup", epoch: int):
    """Inside the block the model's BatchNorm statistics are those of the output point.

    Enter it with the parameters at the output (inside :func:`output_point`). For a method
    with an output other than its iterate (``optimizer.output``), a model with BatchNorm and
    ``s.bn_batches > 0``: the statistics are recomputed over the first ``s.bn_batches``
    training batches of epoch ``epoch`` (global batches, the same for any process count);
    on exit the statistics of the training point x are restored exactly. Otherwise nothing.
    """
    bns = bn_modules(s.raw_model)
    if not (bns and s.bn_batches > 0 and s.bn_loader is not None and hasattr(s.optimizer, "output")):
        yield
        return
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in bns]
    try:
        s.bn_loader.batch_sampler.set_epoch(epoch)
        recompute_bn(s.raw_model, s.bn_loader, s.device, s.amp, s.channels_last)
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(bns, saved):
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(buffers[k])


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
                         device: torch.device | None = None, amp: str = "none", check=None):
    """Forward and backward over the micro-batches of one optimizer step.

    Each loss is divided by the number of micro-batches, so the summed gradient is the mean
    over all their samples: exactly the large-batch gradient for equal micro-batches and a
    loss that is a mean over samples (BatchNorm in train mode still normalises each
    micro-batch on its own). With DDP, gradients are all-reduced only on the last one.
    Returns ``[(output, loss, loss_value)]``. ``check(loss_value)``, if given, is called before
    that loss's backward: it may raise (:class:`Diverged`), so no non-finite gradient is made.
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
            if check is not None:
                check(value)
            scaled = loss / n
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        out.append((output.detach(), loss.detach(), value))
    return out


def params_finite(model: torch.nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


# -- setup -----------------------------------------------------------------------------------------

@dataclass
class Setup:
    """What a run is built from, once; the loop uses these and changes only their state."""
    spec: dict
    name: str
    seed: int
    out_dir: Path
    task: object
    raw_model: torch.nn.Module  # the module itself: what is checkpointed and evaluated under DDP
    model: torch.nn.Module  # what trains: raw_model, perhaps wrapped by DDP and torch.compile
    eval_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scaler: object | None
    sampler: EpochBatchSampler
    train_loader: DataLoader
    val_loader: DataLoader
    epochs: int
    batch_size: int
    accumulate: int  # micro-batches per optimizer step (batch_multiplier)
    steps_per_epoch: int
    total_steps: int
    device: torch.device
    amp: str
    channels_last: bool
    dist: Dist
    log: Callable[[str], None]
    loss_stride: int  # every loss_stride-th step's loss goes into the history
    checkpoint_every: int  # optimizer steps between mid-epoch checkpoints; 0: epoch ends only
    tracker: tracking.Tracker  # DVCLive / TensorBoard (main process only)
    digest: str  # the spec hash a checkpoint must carry to be resumed
    bn_batches: int = 0  # training batches that recompute BatchNorm's statistics at the output
    bn_loader: DataLoader | None = None  # those batches (None: nothing to recompute)
    stop: threading.Event = field(default_factory=threading.Event)  # SIGTERM arrived: checkpoint, exit

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / runfiles.CHECKPOINT

    @property
    def parts(self) -> dict:
        """The stateful objects a checkpoint holds, by the names it holds them under."""
        return {"model": self.raw_model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler}


def setup(spec: dict, manifest, out_dir: Path, eng: dict, device: torch.device, d: Dist) -> Setup:
    """Build the task, model, optimizer, schedule and loaders of one run (seeded by the spec)."""
    seed = int(spec["seed"])
    name = runfiles.run_name(spec['task'], spec['method'], seed)
    log = tqdm.write if d.main else (lambda msg: None)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    amp = eng.get("amp", "none")
    if amp != "none" and device.type != "cuda":
        log(f"[{name}] engine.amp: {amp} needs CUDA; training in float32 on {device}")
        amp = "none"
    channels_last = bool(eng.get("channels_last", False))

    from clipbench.data import filelist

    # Before anything is built from them: the files on disk are those prepare listed, or the
    # run stops here naming the files added, removed or changed.
    data = filelist.verify(manifest, log=log) if manifest else None
    env.seed_everything(seed)
    task = build_task(jobspec.complete(spec), manifest)
    task.data = data
    raw_model = task.model.to(device)
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    method_cfg = spec["method_config"]
    optimizer = make_optimizer(spec["method"], raw_model.parameters(), method_cfg, eng.get("clip_stats_every", 20))
    accumulate = int(method_cfg.get("batch_multiplier", 1))
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
    scheduler = build_scheduler(optimizer, method_cfg.get("schedule"), steps_per_epoch, total_steps,
                                where=f"tasks.{spec['task']}.methods.{spec['method']}.schedule")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    model = raw_model
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if eng.get("compile", False):
        model = torch.compile(model)
    options = loader_options(eng, spec["task"], device)
    train_loader, val_loader = _loaders(task, sampler, cfg.get("eval_batch_size", batch_size), seed, options)
    bn_batches = int(eng.get("bn_recompute_batches", 10))
    bn_loader = None
    if bn_batches > 0 and hasattr(optimizer, "output") and bn_modules(raw_model):
        # The global batch, so that any process count recomputes the same statistics; its own
        # generator and sampler, so that the training loader and the RNG are left alone.
        bn_loader = DataLoader(SeededSamples(task.train_set),
                               batch_sampler=LeadingBatches(len(task.train_set), batch_size, seed, bn_batches),
                               generator=torch.Generator().manual_seed(seed),
                               **keep_workers_on_sigterm({**options, "persistent_workers": False}))
    return Setup(
        spec=spec, name=name, seed=seed, out_dir=out_dir, task=task,
        raw_model=raw_model, model=model, eval_model=raw_model if d.enabled else model,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        sampler=sampler, train_loader=train_loader, val_loader=val_loader,
        epochs=epochs, batch_size=batch_size, accumulate=accumulate,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        device=device, amp=amp, channels_last=channels_last, dist=d, log=log,
        loss_stride=telemetry.loss_stride(total_steps, int(eng.get("max_loss_points", 500))),
        checkpoint_every=int(eng.get("checkpoint_every_steps", 0)),
        tracker=tracking.Tracker.for_run(eng, out_dir, {"task": spec["task"], "method": spec["method"], "seed": seed,
                                                   "optimizer": method_cfg}, main=d.main),
        digest=checkpoint.spec_hash(spec),
        bn_batches=bn_batches, bn_loader=bn_loader,
    )


def _loaders(task, sampler, eval_batch_size: int, seed: int, kw: dict):
    kw = keep_workers_on_sigterm(kw)
    # A generator of its own, so that starting an iterator never draws from the global RNG.
    train_loader = DataLoader(SeededSamples(task.train_set), batch_sampler=sampler,
                              generator=torch.Generator().manual_seed(seed), **kw)
    val_loader = DataLoader(task.val_set, batch_size=eval_batch_size, shuffle=False, **kw)
    return train_loader, val_loader


# -- the loop --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpochEnd:
    """A trained epoch's train metrics and clipping statistics."""
    train: dict = field(default_factory=dict)
    clip: dict = field(default_factory=dict)


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
        return fit(setup(spec, manifest, Path(out_dir), eng, device, d))
    finally:
        if owns_group:
            distributed.shutdown(d)


class Interrupted(Exception):
    """SIGTERM (scancel, preemption, a time limit) ended the run at a step boundary, checkpointed."""

    def __init__(self, name: str, path: Path, step: int):
        super().__init__(f"[{name}] stopped by SIGTERM after step {step}: checkpoint written to {path}; "
                         f"run the same command again (or snakemake --rerun-incomplete) to resume from it")


@contextlib.contextmanager
def stop_on_sigterm(flag: threading.Event):
    """Within the block, SIGTERM sets ``flag`` instead of killing the process, so the loop can
    checkpoint at the next step boundary (SLURM sends SIGTERM, then SIGKILL after its grace time)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a run in a thread keeps the default
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopping(s: Setup) -> bool:
    """Whether to stop at this step boundary; every DDP rank agrees (or they would deadlock)."""
    stop = s.stop.is_set()
    return distributed.any_flag(stop, s.dist, s.device) if s.dist.enabled else stop


def fit(s: Setup) -> dict:
    """Resume or start, train epoch after epoch to the end or a divergence, write the results."""
    with stop_on_sigterm(s.stop), s.tracker:
        return _fit(s)


def _fit(s: Setup) -> dict:
    metrics_path = s.out_dir / runfiles.METRICS_JSON
    progress = checkpoint.restore(s.checkpoint_path, s.parts, s.digest, s.log)
    if progress is not None and progress.completed:
        if metrics_path.exists():
            s.log(f"[{s.name}] already complete; metrics.json kept")
            return files.read_json(metrics_path)
        # Killed after the last checkpoint but before its results, or its results deleted (a
        # forced Snakemake rerun): the checkpoint holds everything they are made of.
        s.log(f"[{s.name}] complete in {s.checkpoint_path}: its metrics.json and history.csv are written from "
              f"it, without training (to train it again from step 0: clipbench rerun {s.out_dir})")
        return _write_results(s, progress, history=True)
    if progress is None:
        progress = Progress()
    else:
        s.log(f"[{s.name}] resuming from epoch {progress.epoch + 1}, step {progress.step} "
              f"(batch {progress.batch_in_epoch} of the epoch)")

    s.tracker.start(resumed=progress.step > 0)
    first_epoch = progress.epoch
    try:
        while progress.epoch < s.epochs:
            t0 = time.perf_counter()
            end_epoch(s, progress, train_one_epoch(s, progress, t0), t0)
            if progress.epoch < s.epochs and _stopping(s):
                raise Interrupted(s.name, s.checkpoint_path, progress.step)  # the epoch end checkpointed
    except Diverged as diverged:
        # The history since the last epoch end is written with the results; the checkpoint
        # keeps the last finite state.
        result = _write_results(s, progress, history=True, diverged_at=diverged.step)
        s.log(f"[{s.name}] diverged at step {diverged.step}: non-finite loss, gradient or parameters")
        return result
    # Each epoch end wrote the history so far; only a run with no epoch to train leaves it unwritten.
    return _write_results(s, progress, history=progress.epoch == first_epoch)


def _write_results(s: Setup, progress: Progress, history: bool, diverged_at: int | None = None) -> dict:
    result = _result(s, progress, diverged_at)
    if s.dist.main:
        if history:
            write_history(s, progress.history)
        files.write_json(s.out_dir / runfiles.METRICS_JSON, result)
    return result


def train_one_epoch(s: Setup, progress: Progress, t0: float) -> EpochEnd:
    """Train epoch ``progress.epoch`` from batch ``progress.batch_in_epoch`` to its end.

    ``progress`` follows every step; a checkpoint is written every ``s.checkpoint_every``
    steps (the epoch's last step excepted: its checkpoint is the epoch end's).
    """
    epoch, d = progress.epoch, s.dist
    # The run's skipped fp16 steps so far: the previous epoch's count carries over.
    meter, clip = s.task.new_meter(), telemetry.ClipStats(telemetry.ClipStats.skipped_in(progress.clip))
    if progress.batch_in_epoch > 0:  # resumed mid-epoch; the RNG is the checkpoint's
        telemetry.load_meter_state(meter, progress.meter)
        clip.load_state_dict(progress.clip)
    else:
        env.seed_everything(epoch_seed(s.seed, epoch))
    s.sampler.set_epoch(epoch, progress.batch_in_epoch)
    s.model.train()
    first = progress.batch_in_epoch // s.accumulate
    bar = tqdm(total=s.steps_per_epoch, initial=first, unit="step", leave=False, mininterval=5.0,
               disable=not d.main, desc=f"{s.name} epoch {epoch + 1}/{s.epochs}")
    batches = iter(s.train_loader)
    try:
        for k in range(first, s.steps_per_epoch):
            step_loss = train_step(s, progress, meter, clip, [next(batches) for _ in range(s.accumulate)])
            progress.step += 1
            if progress.step % s.loss_stride == 0 or progress.step == s.total_steps:
                loss = distributed.mean_dict({"loss": step_loss}, d, s.device)["loss"]
                progress.history.append(runfiles.history_row(progress.step, epoch + 1, "train_step", "loss", loss))
            bar.update()
            if bar.n % 10 == 0 or k == s.steps_per_epoch - 1:
                bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
            # An epoch's last step is checkpointed (and a SIGTERM honoured) by the epoch end.
            mid_epoch = k + 1 < s.steps_per_epoch
            stopping = mid_epoch and _stopping(s)
            if mid_epoch and (stopping or (s.checkpoint_every and progress.step % s.checkpoint_every == 0)):
                if not params_finite(s.raw_model):
                    raise Diverged(progress.step - 1, "parameters")
                progress.batch_in_epoch = (k + 1) * s.accumulate
                progress.meter, progress.clip = telemetry.meter_state(meter), clip.state_dict()
                save(s, progress, t0)
                if stopping:
                    raise Interrupted(s.name, s.checkpoint_path, progress.step)
    finally:
        bar.close()
        del batches
        progress.clip = clip.state_dict()  # a diverged run's result counts its skipped steps too
    progress.train_time_s += time.perf_counter() - t0
    train_metrics = distributed.mean_dict(meter.compute(), d, s.device)
    return EpochEnd(train=train_metrics, clip=clip.compute())


def train_step(s: Setup, progress: Progress, meter, clip: telemetry.ClipStats, micro: list) -> float:
    """One optimizer step over ``micro`` (its micro-batches); its mean loss. :class:`Diverged`
    if a loss or the gradient norm is non-finite."""
    d = s.dist
    micro = [(to_device(x, s.device, s.channels_last), y.to(s.device, non_blocking=True)) for x, y in micro]

    def check(loss: float) -> None:
        # Every rank must agree to stop, or DDP waits forever for the others' gradients.
        if distributed.any_flag(not math.isfinite(loss), d, s.device):
            raise Diverged(progress.step, "loss")

    done = accumulate_gradients(s.model, s.task.loss, micro, ddp=d.enabled, scaler=s.scaler, device=s.device,
                                amp=s.amp, check=check)
    for (inputs, target), (output, loss, _) in zip(micro, done):
        meter.update(output.float(), target, loss.float())
        progress.images += inputs.shape[0] * d.world
    stepped = True
    if s.scaler is not None:
        # Clipping must see the unscaled, accumulated gradient.
        with telemetry.StepWatch(s.optimizer) as watch:  # the scaler skips the step on inf/NaN
            s.scaler.unscale_(s.optimizer)
            s.scaler.step(s.optimizer)
            s.scaler.update()
        stepped = watch.ran
    else:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    if s.scheduler is not None:
        s.scheduler.step()
    # A skipped step left the previous step's record in the optimizer: it must not count again.
    stats = getattr(s.optimizer, "last_clip_stats", None) if stepped else None  # read once: it may sync
    clip.update(stats, skipped=not stepped)
    # A skipped fp16 step (inf in the scaled gradient) is the GradScaler's business.
    if s.scaler is None and telemetry.nonfinite_grad_norm(stats):
        raise Diverged(progress.step, "gradient norm")
    return sum(v for _, _, v in done) / s.accumulate


def end_epoch(s: Setup, progress: Progress, end: EpochEnd, t0: float) -> None:
    """Evaluate the finished epoch, record it in the history, and checkpoint it."""
    d, epoch = s.dist, progress.epoch + 1
    val_metrics: dict[str, float] = {}
    at_x: dict[str, float] = {}
    if d.main:
        # At the output, with BatchNorm statistics of the output (x's are back on exit).
        with output_point(s.optimizer), bn_at_output(s, progress.epoch):
            val_metrics = evaluate(s.task, s.eval_model, s.val_loader, s.device, s.amp, s.channels_last)
        if hasattr(s.optimizer, "output"):
            # The reported metric is the method's output (SSTM: y); x, where the gradients are
            # taken and where the authors' notebook evaluates, is shown beside it.
            at_x = evaluate(s.task, s.eval_model, s.val_loader, s.device, s.amp, s.channels_last)
    bad = not params_finite(s.raw_model) or not all(math.isfinite(v) for v in val_metrics.values())
    distributed.barrier(d)
    if distributed.any_flag(bad, d, s.device):
        raise Diverged(progress.step, "parameters or validation metrics")
    for split, metrics in (("train", {**end.train, **end.clip, **_lr(s.optimizer)}), ("val", val_metrics),
                           ("val_x", at_x)):
        for metric, value in metrics.items():
            progress.history.append(runfiles.history_row(progress.step, epoch, split, metric, value))
    s.log(f"[{s.name}] epoch {epoch}/{s.epochs} "
          + " ".join(f"{split}.{k}={v:.4f}" for split, m in (("train", end.train), ("val", val_metrics))
                     for k, v in m.items()))
    progress.epoch, progress.batch_in_epoch, progress.meter = epoch, 0, None
    progress.completed = epoch == s.epochs
    progress.epoch_end_wall_s.append(progress.wall_time_s + time.perf_counter() - t0)
    save(s, progress, t0)
    progress.wall_time_s += time.perf_counter() - t0
    if d.main:
        write_history(s, progress.history)


def save(s: Setup, progress: Progress, t0: float) -> None:
    """Checkpoint the run (main process only); ``t0``: when this session's epoch began."""
    if not s.dist.main:
        return
    # The running epoch's time is in neither total yet, its training time only mid-epoch.
    running = time.perf_counter() - t0
    record = dataclasses.replace(
        progress, wall_time_s=progress.wall_time_s + running,
        train_time_s=progress.train_time_s + (running if progress.batch_in_epoch else 0.0))
    checkpoint.save_run(s.checkpoint_path, s.parts, record, s.digest)


def write_history(s: Setup, rows: list[dict]) -> None:
    """``history.csv``, rewritten whole; the live views (DVCLive, TensorBoard) get the rows they lack."""
    files.write_text(s.out_dir / runfiles.HISTORY_CSV, runfiles.history_csv(rows))
    s.tracker.log(rows)


# -- results ---------------------------------------------------------------------------------------

def _result(s: Setup, progress: Progress, diverged_at: int | None) -> dict:
    """What ``metrics.json`` holds; ``diverged_at``: the step of a divergence (None: none)."""
    train_time = progress.train_time_s
    return {
        "task": s.spec["task"], "method": s.spec["method"], "seed": s.seed,
        "status": "ok" if diverged_at is None else "diverged", "diverged_at_step": diverged_at,
        "final": runfiles.final_metrics(progress.history),
        "main_metric": s.task.main_metric,
        "task_info": s.task.extra,
        "data": s.task.data,  # the manifest and the digest of the files this run read (None: no dataset)
        "epochs": s.epochs, "steps": progress.step, "batch_size": s.batch_size, "batch_multiplier": s.accumulate,
        "world_size": s.dist.world, "amp": s.amp,
        "telemetry": {**runfiles.run_telemetry(progress.history),
                      "loss_points_stride": s.loss_stride,
                      # optimizer steps an fp16 GradScaler skipped (inf/NaN gradient); not in the clip statistics
                      "skipped_steps": telemetry.ClipStats.skipped_in(progress.clip)},
        # Everything that depends on the machine or on how the run went (not what it computed).
        "timing": {"wall_time_s": progress.wall_time_s, "train_time_s": train_time,
                   "images_per_s": progress.images / train_time if train_time > 0 else None,
                   **telemetry.peak_memory_mb(s.device), "resumed_at_steps": progress.resumes,
                   "epoch_end_wall_s": progress.epoch_end_wall_s},
        "device": s.device.type, "versions": env.versions(), "spec_hash": s.digest, "spec": s.spec,
    }


def _lr(optimizer) -> dict[str, float]:
    group = optimizer.param_groups[0]
    return {"lr": float(group["lr"])} if "lr" in group else {}
