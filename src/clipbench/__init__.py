"""clipbench: gradient-clipping optimizers, replicated end to end."""

__version__ = "0.1.0"
