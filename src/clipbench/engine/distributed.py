"""Data order, per-sample augmentation seeds and multi-process (DDP) training.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e); its
global batches are cut in order and each rank takes a contiguous slice of every global batch.
So one process with batch B and W processes with B/W each see the same global batches, and
with DDP's gradient averaging take the same steps.

Augmentation: each sample is transformed under a torch seed made from (seed, e, index), in a
forked RNG. It therefore depends neither on the number of workers, nor on which worker
loads the sample, nor on whether the epoch was resumed part-way, and loading never touches
the main process' RNG (dropout and the like keep their own, checkpointed stream).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # DDP even with one process (torchrun --nproc_per_node=1): the same code path as with many.
    ddp: bool = False

    @property
    def enabled(self) -> bool:
        return self.ddp or self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def wanted(eng: dict) -> bool:
    return bool(eng.get("ddp", False)) or int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(eng: dict, device_type: str) -> Dist:
    """Join the process group that torchrun (or a test) set up through the environment."""
    if not wanted(eng):
        return Dist()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("engine.ddp is true but RANK/WORLD_SIZE are not set; launch with "
                           "`torchrun --nproc_per_node=N -m clipbench.cli train ...`")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), ddp=True)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_flag(flag: bool, d: Dist, device) -> bool:
    """True on every rank when it is true on one (all ranks must stop at the same step)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_dict(values: dict[str, float], d: Dist, device) -> dict[str, float]:
    """Mean over ranks of per-rank metrics (exact for means over equal shards, e.g. loss, accuracy)."""
    if not d.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.tolist())}


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


class EpochBatchSampler(Sampler[list]):
    """This rank's micro-batches of one epoch, from micro-batch ``start`` on.

    Yields lists of ``(epoch_seed, index)`` for :class:`SeededSamples`. Only whole
    optimizer steps are used (``usable`` micro-batches, a multiple of the accumulation),
    like ``drop_last``. Resuming part-way starts at ``start`` instead of loading and
    discarding the consumed batches.
    """

    def __init__(self, n: int, batch_size: int, accumulate: int, seed: int, d: Dist = Dist()):
        if batch_size % d.world:
            raise ValueError(f"batch_size {batch_size} is the global batch and must be divisible by the "
                             f"{d.world} processes")
        self.n, self.batch, self.accumulate, self.seed, self.d = n, batch_size, accumulate, seed, d
        self.local = batch_size // d.world
        self.usable = (n // batch_size) // accumulate * accumulate
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        s = epoch_seed(self.seed, self.epoch)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(s)).tolist()

    def __iter__(self):
        s = epoch_seed(self.seed, self.epoch)
        perm = self.order()
        offset = self.d.rank * self.local
        for i in range(self.start, self.usable):
            first = i * self.batch + offset
            yield [(s, j) for j in perm[first:first + self.local]]

    def __len__(self) -> int:
        return self.usable - self.start


class SeededSamples(Dataset):
    """``dataset[index]`` transformed under a seed from (epoch seed, index), in a forked RNG."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        eseed, index = key
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (the transforms draw from it): torch.manual_seed would also
            # reseed every accelerator's generator, which fork_rng(devices=[]) does not restore,
            # and before CUDA starts it queues each call with a formatted stack (~3 ms a sample).
            torch.default_generator.manual_seed((eseed * 2_654_435_761 + index) % (2**63))
            return self.dataset[index]


class LeadingBatches(EpochBatchSampler):
    """The first ``count`` whole batches of epoch ``e``'s order, for one process (BatchNorm's
    statistics at the method's output: :func:`clipbench.engine.train.recompute_bn`).

    Like the training order, they depend only on (seed, epoch): drawing them touches no RNG
    and no training loader, and every process count gets the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int, count: int):
        super().__init__(n, batch_size, 1, seed)
        self.usable = min(self.usable, max(0, int(count)))
