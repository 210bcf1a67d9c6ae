"""The tiny prepared data sets' recipes, and a scratch copy of one to damage.

``VOC_SYN``: the synthetic VOC 2012 the ``tiny_voc`` fixture (conftest.py) prepares.
``copy_root``: a copy of a prepared set's root (from its manifest), for tests that break files
without touching the fixture's set, which other tests of the module share."""
from __future__ import annotations

import shutil
from pathlib import Path

VOC_SYN = {"num_train": 6, "num_val": 3, "image_size": 64, "num_classes": 3, "seed": 1}


def copy_root(manifest, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(manifest["root"], dst)
    return dst
