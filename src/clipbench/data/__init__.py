"""Datasets: one module per dataset (imagenet100, voc2012, div2k), each with its ``prepare``
and layout checks; shared transport (sources, download, extract) and synthetic generators;
``prepare`` looks a dataset up by name and writes its manifest."""

from clipbench.errors import ClipbenchError

MANIFEST = "manifest.json"  # written by clipbench.data.prepare alone


class DatasetLayoutError(ClipbenchError, RuntimeError):
    """A dataset folder does not have the expected layout."""
