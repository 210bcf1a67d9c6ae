"""Bad data: a damaged JPEG or PNG, an empty class folder, a missing split file.

(A mask with labels outside VOC's: tests/test_tasks.py::test_mask_with_labels_outside_voc_names_the_file.
An ImageNet tree without a class of the class list: tests/test_realdata.py::test_imagenet100_tree_errors_name_the_path.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from clipbench.data.imagenet100 import ImageNetError, prepare_imagenet100
from clipbench.data.images import CorruptImageError
from clipbench.tasks import build_task
from tests._fakedata import make_tree, png_bytes
from tests._specs import classification_spec, segmentation_spec
from tests._tinydata import copy_root

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 3],
    "not an image": lambda data: b"<html>404 Not Found</html>",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_jpeg_is_an_error_naming_the_file(tiny_imagenet, tmp_path, damage):
    root = copy_root(tiny_imagenet, tmp_path)
    task = build_task(classification_spec(), {**tiny_imagenet, "root": str(root)})
    index = 5
    bad = Path(task.train_set.samples[index][0])
    bad.write_bytes(DAMAGE[damage](bad.read_bytes()))
    task.train_set[index - 1]  # the others still load
    with pytest.raises(CorruptImageError, match=rf"^{bad}: cannot decode the image"):
        task.train_set[index]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_png_is_an_error_naming_the_file(tmp_path, damage):
    from clipbench.data.div2k import read_rgb  # how DIV2K's PNGs are read, for training and the cache

    bad = tmp_path / "0001x4.png"
    bad.write_bytes(DAMAGE[damage](png_bytes(64, 64)))
    with pytest.raises(CorruptImageError, match=rf"^{bad}: cannot decode the image"):
        read_rgb(bad)


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_mask_is_an_error_naming_the_file(tiny_voc, tmp_path, damage):
    root = copy_root(tiny_voc, tmp_path)
    task = build_task(segmentation_spec(), {**tiny_voc, "root": str(root)})
    bad = Path(task.train_set.masks[1])
    bad.write_bytes(DAMAGE[damage](bad.read_bytes()))
    task.train_set[0]
    with pytest.raises(CorruptImageError, match=rf"^{bad}: cannot decode the mask"):
        task.train_set[1]


def test_empty_class_folder_is_named(tmp_path):
    wnids = ["n01440764", "n01443537", "n01484850"]
    root = make_tree(tmp_path / "tree", wnids)
    for f in (root / "val" / wnids[1]).iterdir():
        f.unlink()
    with pytest.raises(ImageNetError, match=rf"{root / 'val' / wnids[1]}"):
        prepare_imagenet100(tmp_path / "out", root=root, wnids=wnids)


def test_missing_split_file_is_named(tiny_voc, tmp_path):
    root = copy_root(tiny_voc, tmp_path)
    split = root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    split.unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=str(split)):
        build_task(segmentation_spec(), {**tiny_voc, "root": str(root)})


# ------------------------------------------------------------------ bombs and damage at prepare


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A ~100-byte PNG whose header declares ``width`` x ``height`` RGB pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


DIV2K_SYN = {"train_images": 2, "valid_images": 1, "hr_size": 32, "seed": 0}


@pytest.fixture(scope="module")
def div2k_root(tmp_path_factory) -> Path:
    from clipbench.data.prepare import prepare

    out = tmp_path_factory.mktemp("div2k")
    prepare("div2k", {"source": "synthetic", "synthetic": DIV2K_SYN, "cache": False}, out, progress=False)
    return out / "data"


def _div2k_copy(div2k_root, tmp_path) -> Path:
    import shutil

    root = tmp_path / "div2k"
    shutil.copytree(div2k_root, root)
    return root


@pytest.mark.parametrize("cache", [False, True], ids=["cache false", "cache true"])
@pytest.mark.parametrize("image", ["HR", "LR"])
def test_decompression_bomb_stops_prepare_naming_it(div2k_root, tmp_path, cache, image):
    """(Fixed here: PIL's "Image size (900000000 pixels) exceeds limit" named no file, and with
    cache: false prepare passed and training failed later.)"""
    from clipbench.data.prepare import prepare

    root = _div2k_copy(div2k_root, tmp_path)
    hr = sorted((root / "DIV2K_train_HR").glob("*.png"))[1]
    bad = hr if image == "HR" else root / "DIV2K_train_LR_bicubic" / "X4" / f"{hr.stem}x4.png"
    bad.write_bytes(bomb_png())
    with pytest.raises(CorruptImageError, match=rf"{bad}: (declares 30000x30000|a decompression bomb)") as err:
        prepare("div2k", {"root": str(root), "cache": cache}, tmp_path / "prepared", progress=False)
    assert "replace or delete the file" in str(err.value)
    assert not (tmp_path / "prepared" / "manifest.json").exists()


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_png_stops_prepare_with_cache_false(div2k_root, tmp_path, damage):
    """Without the decoded cache nothing decodes the PNGs at prepare; the image check does."""
    from clipbench.data.prepare import prepare

    root = _div2k_copy(div2k_root, tmp_path)
    bad = sorted((root / "DIV2K_valid_LR_bicubic" / "X4").glob("*.png"))[0]
    bad.write_bytes(DAMAGE[damage](bad.read_bytes()))
    with pytest.raises(CorruptImageError, match=rf"1 of 6 images of div2k in {root} cannot be trained on") as err:
        prepare("div2k", {"root": str(root), "cache": False}, tmp_path / "prepared", progress=False)
    assert f"\n  {bad}: cannot " in str(err.value)


@pytest.mark.parametrize("damage", {**DAMAGE, "bomb": lambda data: bomb_png()})
def test_damaged_jpeg_or_bomb_stops_imagenet_prepare(tiny_imagenet, tmp_path, damage):
    from clipbench.data.prepare import prepare

    root = copy_root(tiny_imagenet, tmp_path)
    bad = sorted((root / "val").rglob("*.JPEG"))[2]
    bad.write_bytes(DAMAGE.get(damage, lambda d: bomb_png())(bad.read_bytes()))
    wnids = tiny_imagenet["wnids"]
    with pytest.raises(CorruptImageError, match=rf"images of imagenet100 in {root} cannot be trained on") as err:
        prepare("imagenet100", {"root": str(root), "class_list": wnids}, tmp_path / "prepared", progress=False)
    assert f"\n  {bad}: " in str(err.value)


def test_decompression_bomb_at_decode_names_the_file(tmp_path):
    """Training reads the image (a tree changed after prepare): the error names it."""
    from clipbench.data.div2k import read_rgb
    from clipbench.data.images import open_rgb

    bad = tmp_path / "0001.png"
    bad.write_bytes(bomb_png())
    for read in (open_rgb, read_rgb):
        with pytest.raises(CorruptImageError, match=rf"^{bad}: (declares|a decompression bomb)"):
            read(bad)
    just_over = tmp_path / "0002.png"  # PIL only warns between the limit and twice it
    just_over.write_bytes(bomb_png(10000, 10000))
    with pytest.raises(CorruptImageError, match=rf"^{just_over}: declares 10000x10000"):
        open_rgb(just_over)
