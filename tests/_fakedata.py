"""Tiny archives in the real datasets' formats (same names and inner layout)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(w=40, h=30, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def png_bytes(w=40, h=30, mode="RGB") -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, (w, h), 1 if mode == "P" else (10, 200, 10))
    img.save(buf, "PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tf.addfile(info)


def digests(path) -> dict:
    data = Path(path).read_bytes()
    return {
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


# ------------------------------------------------------------------ VOC / SBD

VOC_IDS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}


def make_voc_tar(path) -> Path:
    """``VOCtrainval_11-May-2012.tar`` with VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}."""
    base = "VOCdevkit/VOC2012"
    with tarfile.open(path, "w") as tf:
        for d in ("VOCdevkit", base, f"{base}/JPEGImages", f"{base}/SegmentationClass",
                  f"{base}/ImageSets", f"{base}/ImageSets/Segmentation"):
            _add_dir(tf, d)
        for split, ids in VOC_IDS.items():
            for i in ids:
                _add(tf, f"{base}/JPEGImages/{i}.jpg", jpeg_bytes())
                _add(tf, f"{base}/SegmentationClass/{i}.png", png_bytes(mode="P"))
            _add(tf, f"{base}/ImageSets/Segmentation/{split}.txt", ("\n".join(ids) + "\n").encode())
        trainval = VOC_IDS["train"] + VOC_IDS["val"]
        _add(tf, f"{base}/ImageSets/Segmentation/trainval.txt", ("\n".join(trainval) + "\n").encode())
    return Path(path)


def make_sbd(folder) -> tuple[Path, Path]:
    """``benchmark.tgz`` (benchmark_RELEASE/dataset/...) and ``train_noval.txt``."""
    folder = Path(folder)
    tgz = folder / "benchmark.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        root = "benchmark_RELEASE/dataset"
        _add(tf, f"{root}/img/2008_000002.jpg", jpeg_bytes())
        _add(tf, f"{root}/cls/2008_000002.mat", b"not really a mat file")
        _add(tf, f"{root}/train.txt", b"2008_000002\n")
        _add(tf, f"{root}/val.txt", b"")
    split = folder / "train_noval.txt"
    split.write_text("2008_000002\n")
    return tgz, split


# ------------------------------------------------------------------ DIV2K

DIV2K_CONTENT = {
    "DIV2K_train_HR.zip": ["DIV2K_train_HR/0001.png", "DIV2K_train_HR/0002.png"],
    "DIV2K_valid_HR.zip": ["DIV2K_valid_HR/0801.png"],
    "DIV2K_train_LR_bicubic_X4.zip": ["DIV2K_train_LR_bicubic/X4/0001x4.png",
                                      "DIV2K_train_LR_bicubic/X4/0002x4.png"],
    "DIV2K_valid_LR_bicubic_X4.zip": ["DIV2K_valid_LR_bicubic/X4/0801x4.png"],
}


def make_div2k_zips(folder) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, members in DIV2K_CONTENT.items():
        path = folder / name
        with zipfile.ZipFile(path, "w") as zf:
            dirs = sorted({m.rsplit("/", 1)[0] + "/" for m in members})
            for d in dirs:
                zf.writestr(d, b"")  # the official zips list their folders too
            for m in members:
                small = "x4" in m
                zf.writestr(m, png_bytes(8 if small else 32, 8 if small else 32))
        out[name] = path
    return out


# ------------------------------------------------------------------ ILSVRC2012


def make_ilsvrc(folder, wnids, train_per_class=3, val_per_class=2) -> dict:
    """The three ILSVRC2012 archives for ``wnids`` (a stand-in for all 1000 classes).

    ``meta.mat`` has the real structure (a ``synsets`` struct array whose leaves have
    ``num_children == 0``, plus one non-leaf node as in the real file).  Validation images
    are interleaved across classes, as in the real set.  Returns the expected layout.
    """
    from scipy.io import savemat

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "ILSVRC2012_img_train.tar", "w") as outer:
        for k, wnid in enumerate(wnids):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for i in range(train_per_class):
                    _add(inner, f"{wnid}_{i + 1}.JPEG", jpeg_bytes(color=(k * 20 % 255, i, 0)))
            _add(outer, f"{wnid}.tar", buf.getvalue())

    ids = {wnid: k + 1 for k, wnid in enumerate(wnids)}
    truth = []
    expected_val = {w: [] for w in wnids}
    with tarfile.open(folder / "ILSVRC2012_img_val.tar", "w") as tf:
        n = 0
        for _ in range(val_per_class):
            for wnid in wnids:
                n += 1
                name = f"ILSVRC2012_val_{n:08d}.JPEG"
                _add(tf, name, jpeg_bytes(color=(0, 0, ids[wnid] * 10 % 255)))
                truth.append(ids[wnid])
                expected_val[wnid].append(name)

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = [(ids[w], w, f"class {w}", "a gloss", 0, np.zeros((1, 0)), 0, train_per_class)
            for w in wnids]
    rows.append((len(wnids) + 1, "n00001740", "entity", "root", len(wnids),
                 np.arange(1, len(wnids) + 1, dtype=float), 18, 0))
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            synsets[i, 0][f] = v
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    with tarfile.open(folder / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
        _add(tf, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        _add(tf, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
             ("\n".join(map(str, truth)) + "\n").encode())
        _add(tf, "ILSVRC2012_devkit_t12/readme.txt", b"devkit")
    return {"val": expected_val, "train_per_class": train_per_class}


def make_tree(root, wnids, n=2) -> Path:
    root = Path(root)
    for split in ("train", "val"):
        for wnid in wnids:
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{wnid}_{i}.JPEG").write_bytes(jpeg_bytes())
    return root
