"""``clipbench prepare <dataset>``: make a dataset ready to train on, and describe it.

The result is ``<out>/manifest.json``: where the data is (``root``), where it came from,
and what it holds. Training reads only the manifest, so a dataset already on the user's
disk (``datasets.<name>.root``), one downloaded or built from archives, and the embedded
synthetic one are all used the same way.

Archives (downloaded, or the user's ImageNet tars) live in ``datasets.<name>.archives``
(default ``data/<name>``), the folder DVC versions; extracted and generated trees
live under ``<out>/data``, which DVC does not track (it is slow on 100k small files).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from clipbench import io
from clipbench.data import fetch, imagenet, synthetic

DATASETS = ("imagenet100", "voc2012", "div2k")


def archive_dir(name: str, cfg: dict) -> Path:
    return Path(cfg.get("archives") or f"data/{name}")


def prepare(name: str, cfg: dict, out: str | Path) -> dict:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg["root"]).expanduser().resolve() if cfg.get("root") else None
    source = "root" if root else cfg.get("source", "synthetic")

    if name == "imagenet100":
        class_list = cfg.get("class_list", "first100")
        if source == "synthetic":
            made = _synthetic(out, lambda tmp: synthetic.make_imagenet100(tmp, **cfg.get("synthetic", {})))
            # One description for every source: the tree's own index (the synthetic set
            # always takes the first wnids of first100, whatever class_list says).
            manifest = {**imagenet.index_tree(out / "data", made["classes"], class_list="first100",
                                              source="synthetic"), "root": made["root"]}
        elif source == "root":
            manifest = imagenet.prepare_imagenet100(out, root=root, class_list=class_list)
        elif source == "archives":
            manifest = imagenet.prepare_imagenet100(out, archive_dir=archive_dir(name, cfg), class_list=class_list)
        else:
            raise ValueError(f"datasets.{name}.source: unknown source {source!r}")
        resize = cfg.get("resize") or {}
        if resize.get("shorter_side") and source != "synthetic":
            manifest = _resized(manifest, out, resize)
    else:
        check = fetch.check_voc_root if name == "voc2012" else fetch.check_div2k_root
        if source == "synthetic":
            make = synthetic.make_voc2012 if name == "voc2012" else synthetic.make_div2k
            manifest = _synthetic(out, lambda tmp: make(tmp, **cfg.get("synthetic", {})))
        elif source == "root":
            check(root)
            if name == "voc2012" and cfg.get("sbd", False):
                fetch.check_sbd_root(root)  # fail now, not at the first training run
            manifest = {"root": str(root)}
        elif source == "download":
            dest = out / "data"
            opts = {"mirrors": cfg.get("mirrors") or None, "archive_dir": archive_dir(name, cfg)}
            if name == "voc2012":
                fetch.fetch_voc2012(dest, sbd=cfg.get("sbd", False), **opts)
            else:
                fetch.fetch_div2k(dest, **opts)
            manifest = {"root": "data"}
        else:
            raise ValueError(f"datasets.{name}.source: unknown source {source!r}")
        manifest.update(dataset=name, source=source)
        if name == "voc2012":
            manifest["sbd"] = bool(cfg.get("sbd", False)) and source in ("download", "root")
    io.write_json(out / "manifest.json", manifest)
    return manifest


def _resized(manifest: dict, out: Path, resize: dict) -> dict:
    """Point the manifest at a pre-resized copy of the tree (built once, resumable)."""
    side = resize["shorter_side"]
    src = Path(manifest["root"])
    if not src.is_absolute():
        src = out / src
    dst = out / f"resized{side}"
    rate = imagenet.resize_tree(src, dst, shorter_side=side, quality=resize.get("quality", 90),
                                workers=resize.get("workers"))
    return {**manifest, "root": dst.name, "resized_from": str(src), "resize": dict(resize),
            "resize_images_per_s": rate or None}


def _synthetic(out: Path, make) -> dict:
    """Generate into a temporary sibling, then move it into place as ``out/data``.

    A crash leaves nothing that looks finished.
    """
    data_dir = out / "data"
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        info = make(tmp) or {}
        if data_dir.exists():
            shutil.rmtree(data_dir)
        tmp.rename(data_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    # Relative to the manifest, so the prepared folder can move (or be restored by DVC).
    return {**info, "root": "data", "source": "synthetic"}


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
