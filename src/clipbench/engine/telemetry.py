"""What a run reports beyond its metrics: step losses, clipping, memory (its live views: tracking.py)."""
from __future__ import annotations

import math
import resource
import sys

import torch

from clipbench.runfiles import CLIP_METRICS


def loss_stride(total_steps: int, max_points: int) -> int:
    """Keep the loss of every ``stride``-th step: at most ``max_points``, evenly spread.

    It depends only on the planned number of steps, so a resumed run keeps the same steps.
    """
    return max(1, math.ceil(total_steps / max(1, max_points)))


class ClipStats:
    """Per-epoch clipping telemetry from the optimizer's per-step ``opt.last_clip_stats``.

    ``clip_fraction``: the share of steps whose update clipping changed; ``clip_scale_mean``:
    the mean clip scale (``norm``/``layer``); ``clip_entry_fraction``: the mean share of
    entries clamped (``coordinate``).  Each is averaged over the steps that report it:
    values may be 0-dim tensors (no host sync until the epoch's sums are read) or None
    where a mode has no such number or did not measure that step.

    A step the optimizer did not take (an fp16 GradScaler skips ``optimizer.step()`` when the
    gradient has inf/NaN) contributes nothing: ``opt.last_clip_stats`` then still holds the
    previous step's record, which must not count twice. It is counted in ``skipped`` (this
    epoch) instead; ``skipped_before`` carries the run's skipped steps of the earlier epochs,
    so ``skipped_total`` is the run's count so far.
    """

    # optimizer's per-step key -> the per-epoch metric it averages into
    METRICS = dict(zip(("clipped", "scale", "entry_fraction"), CLIP_METRICS))

    def __init__(self, skipped_before: int = 0) -> None:
        self.skipped_before = int(skipped_before)
        self.reset()

    def reset(self) -> None:
        self.sums = {key: 0.0 for key in self.METRICS}
        self.counts = {key: 0 for key in self.METRICS}
        self.skipped = 0

    def update(self, stats: dict | None, skipped: bool = False) -> None:
        """Add one step's record; ``skipped``: the optimizer did not step (its record is stale)."""
        if skipped:
            self.skipped += 1
            return
        for key in self.METRICS:
            v = (stats or {}).get(key)
            if v is not None:
                self.sums[key] = self.sums[key] + (v.float() if torch.is_tensor(v) else float(v))
                self.counts[key] += 1

    @property
    def skipped_total(self) -> int:
        return self.skipped_before + self.skipped

    def compute(self) -> dict[str, float]:
        return {name: float(self.sums[key]) / self.counts[key]
                for key, name in self.METRICS.items() if self.counts[key]}

    def state_dict(self) -> dict:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "counts": dict(self.counts),
                "skipped": self.skipped, "skipped_before": self.skipped_before}

    def load_state_dict(self, state: dict) -> None:
        # A checkpoint from before a key existed lacks it: that key starts from zero.
        self.reset()
        self.sums.update(state["sums"])
        self.counts.update(state["counts"])
        self.skipped = int(state.get("skipped", 0))
        self.skipped_before = int(state.get("skipped_before", 0))

    @staticmethod
    def skipped_in(state: dict | None) -> int:
        """The run's skipped steps up to the end of the epoch whose ``state_dict()`` is ``state``."""
        state = state or {}
        return int(state.get("skipped_before", 0)) + int(state.get("skipped", 0))


class StepWatch:
    """Whether ``optimizer.step()`` ran inside a ``with`` block (a GradScaler may skip it).

    Uses torch's step post-hook, so it needs no GradScaler internals and no extra host sync.
    An optimizer without hooks (not a ``torch.optim.Optimizer``) is taken to have stepped.
    """

    def __init__(self, optimizer) -> None:
        self.optimizer, self.ran, self._handle = optimizer, False, None

    def _hook(self, *_) -> None:
        self.ran = True

    def __enter__(self) -> StepWatch:
        register = getattr(self.optimizer, "register_step_post_hook", None)
        if register is None:
            self.ran = True
        else:
            self._handle = register(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()


def nonfinite_grad_norm(stats: dict | None) -> bool:
    """Whether the optimizer reported a non-finite gradient norm for its last step."""
    norm = (stats or {}).get("grad_norm")
    return norm is not None and not math.isfinite(float(norm))


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return {"peak_rss_mb": rss / (2**20 if sys.platform == "darwin" else 2**10)}


def meter_state(meter) -> dict:
    """A task meter's running sums, in a form ``torch.load(weights_only=True)`` accepts."""
    if hasattr(meter, "state_dict"):
        return meter.state_dict()
    return dict(vars(meter))


def load_meter_state(meter, state: dict) -> None:
    if hasattr(meter, "load_state_dict"):
        meter.load_state_dict(state)
    else:
        vars(meter).update(state)
