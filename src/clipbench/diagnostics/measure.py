"""Measure a task's mini-batch gradient noise at initialisation or at a run's checkpoint.

Two passes over the same ``batches`` mini-batches (training mode and augmentation, exactly as
the run's first batches): the first averages their gradients into the full-gradient estimate,
the second takes each batch's noise vector ``g_batch − g_full``. Only summaries are kept, so
memory stays at a few copies of the parameters plus ``batches`` vectors of at most
:data:`SKETCH` entries: the noise norms, a fixed random sample of coordinates (raw: the
tail index works within each coordinate, so scales need no matching), the sum of the
per-coordinate variances, the n × n Gram matrix of the noise vectors (for the spread of the
Gaussian reference, which correlations set), and the gradient statistics clip levels are
set from.

Those statistics are kept at each batch multiplier m a method steps with (``batch_multiplier``:
the optimizer sees the mean gradient of m mini-batches). The second pass knows both the
full-gradient estimate ḡ (the mean of n batches) and each g_i, and takes the "batch of m"
gradient h_i = ḡ + c·(g_i − ḡ) with c = √((n − m)/(m(n − 1))) (:func:`shrink`). With
independent batches of covariance Σ, ḡ has covariance Σ/n and g_i − ḡ, uncorrelated with it,
(n − 1)/n·Σ: h_i has the mean and covariance Σ/m of a mean of m batches exactly (for Gaussian
batches, its law). The plain c = 1/√m overstates that covariance by Σ·(m − 1)/(nm), since
ḡ's own error is not shrunk (+12% at n = 8, m = 2; +37% at m = 4). For m ≥ n no c works (ḡ
alone has more than Σ/m): c = 0, h_i = ḡ, and the record says so.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from clipbench.engine import checkpoint, env
from clipbench.engine.distributed import EpochBatchSampler, SeededSamples
from clipbench.progress import tqdm
from clipbench import spec as jobspec
from clipbench.tasks import build_task

# Above this many parameters the noise vectors are kept as CountSketches of this width
# (Charikar, Chen & Farach-Colton 2002): inner products stay unbiased, each off by about
# ‖ξ_i‖‖ξ_k‖/√width, which adds about (tr Σ)²/width to tr Σ², negligible while the noise's
# effective number of directions is far below the width. 2²¹ float32: 8 MiB per batch.
SKETCH = 2 ** 21


def _batches(task, batch_size: int, seed: int, n: int):
    """The run's first ``n`` training batches (over as many epochs as that takes)."""
    sampler = EpochBatchSampler(len(task.train_set), batch_size, 1, seed)
    if sampler.usable == 0:
        raise ValueError(f"tasks.{task.name}: no full batch of {batch_size} for the noise measurement")
    loader = DataLoader(SeededSamples(task.train_set), batch_sampler=sampler)
    out, epoch = [], 0
    while len(out) < n:
        sampler.set_epoch(epoch)
        out += [b for _, b in zip(range(n - len(out)), loader)]
        epoch += 1
    return out


def _grads(model, loss_fn, inputs, target, params) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn(model(inputs), target).backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def shrink(n: int, m: int) -> float:
    """c for which ḡ + c·(g_i − ḡ) has the covariance of a mean of ``m`` batches, when ḡ is the
    mean of ``n`` (see the module's docstring): √((n − m)/(m(n − 1))); 1 at m = 1, 0 at m ≥ n."""
    if m <= 1:
        return 1.0
    if n <= m:
        return 0.0
    return ((n - m) / (m * (n - 1))) ** 0.5


def measure(spec: dict, manifest: dict | None, batches: int, coords: int, checkpoint_path=None,
            multipliers=(1,)) -> dict:
    """The noise summaries of one point (see the module's docstring), as plain lists.

    ``multipliers``: the batch multipliers to keep the clip statistics at besides 1, under
    ``by_multiplier`` keyed by str(m) (m = 1 stays at the top level: ``grad_norms``,
    ``tensor_norms``, ``grad_max_abs``).
    """
    eng = spec.get("engine", {})
    torch.set_num_threads(eng.get("threads", 2))
    env.set_determinism(eng.get("deterministic", True))
    seed = int(spec["seed"])
    env.seed_everything(seed)
    task = build_task(jobspec.complete(spec), manifest)  # the same initial weights as the run of this seed
    model, step = task.model, 0
    if checkpoint_path is not None:
        state = checkpoint.load(checkpoint_path)
        if state is None:
            raise FileNotFoundError(f"{checkpoint_path}: no checkpoint to measure the noise at")
        model.load_state_dict(state["model"])
        step = int(state["step"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    data = _batches(task, int(spec["task_config"]["batch_size"]), seed, batches)
    ms = sorted({int(m) for m in multipliers} - {1})
    with torch.random.fork_rng(devices=[]):
        first = _first_pass(model, task.loss, data, params)
        second = _second_pass(model, task.loss, data, params, first["mean"], coords, seed, ms)
    first.pop("mean")
    return {"step": step, "n_train": len(task.train_set), **first, **second}


def _first_pass(model, loss_fn, data, params) -> dict:
    mean = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms, tensor_norms, max_abs = [], [], []
    for inputs, target in tqdm(data, desc="noise: full gradient", unit="batch", leave=False):
        g = _grads(model, loss_fn, inputs, target, params)
        tn = torch.stack([t.norm() for t in g])
        norms.append(float(tn.norm()))
        tensor_norms.append(tn.tolist())
        max_abs.append(float(max(t.abs().max() for t in g)))
        for m, t in zip(mean, g):
            m += t.double()
    n = len(data)
    return {"mean": [m / n for m in mean], "grad_norms": norms, "tensor_norms": tensor_norms,
            "grad_max_abs": max_abs}


def _sketcher(params, seed: int, width: int = SKETCH):
    """A function from a list of per-tensor vectors to one float32 vector of ≤ ``width`` entries
    whose inner products are the originals' (exact below ``width`` parameters)."""
    sizes = [p.numel() for p in params]
    if sum(sizes) <= width:
        return lambda vs: torch.cat([v.reshape(-1) for v in vs]).float().cpu()
    gen = torch.Generator().manual_seed(seed)
    hashes = [(torch.randint(width, (n,), generator=gen).to(p.device),
               (torch.randint(2, (n,), generator=gen, dtype=torch.int8) * 2 - 1).to(p.device))
              for n, p in zip(sizes, params)]

    def sketch(vs):
        out = torch.zeros(width, dtype=vs[0].dtype, device=vs[0].device)
        for v, (bucket, sign) in zip(vs, hashes):
            out.index_add_(0, bucket, v.reshape(-1) * sign)
        return out.float().cpu()
    return sketch


def _gram(rows: list[torch.Tensor], chunk: int = 2 ** 18) -> list[list[float]]:
    x = torch.stack(rows)
    g = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    for c in x.split(chunk, dim=1):  # float64 products, a chunk at a time
        c = c.double()
        g += c @ c.T
    return g.tolist()


def clip_statistics(mean, noise, c: float) -> tuple[float, list[float], float]:
    """Global norm, per-tensor norms and largest |entry| of ``mean + c·noise`` (lists of tensors)."""
    h = [m + c * v for m, v in zip(mean, noise)]
    tn = torch.stack([t.norm() for t in h])
    return float(tn.norm()), tn.tolist(), float(max(t.abs().max() for t in h))


def _second_pass(model, loss_fn, data, params, mean, coords: int, seed: int, multipliers=()) -> dict:
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    pick = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(total, size=min(coords, total), replace=False)))
    sketch = _sketcher(params, seed)
    sumsq = torch.zeros((), dtype=torch.float64)
    noise_norms, sampled, sketches = [], [], []
    n = len(data)
    at = {m: {"grad_norms": [], "tensor_norms": [], "grad_max_abs": [], "shrink": shrink(n, m)} for m in multipliers}
    for inputs, target in tqdm(data, desc="noise: noise vectors", unit="batch", leave=False):
        g = _grads(model, loss_fn, inputs, target, params)
        noise = [t.double() - m for t, m in zip(g, mean)]
        norm2 = sum((v * v).sum() for v in noise)
        noise_norms.append(float(norm2.sqrt()))
        sumsq += norm2.cpu()
        sampled.append(torch.cat([v.reshape(-1) for v in noise])[pick.to(noise[0].device)].cpu().numpy())
        sketches.append(sketch(noise))
        for rec in at.values():
            gn, tn, mx = clip_statistics(mean, noise, rec["shrink"])
            rec["grad_norms"].append(gn)
            rec["tensor_norms"].append(tn)
            rec["grad_max_abs"].append(mx)
    return {"noise_norms": noise_norms, "coords": np.stack(sampled).tolist(),
            "sum_var": float(sumsq) / max(n - 1, 1), "gram": _gram(sketches),
            "by_multiplier": {str(m): rec for m, rec in at.items()}}
