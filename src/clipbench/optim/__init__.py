"""Optimizers compared by clipbench: clipped-SGD, clipped-SSTM, and a builder for every compared method."""

from .build import METHODS, build_optimizer, make_optimizer
from .clipped_sgd import CLIP_TARGETS, ClippedSGD
from .clipped_sstm import INDEXINGS, RATIO_BOUND_MODES, ClippedSSTM, sstm_alpha
from .clipping import CLIPPINGS, ClipRecord, global_norm, norm_scale

__all__ = [
    "CLIPPINGS",
    "CLIP_TARGETS",
    "INDEXINGS",
    "METHODS",
    "RATIO_BOUND_MODES",
    "ClipRecord",
    "ClippedSGD",
    "ClippedSSTM",
    "build_optimizer",
    "global_norm",
    "make_optimizer",
    "norm_scale",
    "sstm_alpha",
]
