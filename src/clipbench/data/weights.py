"""Pretrained weights as data: pinned here like the datasets' archives in ``sources``, fetched
by the same downloader (mirrors, resume, progress, checksum) into ``data/weights/``, the
folder DVC versions with the rest of ``data/``.

Training never downloads: the workflow's ``weights`` rule fetches the file before a run that
needs it, so compute nodes without internet only read it. A file already in the torch hub
cache (``<torch.hub.get_dir()>/checkpoints/``, where torchvision puts it) is used when
``data/weights/`` has none.

Where the pins come from (nothing here is invented):

* VGG16 ImageNet weights (torchvision's ``VGG16_Weights.IMAGENET1K_V1``): the file name and
  URL are torchvision's (``torchvision/models/vgg.py``). torchvision names its weight files
  ``<model>-<first 8 hex digits of the file's sha256>.pth`` and checks only that prefix
  (``torch.hub.load_state_dict_from_url(..., check_hash=True)``), so the prefix ``397923af``
  is pinned and checked the same way. No full sha256 from an authoritative source was found:
  one third-party weights inventory lists
  ``397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0``, which agrees with the
  prefix but is not pinned. The size, 553433881 bytes, is the byte count torch.hub's progress
  bar prints for this file in many independent public training logs; it is pinned too.
"""
from __future__ import annotations

import copy
from pathlib import Path

from clipbench.data.download import CHECKSUM_KEYS, download, mirror_urls

WEIGHTS_DIR = Path("data/weights")  # relative to the workflow's root, like data/<dataset>
WEIGHTS: dict[str, dict] = {
    "vgg16_imagenet": {
        "description": "torchvision's VGG16 ImageNet-1k weights (IMAGENET1K_V1), FCN-32s' encoder",
        "name": "vgg16-397923af.pth",
        "md5": None,
        "sha256": None,
        "sha256_prefix": "397923af",
        "size": 553433881,
        "mirrors": ["https://download.pytorch.org/models/"],
    },
}
NAMES = tuple(WEIGHTS)


def spec(name: str) -> dict:
    """A copy of the pinned entry of weights ``name``."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown weights {name!r} (known: {', '.join(NAMES)})")
    return copy.deepcopy(WEIGHTS[name])


def file_name(name: str) -> str:
    """The pinned file name of weights ``name`` (e.g. ``vgg16-397923af.pth``)."""
    return spec(name)["name"]


def name_of(file: str) -> str:
    """The weights whose pinned file is ``file``; the inverse of :func:`file_name`."""
    for name in NAMES:
        if file_name(name) == file:
            return name
    raise KeyError(f"no pinned weights file {file!r} (known: {', '.join(file_name(n) for n in NAMES)})")


def fetch_weights(name: str, dest=WEIGHTS_DIR, *, mirrors=None, checksums=None, progress=True,
                  retries=5, backoff=1.0, timeout=60) -> Path:
    """Download weights ``name`` into ``dest``, verified; skipped when already there.

    ``mirrors`` (base URLs) replaces the pinned hosts; ``checksums`` (``{file: {"sha256": ...}}``,
    as for ``download.fetch_files``) replaces the pinned values: tests and a user's own copy.
    """
    entry = spec(name)
    file = entry["name"]
    expected = {k: entry.get(k) for k in CHECKSUM_KEYS}
    if checksums and file in checksums:
        expected = {k: checksums[file].get(k) for k in CHECKSUM_KEYS}
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    urls = mirror_urls(file, list(mirrors) if mirrors else entry["mirrors"])
    return download(file, urls, dest, **expected, retries=retries, backoff=backoff, timeout=timeout,
                    progress=progress)


def find_weights(name: str, dest=WEIGHTS_DIR) -> Path:
    """Where training reads weights ``name``: the fetched copy in ``dest`` if it exists, else the
    torch hub cache's if that exists, else the fetched copy's path (for the error message)."""
    import torch

    fetched = Path(dest) / file_name(name)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / file_name(name)
    return hub if not fetched.is_file() and hub.is_file() else fetched
