"""``clipbench prepare <dataset>``: make a dataset ready to train on, and describe it.

The result is ``<out>/manifest.json``: where the data is (``root``), where it came from,
its classes and counts. Training reads only the manifest, so a dataset on the user's disk
(``datasets.<name>.root``), one built from archives and the embedded synthetic one are all
used the same way.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from clipbench import io
from clipbench.data import layout, synthetic

DATASETS = ("imagenet100",)


def prepare(name: str, cfg: dict, out: str | Path) -> dict:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    out = Path(out)
    if cfg.get("root"):
        root = Path(cfg["root"]).expanduser().resolve()
        info = _check(name, root)
        manifest = {"dataset": name, "source": "root", "root": str(root), **info}
    else:
        manifest = _build(name, cfg, out)
    io.write_json(out / "manifest.json", manifest)
    return manifest


def _check(name: str, root: Path) -> dict:
    if name == "imagenet100":
        return layout.check_imagefolder(root, what=f"datasets.{name}.root ({root})")
    raise AssertionError(name)


def _build(name: str, cfg: dict, out: Path) -> dict:
    source = cfg.get("source", "synthetic")
    data_dir = out / "data"
    # Build in a temporary sibling, then move it into place: a crash leaves nothing that
    # looks finished.
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        if name == "imagenet100" and source == "synthetic":
            info = synthetic.make_imagenet100(tmp, **cfg.get("synthetic", {}))
        elif name == "imagenet100" and source == "archives":
            raise NotImplementedError("building ImageNet-100 from the ILSVRC2012 archives")
        else:
            raise ValueError(f"datasets.{name}.source: unknown source {source!r}")
        if data_dir.exists():
            shutil.rmtree(data_dir)
        tmp.rename(data_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    # Relative to the manifest, so the prepared folder can move (or be restored by DVC).
    return {"dataset": name, "source": source, "root": "data", **info}


def load_manifest(path: str | Path) -> dict:
    """Read a manifest; its ``root`` comes back absolute."""
    path = Path(path)
    manifest = io.read_json(path)
    root = Path(manifest["root"])
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    manifest["root"] = str(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{path}: dataset root {root} does not exist; rerun `clipbench prepare`")
    return manifest
