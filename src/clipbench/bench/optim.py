"""Step-time benchmark of the optimizers on ResNet-18's parameters (11.7M), against torch's SGD.

Methods are interleaved within each round (so machine load hits all of them alike); the ratio
to ``torch.optim.SGD(momentum=0.9)`` is taken within each round and its median over rounds
is reported.  Each clipped optimizer runs twice per round, with its clipping telemetry on
(as in training) and off, so the telemetry's own cost is measured in the same run too.
``clipbench bench optim --device cpu --rounds 30``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clipbench.optim.clipped_sgd import ClippedSGD
from clipbench.optim.clipped_sstm import ClippedSSTM


class _ClipThenSGD:
    """The usual way: ``clip_grad_norm_`` (modifies the grads) then ``SGD.step``."""

    def __init__(self, params, level: float) -> None:
        self.params, self.level = params, level
        self.opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, self.level)
        self.opt.step()


# The floors these paths are held to (ratio to torch's SGD, telemetry on): norm clipping reads
# the gradients once more (1.2x); a clamp of the momentum buffer fuses into the update (1.0x);
# SSTM keeps two full-size sequences (1.4x).  A margin above each floor.
TARGETS = {"clipped_sgd:norm:grad": 1.25, "clipped_sgd:coordinate:momentum": 1.15, "clipped_sstm:norm": 1.6}


def _methods():
    sgd = dict(lr=1e-3, momentum=0.9)
    return {
        "sgd": lambda ps: torch.optim.SGD(ps, **sgd),
        "clip_grad_norm+sgd": lambda ps: _ClipThenSGD(ps, 1.0),
        "clipped_sgd:norm:grad": lambda ps: ClippedSGD(ps, clipping="norm", clip_level=1.0, **sgd),
        "clipped_sgd:norm:momentum": lambda ps: ClippedSGD(ps, clipping="norm", clip_level=1.0,
                                                           clip_target="momentum", **sgd),
        "clipped_sgd:coordinate:grad": lambda ps: ClippedSGD(ps, clipping="coordinate", clip_level=1e-3, **sgd),
        "clipped_sgd:coordinate:momentum": lambda ps: ClippedSGD(ps, clipping="coordinate", clip_level=1e-3,
                                                                 clip_target="momentum", **sgd),
        "clipped_sgd:layer:grad": lambda ps: ClippedSGD(ps, clipping="layer", clip_level=1.0, **sgd),
        "clipped_sgd:layer:momentum": lambda ps: ClippedSGD(ps, clipping="layer", clip_level=1.0,
                                                            clip_target="momentum", **sgd),
        "clipped_sstm:norm": lambda ps: ClippedSSTM(ps, a=1e5, L=10.0, B=1.0, clipping="norm"),
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-4),
    }


def _params(device: str, seed: int) -> list[torch.Tensor]:
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None).to(device)
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)  # norm ~3400: norm clipping at 1 is active
    return params


def run(device: str = "cpu", rounds: int = 20, warmup: int = 3, methods: list[str] | None = None) -> list[dict]:
    available = _methods()
    names = methods or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown methods {unknown} (known: {', '.join(available)})")
    if "sgd" not in names:
        names = ["sgd", *names]
    setups, runs = {}, []
    for name in names:
        for telemetry in (True, False):
            params = _params(device, 0)
            grads = [p.grad.clone() for p in params]  # restored for methods that modify p.grad
            opt = available[name](params)
            if not hasattr(opt, "telemetry"):
                setups[name] = (params, grads, opt)
                runs.append(name)
                break
            opt.telemetry = telemetry
            key = name if telemetry else f"{name} (telemetry off)"
            setups[key] = (params, grads, opt)
            runs.append(key)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {n: [] for n in runs}
    with torch.no_grad():
        for r in range(warmup + rounds):
            # Every other round in reverse: no method always runs right after the same one (the
            # caches it leaves behind biased telemetry on/off by a few % in a fixed order).
            for name in (runs if r % 2 == 0 else runs[::-1]):
                params, grads, opt = setups[name]
                if name == "clip_grad_norm+sgd":
                    for p, g in zip(params, grads):
                        p.grad.copy_(g)
                sync()
                t0 = time.perf_counter()
                opt.step()
                sync()
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    rows = []
    for name in names:
        off_times = times.get(f"{name} (telemetry off)")
        rows.append(dict(method=name, median_ms=statistics.median(times[name]) * 1e3,
                         ratio=_paired(times[name], times["sgd"]),
                         ratio_off=None if off_times is None else _paired(off_times, times["sgd"]),
                         telemetry_cost=None if off_times is None else _paired(times[name], off_times) - 1,
                         target=TARGETS.get(name)))
    return rows


def _paired(times: list[float], base: list[float]) -> float:
    """The median over rounds of the ratio within each round: a machine whose speed drifts
    over a run (a shared VM's neighbours, clock changes) shifts both times of a round alike."""
    return statistics.median(t / b for t, b in zip(times, base))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clipbench bench optim", description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (each runs every method once)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=None, help="subset of methods (default: all)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    try:
        rows = run(args.device, args.rounds, args.warmup, args.methods)
    except ValueError as e:
        ap.error(str(e))
    print(f"device={args.device} threads={torch.get_num_threads()} rounds={args.rounds} torch={torch.__version__}")
    print(f"{'method':34s} {'median ms':>10s} {'x SGD':>7s} {'x SGD, telemetry off':>21s} "
          f"{'telemetry cost':>15s} {'target':>7s}")

    def cell(v, fmt, width):
        return f"{'-':>{width}s}" if v is None else format(v, fmt).rjust(width)

    for row in rows:
        verdict = "" if row["target"] is None else ("  ok" if row["ratio"] <= row["target"] else "  ABOVE TARGET")
        print(f"{row['method']:34s} {row['median_ms']:10.2f} {row['ratio']:7.2f} "
              f"{cell(row['ratio_off'], '.2f', 21)} {cell(row['telemetry_cost'], '+.1%', 15)} "
              f"{cell(row['target'], '.2f', 7)}{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
