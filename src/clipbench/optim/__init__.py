"""Optimizers compared by clipbench: clipped-SGD, clipped-SSTM, and a builder for all four methods."""

from .build import METHODS, build_optimizer
from .clipped_sgd import CLIP_TARGETS, ClippedSGD
from .clipped_sstm import ClippedSSTM, sstm_alpha
from .clipping import CLIPPINGS, clip_, clipped, global_norm, norm_scale

__all__ = [
    "CLIPPINGS",
    "CLIP_TARGETS",
    "METHODS",
    "ClippedSGD",
    "ClippedSSTM",
    "build_optimizer",
    "clip_",
    "clipped",
    "global_norm",
    "norm_scale",
    "sstm_alpha",
]
