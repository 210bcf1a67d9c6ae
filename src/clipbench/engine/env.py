"""The machine a run uses: seeds, determinism, the device (its choice, autocast, moving
batches onto it), the DataLoader workers, and the versions recorded with every result.
The training loop and the benchmarks (``clipbench.bench``) both take these from here."""
from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import sys
import threading
from typing import Callable

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(enabled: bool) -> None:
    if enabled:
        # cuBLAS needs this to be deterministic; it must be set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: some CUDA backward kernels (e.g. adaptive average pooling in ResNet-18) have
    # no deterministic version; a warning names them instead of stopping the run.
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("engine.device is 'cuda' but no CUDA device is available; set engine.device: cpu or auto")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    """``engine.amp`` ("none", "bf16", "fp16") as a context for forward passes on ``device``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4 and x.is_floating_point():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# -- loader workers --------------------------------------------------------------------------------

def loader_options(eng: dict, task: str, device: torch.device) -> dict:
    """DataLoader options of ``task``: ``engine.loaders.<task>`` over ``engine.num_workers``;
    pinned memory on CUDA unless ``pin_memory: false``. None changes the data a run sees."""
    own = (eng.get("loaders") or {}).get(task) or {}
    workers = int(own["num_workers"] if own.get("num_workers") is not None else eng.get("num_workers", 0))
    pin = own.get("pin_memory")
    return {"num_workers": workers, "pin_memory": device.type == "cuda" and pin is not False,
            "persistent_workers": workers > 0}


class KeepOnGroupSigterm:
    """A DataLoader ``worker_init_fn`` (wrapping ``init_fn``, if any): the worker outlives a
    SIGTERM sent to the whole process group, as SLURM signals a job step, so that the main
    process can still fetch batches up to its next step boundary and checkpoint there.

    Without it the worker dies at once (torch's worker handler) and the run ends at the
    loader's "worker killed" error. A SIGTERM from the worker's parent (DataLoader's own
    shutdown of a stuck worker, multiprocessing's at exit) still ends it, as torch's does:
    SIGTERM is blocked and a thread takes it with ``sigwaitinfo``, which says who sent it.
    Workers exit when their parent does (torch's watchdog), so none is left behind.
    """

    def __init__(self, init_fn: Callable[[int], None] | None = None):
        self.init_fn = init_fn

    def __call__(self, worker_id: int) -> None:
        parent = os.getppid()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit it

        def take() -> None:
            while True:
                info = signal.sigwaitinfo({signal.SIGTERM})
                if info.si_pid == parent:
                    os._exit(0)  # what torch's worker handler does for its parent's SIGTERM

        threading.Thread(target=take, name="sigterm", daemon=True).start()
        if self.init_fn is not None:
            self.init_fn(worker_id)


def keep_workers_on_sigterm(kw: dict) -> dict:
    """DataLoader options ``kw`` whose workers (if any) outlive a process-group SIGTERM
    (:class:`KeepOnGroupSigterm`, then the ``worker_init_fn`` already there)."""
    if not kw.get("num_workers"):
        return kw
    return {**kw, "worker_init_fn": KeepOnGroupSigterm(kw.get("worker_init_fn"))}


def versions() -> dict:
    import torchvision

    import clipbench

    return {
        "clipbench": clipbench.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
