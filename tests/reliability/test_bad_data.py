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
from tests.conftest import tiny_spec
from tests.test_tasks import _copy_root, _seg_spec, tiny_voc  # noqa: F401 (a fixture)

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 3],
    "not an image": lambda data: b"<html>404 Not Found</html>",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_jpeg_is_an_error_naming_the_file(tiny_imagenet, tmp_path, damage):
    root = _copy_root(tiny_imagenet, tmp_path)
    task = build_task(tiny_spec(), {**tiny_imagenet, "root": str(root)})
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
def test_damaged_mask_is_an_error_naming_the_file(tiny_voc, tmp_path, damage):  # noqa: F811
    root = _copy_root(tiny_voc, tmp_path)
    task = build_task(_seg_spec(), {**tiny_voc, "root": str(root)})
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


def test_missing_split_file_is_named(tiny_voc, tmp_path):  # noqa: F811
    root = _copy_root(tiny_voc, tmp_path)
    split = root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    split.unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=str(split)):
        build_task(_seg_spec(), {**tiny_voc, "root": str(root)})
