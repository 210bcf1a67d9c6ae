"""An optimizer that crashes on purpose, named in a test's config by import path: a training
job that fails as a CUDA out-of-memory error would, while a file ``crash.flag`` is in the job's
working folder (remove it and the same run trains through)."""
from __future__ import annotations

from pathlib import Path

import torch

FLAG = "crash.flag"


class CrashAtStep(torch.optim.SGD):
    def __init__(self, params, lr: float, crash_at: int = 2):
        super().__init__(params, lr=lr)
        self.crash_at, self.steps = crash_at, 0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        if self.steps >= self.crash_at and Path(FLAG).exists():
            raise RuntimeError("CUDA out of memory (simulated by tests/reliability/_faulty.py)")
        return super().step(closure)
