"""``clipbench prepare <dataset>``: make a dataset ready to train on, and describe it.

The result is ``<out>/manifest.json``: where the data is (``root``), where it came from,
and what it holds. Training reads only the manifest, so a dataset already on the user's
disk (``datasets.<name>.root``), one downloaded or built from archives, and the embedded
synthetic one are all used the same way.

Each dataset's module does the work for each source; this module picks the module by name
and is the one writer of the manifest, last and atomically, so it marks a finished build.
Archives (downloaded, or the user's ImageNet tars) live in ``datasets.<name>.archives``
(default ``data/<name>``), the folder DVC versions; extracted and generated trees
live under ``<out>/data``, which DVC does not track (it is slow on 100k small files).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from clipbench import files
from clipbench.data import MANIFEST, filelist, images
from clipbench.data.datasets import DATASETS
from clipbench.data.download import redirect_policy

def prepare(name: str, cfg: dict, out: str | Path, **options) -> dict:
    """Prepare dataset ``name`` as ``cfg`` (its ``datasets.<name>`` section) says, into
    ``out``; write and return the manifest. ``options`` go to the dataset's ``prepare``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg["root"]).expanduser().resolve() if cfg.get("root") else None
    source = "root" if root else cfg.get("source", "synthetic")
    with redirect_policy(cfg.get("cross_origin_redirects", False)):
        manifest = DATASETS[name].prepare(cfg, out, source, root, **options)
    _check_images(name, manifest, out, options.get("progress", True))
    # Every file the loader will read, hashed; a run checks the disk against it.
    manifest["files"] = filelist.record(manifest, out)
    files.write_json(out / MANIFEST, manifest)
    return manifest


def _check_images(name: str, manifest: dict, out: Path, progress: bool) -> None:
    """Every image the loader will read, whatever the cache setting: a damaged one or a
    decompression bomb stops prepare naming it, not a training job later. Decoded in full
    unless the DIV2K cache just did (its build names a bad PNG itself); headers only then."""
    root = Path(manifest["root"])
    if not root.is_absolute():
        root = out / root
    paths = [root / rel for rel in DATASETS[name].data_files(root, manifest)]
    images.check_images(paths, decode=not manifest.get("cache"), progress=progress, what=f"{name} in {root}")


def load_manifest(path: str | Path) -> dict:
    """Read a manifest; its ``root`` comes back absolute."""
    path = Path(path)
    manifest = files.read_json(path)
    # Where it came from, for the runs' metrics.json (``data``): the report cites this digest.
    manifest["loaded_from"] = {"manifest": str(path.resolve()), "manifest_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    root = Path(manifest["root"])
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    manifest["root"] = str(root)
    cache = manifest.get("cache")  # a decoded cache (DIV2K), also relative to the manifest
    if cache and not Path(cache["dir"]).is_absolute():
        cache["dir"] = str((path.parent / cache["dir"]).resolve())
    listing = manifest.get("files")  # the file list beside the manifest
    if listing and not Path(listing["list"]).is_absolute():
        listing["list"] = str((path.parent / listing["list"]).resolve())
    if not root.is_dir():
        raise FileNotFoundError(f"{path}: dataset root {root} does not exist; rerun `clipbench prepare`")
    return manifest
