"""DDP on the CPU (gloo, 2 processes) takes the same steps as one process with the same global batch,
for every method: SGD, Adam, clipped-SGD (norm, layer, coordinate clipping of the gradient or of
the momentum buffer), SSTM and clipped-SSTM (both indexings).

DDP averages the gradients before ``optimizer.step()``, so every rank's optimizer clips the
*global* gradient (one process' gradient up to rounding) and the ranks stay identical. All cases
run inside ONE spawned 2-process job (the process-group start-up is shared); the one-process runs
go in this process. The clip levels are set so that clipping is active (asserted from telemetry),
or the clipped cases would prove nothing beyond the unclipped ones.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests._tensortask import tensor_task, tensor_task_spec, use_tensor_task
from tests._torchstate import restore_torch_globals, torch_globals
from clipbench.engine import checkpoint, train as T

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

# Tolerances: relative to each value, plus an absolute part relative to the tensor's magnitude
# (largest entry), so they mean the same for any scale and any x86 CPU (AVX2 or AVX-512: only
# rounding differs; nothing is compared with stored numbers).
RTOL, ATOL_REL = 1e-5, 1e-6

# The tiny task's gradient has a global norm of about 0.7 (per tensor 0.1-0.6, entries mostly
# below 0.1); the momentum buffer grows to several times that. Levels for the ACTIVE clipping.
SGD_LEVELS = {"norm": 0.1, "layer": 0.05, "coordinate": 0.02}
# clipped-SSTM: λ = B/α, α = (k+2)/(2aL) (a=1, L=5: 0.2 ... 1)
SSTM_B = {"norm": 0.02, "layer": 0.01, "coordinate": 0.003}


def _cases() -> dict[str, tuple[str, dict]]:
    cases = {"sgd": ("sgd", {"lr": 0.1, "momentum": 0.9, "batch_multiplier": 2}),
             "adam": ("adam", {"lr": 0.01})}
    for clipping, level in SGD_LEVELS.items():
        for target in ("grad", "momentum"):
            cases[f"clipped_sgd-{clipping}-{target}"] = ("clipped_sgd", {
                "lr": 0.1, "momentum": 0.9, "clipping": clipping, "clip_level": level, "clip_target": target})
    # one case with accumulation as well (clipping sees the accumulated, all-reduced gradient)
    cases["clipped_sgd-norm-grad-bm2"] = ("clipped_sgd", {
        "lr": 0.1, "momentum": 0.9, "clipping": "norm", "clip_level": 0.1, "batch_multiplier": 2})
    for indexing in ("thesis", "authors"):
        cases[f"sstm-{indexing}"] = ("sstm", {"a": 1.0, "L": 5.0, "indexing": indexing})
        for clipping, B in SSTM_B.items():
            cases[f"clipped_sstm-{clipping}-{indexing}"] = ("clipped_sstm", {
                "a": 1.0, "L": 5.0, "B": B, "clipping": clipping, "indexing": indexing})
    return cases


CASES = _cases()


def _spec(method: str, cfg: dict, ddp: bool) -> dict:
    # clip_stats_every 1: coordinate clipping reports its clamped share at every step
    return tensor_task_spec(method=method, epochs=2, batch_size=8,
                            engine={"ddp": ddp, "checkpoint_every_steps": 1, "clip_stats_every": 1}, **cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matrix_worker(rank: int, world: int, port: int, specs: dict, root: str) -> None:
    """One process of the 2-process job: one process group, every case's run in turn.

    Each rank also saves its final model and optimizer state (``rank{r}.pt``), so the test can
    check that the ranks did not drift apart (e.g. a momentum buffer clipped differently)."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    T.build_task = lambda spec, manifest: tensor_task(dropout=0.0)
    built = []
    setup = T.setup
    T.setup = lambda *a, **k: built.append(setup(*a, **k)) or built[-1]
    try:
        for name, spec in specs.items():
            out = os.path.join(root, name)
            os.makedirs(out, exist_ok=True)
            T.train(copy.deepcopy(spec), None, out)
            s = built[-1]
            torch.save({"model": s.raw_model.state_dict(), "optimizer": s.optimizer.state_dict()},
                       os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case run by 2 processes (one job) and by 1 process: {case: (one, two, dir1, dir2)}."""
    saved = torch_globals()
    root = tmp_path_factory.mktemp("ddp")
    t0 = time.perf_counter()
    specs = {name: _spec(m, cfg, ddp=True) for name, (m, cfg) in CASES.items()}
    mp.spawn(matrix_worker, args=(2, _free_port(), specs, str(root / "ddp")), nprocs=2, join=True)
    t_two = time.perf_counter() - t0
    mp_patch = pytest.MonkeyPatch()
    use_tensor_task(mp_patch, dropout=0.0)
    out = {}
    try:
        for name, (m, cfg) in CASES.items():
            one = T.train(_spec(m, cfg, ddp=False), None, root / "one" / name)
            two = json.loads((root / "ddp" / name / "metrics.json").read_text())
            out[name] = (one, two, root / "one" / name, root / "ddp" / name)
    finally:
        mp_patch.undo()
        restore_torch_globals(saved)
    print(f"\nDDP matrix: {len(CASES)} cases, 2-process job {t_two:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


def _close(b: torch.Tensor, a: torch.Tensor, what: str) -> None:
    if not a.is_floating_point():
        assert torch.equal(a, b), what
        return
    scale = float(a.abs().max()) if a.numel() else 0.0
    torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL_REL * scale, msg=lambda m: f"{what}: {m}")


def _opt_tensors(state: dict) -> dict:
    return {(i, k): v for i, st in state["state"].items() for k, v in st.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one(runs, case):
    one, two, d1, d2 = runs[case]
    method, cfg = CASES[case]
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["status"] == one["status"] == "ok"
    per_epoch = 32 // 8 // cfg.get("batch_multiplier", 1)
    assert two["steps"] == one["steps"] == 2 * per_epoch

    ca, cb = (checkpoint.load(d / "checkpoint.pt") for d in (d1, d2))
    for k in ca["model"]:
        _close(cb["model"][k], ca["model"][k], f"model {k}")
    # The optimizer's state too: momentum buffers, Adam's moments, SSTM's y and z.
    oa, ob = _opt_tensors(ca["optimizer"]), _opt_tensors(cb["optimizer"])
    assert oa.keys() == ob.keys() and oa
    for k in oa:
        _close(ob[k], oa[k], f"optimizer state {k}")
    # The per-rank means of equal shards average to the global mean; val is at SSTM's y.
    assert two["final"]["train"]["loss"] == pytest.approx(one["final"]["train"]["loss"], rel=RTOL)
    assert two["final"]["val"] == pytest.approx(one["final"]["val"], rel=RTOL)
    # Each process took half of every global batch, not all of it.
    assert cb["images"] == ca["images"] == 2 * 32
    assert not any(d2.glob("*.tmp"))

    # The two ranks hold the same model and optimizer state, bit for bit (no rank drifted).
    r0, r1 = (torch.load(d2 / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    s0, s1 = _opt_tensors(r0["optimizer"]), _opt_tensors(r1["optimizer"])
    assert s0.keys() == s1.keys()
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k

    tel1, tel2 = one["telemetry"], two["telemetry"]
    if method in ("clipped_sgd", "clipped_sstm"):
        # Clipping was active, and as often in both runs.
        assert tel1["clip_fraction"] > 0.5, tel1
        assert tel2["clip_fraction"] == tel1["clip_fraction"]
        if cfg["clipping"] == "coordinate":
            # some entries clamped, not all (clamping everything would be sign descent)
            assert 0 < tel1["clip_entry_fraction"] < 0.95, tel1
        else:
            assert tel1["clip_scale_mean"] < 0.9, tel1
            assert tel2["clip_scale_mean"] == pytest.approx(tel1["clip_scale_mean"], rel=RTOL)
