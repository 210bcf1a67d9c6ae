"""Training-step benchmark: is the optimizer visible in a full step?

    clipbench bench train [--methods sgd,adam,clipped_sgd,clipped_sstm] [--batch-size 32] ...
    python -m clipbench.bench.train --gpu-table      (on a CUDA machine; scripts/gpu_check.sh)

Default mode: ResNet-18 at batch 32, one model and optimizer per method from the same
initial weights, timed in alternating rounds (the order rotates each round, so drift in a
shared machine's speed hits every method alike); a step is forward + backward + optimizer
step, and the table gives medians and each method's ratio to SGD measured in the same run.

``--gpu-table``: each method in turn at batch 32 and 256 on the GPU, with images/s, peak
GPU memory and the optimizer's share of the step, as a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn

from clipbench.engine.env import autocast
from clipbench.models import build_model
from clipbench.optim import make_optimizer

# The demo's settings (config/config.yaml), batch multipliers aside: the benchmark times one step.
METHOD_CONFIGS = {
    "sgd": {"lr": 0.01, "momentum": 0.9},
    "adam": {"lr": 1.0e-3},
    "clipped_sgd": {"lr": 0.05, "momentum": 0.9, "clipping": "coordinate", "clip_level": 0.1, "clip_target": "momentum"},
    "clipped_sstm": {"a": 100, "L": 10, "B": 1.0, "clipping": "norm", "ratio_bound": 0.99},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One method's model, optimizer and fixed batch; ``step()`` returns (step s, optimizer s)."""

    def __init__(self, method: str, state: dict, args, device: torch.device):
        self.model = build_model("resnet18", num_classes=args.num_classes).to(device)
        self.model.load_state_dict(state)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        if method not in METHOD_CONFIGS:
            raise ValueError(f"no benchmark settings for {method!r} (known: {', '.join(METHOD_CONFIGS)})")
        self.opt = make_optimizer(method, self.model.parameters(), METHOD_CONFIGS[method])
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
        self.x = x.to(device, memory_format=torch.channels_last if args.channels_last else torch.contiguous_format)
        self.y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device)
        self.loss = nn.CrossEntropyLoss()
        self.device, self.amp = device, args.amp

    def step(self) -> tuple[float, float]:
        dev = self.device
        _sync(dev)
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with autocast(dev, self.amp):
            loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        _sync(dev)
        t1 = time.perf_counter()
        self.opt.step()
        _sync(dev)
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1


def _runners(methods, args, device):
    torch.manual_seed(0)
    state = build_model("resnet18", num_classes=args.num_classes).state_dict()
    runners, skipped = {}, []
    for m in methods:
        try:
            runners[m] = Runner(m, state, args, device)
        except (ValueError, TypeError) as exc:
            skipped.append(m)
            print(f"skipping {m}: {exc}", file=sys.stderr)
    return runners, skipped


def alternating(args, device) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "sgd" not in methods:
        methods.insert(0, "sgd")
    runners, skipped = _runners(methods, args, device)
    if args.control:
        # A second, identical SGD: its ratio to SGD is the noise floor of this machine.
        control, _ = _runners(["sgd"], args, device)
        runners["sgd (A/A control)"] = control["sgd"]
    names = list(runners)
    for r in runners.values():
        for _ in range(args.warmup):
            r.step()
    steps = {m: [] for m in names}
    opt_times = {m: [] for m in names}
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for m in order:
            for _ in range(args.steps):
                t, o = runners[m].step()
                steps[m].append(t)
                opt_times[m].append(o)
    base = statistics.median(steps["sgd"])
    print(f"ResNet-18, batch {args.batch_size}, {args.image_size}px, {device}, threads {torch.get_num_threads()}, "
          f"{args.rounds} alternating rounds x {args.steps} steps, medians")
    print("| method | step ms | optimizer ms | optimizer share | step / SGD step |")
    print("|---|---:|---:|---:|---:|")
    for m in names:
        med, opt = statistics.median(steps[m]), statistics.median(opt_times[m])
        print(f"| {m} | {med * 1e3:.1f} | {opt * 1e3:.2f} | {opt / med:.1%} | {med / base:.3f}x |")
    for m in skipped:
        print(f"| {m} | not available in this build of clipbench.optim | | | |")
    return 0


def gpu_table(args) -> int:
    if not torch.cuda.is_available():
        print("--gpu-table needs a CUDA device (none found)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"{torch.cuda.get_device_name(0)}, ResNet-18, {args.image_size}px, amp {args.amp}, "
          f"channels_last {args.channels_last}; {args.steps} timed steps after {args.warmup} warm-up, medians")
    print("| batch | method | images/s | step ms | optimizer ms | optimizer share | peak GPU memory (GiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for bs in args.gpu_batches:
        args.batch_size = bs
        for m in methods:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            runners, _ = _runners([m], args, device)
            if not runners:
                print(f"| {bs} | {m} | not available | | | | |")
                continue
            r = runners[m]
            for _ in range(args.warmup):
                r.step()
            times = [r.step() for _ in range(args.steps)]
            step = statistics.median(t for t, _ in times)
            opt = statistics.median(o for _, o in times)
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            print(f"| {bs} | {m} | {bs / step:.0f} | {step * 1e3:.1f} | {opt * 1e3:.2f} | {opt / step:.1%} | {peak:.2f} |",
                  flush=True)
            del r, runners
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipbench bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="sgd,adam,clipped_sgd,clipped_sstm",
                   help="comma-separated; those build_optimizer does not know are skipped with a message")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per method and round (--gpu-table: in all)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="leave out the second SGD whose ratio to SGD shows the timing noise")
    p.add_argument("--gpu-table", action="store_true", help="the GPU table at --gpu-batches (needs CUDA)")
    p.add_argument("--gpu-batches", type=lambda s: [int(x) for x in s.split(",")], default=[32, 256])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_table:
        if args.steps == 3:
            args.steps = 30
        if args.warmup == 1:
            args.warmup = 5
        return gpu_table(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device", file=sys.stderr)
        return 2
    return alternating(args, device)


if __name__ == "__main__":
    sys.exit(main())
