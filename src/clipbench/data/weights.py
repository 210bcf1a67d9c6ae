"""Pretrained weights as data: pinned in ``sources.SOURCES`` like the datasets' archives,
fetched by the same downloader (mirrors, resume, progress, checksum) into ``data/weights/``,
the folder DVC versions with the rest of ``data/``.

Training never downloads: the workflow's ``weights`` rule fetches the file before a run that
needs it, so compute nodes without internet only read it. A file already in the torch hub
cache (``<torch.hub.get_dir()>/checkpoints/``, where torchvision puts it) is used when
``data/weights/`` has none.
"""
from __future__ import annotations

from pathlib import Path

from clipbench.data import sources
from clipbench.data.download import fetch_files

WEIGHTS_DIR = Path("data/weights")  # relative to the workflow's root, like data/<dataset>
NAMES = ("vgg16_imagenet",)  # the entries of sources.SOURCES that are weights


def file_name(name: str) -> str:
    """The pinned file name of weights ``name`` (e.g. ``vgg16-397923af.pth``)."""
    if name not in NAMES:
        raise KeyError(f"unknown weights {name!r} (known: {', '.join(NAMES)})")
    return sources.files(name)[0]["name"]


def name_of(file: str) -> str:
    """The weights whose pinned file is ``file``; the inverse of :func:`file_name`."""
    for name in NAMES:
        if file_name(name) == file:
            return name
    raise KeyError(f"no pinned weights file {file!r} (known: {', '.join(file_name(n) for n in NAMES)})")


def fetch_weights(name: str, dest=WEIGHTS_DIR, *, mirrors=None, checksums=None, progress=True,
                  retries=5, backoff=1.0, timeout=60) -> Path:
    """Download weights ``name`` into ``dest`` (verified; skipped when already there)."""
    file_name(name)  # an unknown name fails here, naming the known ones
    (path,) = fetch_files(name, dest, mirrors=mirrors, checksums=checksums, progress=progress,
                          retries=retries, backoff=backoff, timeout=timeout, archive_dir=dest)
    return path


def find_weights(name: str, dest=WEIGHTS_DIR) -> Path:
    """Where training reads weights ``name``: the fetched copy in ``dest`` if it exists, else the
    torch hub cache's if that exists, else the fetched copy's path (for the error message)."""
    import torch

    fetched = Path(dest) / file_name(name)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / file_name(name)
    return hub if not fetched.is_file() and hub.is_file() else fetched
