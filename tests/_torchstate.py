"""What ``clipbench.engine.train.train()`` sets process-wide in torch (threads, deterministic mode),
saved before a test that trains in-process and restored after, so it does not leak into others:
``saved = torch_globals()`` ... ``restore_torch_globals(saved)``."""
from __future__ import annotations

import torch


def torch_globals():
    """What ``train()`` sets process-wide (threads, deterministic mode), to restore after a test."""
    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()


def restore_torch_globals(saved):
    threads, det, warn_only = saved
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
