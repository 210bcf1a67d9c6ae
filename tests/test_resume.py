"""Kill `clipbench train` with SIGKILL at a random moment, rerun the same command, and get
bit-for-bit the result of an uninterrupted run (ResNet-18 on the tiny ImageNet layout, CPU)."""
from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests._checkout import checkout_env
from tests._specs import classification_spec
from tests._torchstate import restore_torch_globals, torch_globals
from clipbench.data.prepare import load_manifest
from clipbench.engine import checkpoint
from clipbench.engine.train import train


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    saved = torch_globals()
    yield
    restore_torch_globals(saved)


def _command(spec: dict, manifest_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "clipbench.cli", "train", "--spec", json.dumps(spec),
            "--data", str(manifest_dir / "manifest.json"), "--out", str(out)]


def _run(cmd, timeout=120):
    proc = subprocess.run(cmd, env=checkout_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _run_and_kill(cmd, ckpt: Path, kills_after: int, rng: random.Random) -> bool:
    """Start ``cmd``; after its ``kills_after``-th checkpoint write, wait a random moment, SIGKILL it.

    Returns False when the run finished before it could be killed.
    """
    proc = subprocess.Popen(cmd, env=checkout_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, last = 0, None
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                stamp = ckpt.stat().st_mtime_ns, ckpt.stat().st_ino
            except FileNotFoundError:
                stamp = None
            if stamp is not None and stamp != last:
                seen, last = seen + 1, stamp
                if seen >= kills_after:
                    time.sleep(rng.uniform(0.0, 0.15))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _compare(ref: Path, run: Path) -> None:
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (ref, run))
    assert b["timing"]["resumed_at_steps"], "the run was not resumed"
    a.pop("timing"), b.pop("timing")
    assert a == b
    assert (ref / "history.csv").read_text() == (run / "history.csv").read_text()
    pa, pb = (checkpoint.load(p / "checkpoint.pt")["model"] for p in (ref, run))
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def _reference(tiny_imagenet, tmp_path, spec) -> tuple[Path, Path, Path]:
    """The manifest folder, and the uninterrupted reference run (in this process: one interpreter
    start less) trained from that manifest file, so that metrics.json's "data" agrees with the
    killed run's; and the folder of the run to kill."""
    manifest_dir = tmp_path / "data"
    manifest_dir.mkdir()
    (manifest_dir / "manifest.json").write_text(json.dumps(tiny_imagenet))  # root is absolute
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(copy.deepcopy(spec), load_manifest(manifest_dir / "manifest.json"), ref)
    return manifest_dir, ref, run


def _kill_and_resume(tiny_imagenet, tmp_path, spec, kills: list[int], seed: int):
    rng = random.Random(seed)
    manifest_dir, ref, run = _reference(tiny_imagenet, tmp_path, spec)
    for k in kills:
        killed = _run_and_kill(_command(spec, manifest_dir, run), run / "checkpoint.pt", k, rng)
        assert killed, f"the run ended before its checkpoint write #{k}; make it longer"
        assert not (run / "metrics.json").exists()
    _run(_command(spec, manifest_dir, run))
    _compare(ref, run)


def test_sigkill_and_rerun_is_bit_for_bit(tiny_imagenet, tmp_path):
    spec = classification_spec(epochs=2)
    spec["engine"].update({"checkpoint_every_steps": 1, "dvclive": False})
    seed = random.randrange(10**6)
    kill_at = random.Random(seed).randint(1, 6)  # of 8 checkpoint writes (one per step)
    print(f"killing after checkpoint write {kill_at} (seed {seed})")
    _kill_and_resume(tiny_imagenet, tmp_path, spec, [kill_at], seed)


@pytest.mark.slow
@pytest.mark.parametrize("method_cfg", [
    {"lr": 0.01, "momentum": 0.9, "batch_multiplier": 2, "schedule": {"name": "cosine"}},
    {"lr": 1e-3, "batch_multiplier": 1},
])
def test_repeated_sigkills_with_workers(tiny_imagenet, tmp_path, method_cfg):
    method = "adam" if "momentum" not in method_cfg else "sgd"
    spec = classification_spec(method=method, epochs=4, **method_cfg)
    spec["engine"].update({"checkpoint_every_steps": 1, "num_workers": 2, "dvclive": True})
    _kill_and_resume(tiny_imagenet, tmp_path, spec, [2, 3, 2], seed=7)


def test_sigterm_to_the_process_group_with_workers_checkpoints_and_the_rerun_resumes(tiny_imagenet, tmp_path):
    """SLURM signals every process of the job step, loader workers too: they keep serving
    batches (KeepOnGroupSigterm) until the main process checkpoints at its next step boundary
    and exits 143; the rerun resumes bit for bit. Without it the workers die at once and the
    run ends at the loader's "DataLoader worker ... is killed by signal: Terminated"."""
    spec = classification_spec(epochs=2)
    spec["engine"].update({"checkpoint_every_steps": 1, "dvclive": False, "num_workers": 2})
    manifest_dir, ref, run = _reference(tiny_imagenet, tmp_path, spec)
    ckpt = run / "checkpoint.pt"
    # Its own process group (session), as a SLURM job step is: killpg reaches the workers too.
    proc = subprocess.Popen(_command(spec, manifest_dir, run), env=checkout_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the loader workers had not started"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = checkpoint.load(ckpt)["step"]
    assert f"stopped by SIGTERM after step {step}: checkpoint written to {ckpt}" in err
    assert "Traceback" not in err and "killed by signal" not in err and not (run / "metrics.json").exists()
    deadline = time.monotonic() + 30  # the workers leave with their parent
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and
                Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"], "a loader worker outlived the run"
    _run(_command(spec, manifest_dir, run))
    _compare(ref, run)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            out += [int(c) for c in children.read_text().split()]
    return out


def test_sigterm_checkpoints_at_the_next_step_and_the_rerun_resumes(tiny_imagenet, tmp_path):
    """scancel, preemption and time limits send SIGTERM first: the run checkpoints at the next
    step boundary and exits 143 with a message; the rerun resumes bit for bit. (Checkpoints
    every step here only so the test knows when training has begun.)"""
    spec = classification_spec(epochs=2)
    spec["engine"].update({"checkpoint_every_steps": 1, "dvclive": False})
    manifest_dir, ref, run = _reference(tiny_imagenet, tmp_path, spec)
    ckpt = run / "checkpoint.pt"
    proc = subprocess.Popen(_command(spec, manifest_dir, run), env=checkout_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = checkpoint.load(ckpt)["step"]
    assert f"stopped by SIGTERM after step {step}: checkpoint written to {ckpt}" in err
    assert "Traceback" not in err and not (run / "metrics.json").exists()
    _run(_command(spec, manifest_dir, run))
    _compare(ref, run)
