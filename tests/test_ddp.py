"""DDP on the CPU (gloo, 2 processes) takes the same steps as one process with the same global batch."""
from __future__ import annotations

import copy
import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests._tinytask import ddp_worker, tiny_spec, use_tiny_task, restore_torch_globals, torch_globals
from clipbench.engine import checkpoint, train as T

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method_cfg", [
    {"lr": 0.1, "momentum": 0.9, "batch_multiplier": 2},
])
def test_two_processes_match_one(monkeypatch, tmp_path, method_cfg):
    spec = tiny_spec(epochs=2, batch_size=8, engine={"ddp": True, "checkpoint_every_steps": 1}, **method_cfg)
    mp.spawn(ddp_worker, args=(2, _free_port(), spec, str(tmp_path / "ddp")), nprocs=2, join=True)

    use_tiny_task(monkeypatch, dropout=0.0)
    one = T.train(copy.deepcopy({**spec, "engine": {**spec["engine"], "ddp": False}}), None, tmp_path / "one")
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["steps"] == one["steps"] == 4
    pa, pb = (checkpoint.load(tmp_path / d / "checkpoint.pt")["model"] for d in ("one", "ddp"))
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], rtol=1e-5, atol=1e-6)
    # The per-rank means of equal shards average to the global mean.
    assert two["final"]["train"]["loss"] == pytest.approx(one["final"]["train"]["loss"], rel=1e-5)
    assert two["final"]["val"] == pytest.approx(one["final"]["val"], rel=1e-5)
    # Each process took half of every global batch, not all of it.
    assert (checkpoint.load(tmp_path / "ddp" / "checkpoint.pt")["images"]
            == checkpoint.load(tmp_path / "one" / "checkpoint.pt")["images"] == 2 * 32)
    assert not any((tmp_path / "ddp").glob("*.tmp"))
