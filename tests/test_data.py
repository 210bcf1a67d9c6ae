import hashlib
import json

import pytest
from pathlib import Path
from PIL import Image
from torchvision import datasets

from clipbench.data import imagenet100 as imagenet
from clipbench.data.prepare import load_manifest, prepare
from tests._fakedata import make_tree


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.JPEG")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_synthetic_imagenet_has_the_real_layout(tiny_imagenet):
    from pathlib import Path

    root = Path(tiny_imagenet["root"])
    wnids = imagenet.load_class_list("first100")[:4]
    assert tiny_imagenet["wnids"] == wnids
    for split, n in (("train", 8), ("val", 4)):
        for wnid in wnids:
            files = sorted((root / split / wnid).glob("*.JPEG"))
            assert len(files) == n
            with Image.open(files[0]) as im:
                assert im.format == "JPEG" and im.size == (24, 24) and im.mode == "RGB"
    assert all(p.name.startswith(wnids[0] + "_") for p in (root / "train" / wnids[0]).iterdir())
    assert all(p.name.startswith("ILSVRC2012_val_") for p in (root / "val" / wnids[0]).iterdir())
    ds = datasets.ImageFolder(root / "train")
    assert ds.classes == wnids and len(ds) == 32


def test_synthetic_is_deterministic(tmp_path):
    cfg = {"source": "synthetic", "synthetic": {"num_classes": 2, "train_per_class": 3, "val_per_class": 1, "image_size": 16, "seed": 7}}
    prepare("imagenet100", cfg, tmp_path / "a")
    prepare("imagenet100", cfg, tmp_path / "b")
    assert _digest(tmp_path / "a" / "data") == _digest(tmp_path / "b" / "data")
    cfg["synthetic"]["seed"] = 8
    prepare("imagenet100", cfg, tmp_path / "c")
    assert _digest(tmp_path / "a" / "data") != _digest(tmp_path / "c" / "data")


def test_prepare_leaves_no_temporary_folders(tmp_path):
    prepare("imagenet100", {"source": "synthetic", "synthetic": {"num_classes": 2, "train_per_class": 1, "val_per_class": 1, "image_size": 16}}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "files.tsv", "manifest.json"]


def test_manifest_root_is_relative_so_the_folder_can_move(tmp_path):
    prepare("imagenet100", {"source": "synthetic", "synthetic": {"num_classes": 2, "train_per_class": 1, "val_per_class": 1, "image_size": 16}}, tmp_path / "x")
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["root"] == "data"
    (tmp_path / "x").rename(tmp_path / "y")
    assert load_manifest(tmp_path / "y" / "manifest.json")["root"] == str((tmp_path / "y" / "data").resolve())


def test_root_uses_an_existing_tree_as_it_is(tmp_path):
    root = make_tree(tmp_path / "kaggle", imagenet.load_class_list("first100"), n=1)
    m = prepare("imagenet100", {"root": str(root)}, tmp_path / "out")
    assert load_manifest(tmp_path / "out" / "manifest.json")["root"] == str(root.resolve())
    assert m["splits"]["val"]["images"] == 100
    assert not (tmp_path / "out" / "data").exists()
    with pytest.raises(imagenet.ImageNetError, match="class folder"):
        prepare("imagenet100", {"root": str(root), "class_list": "cmc"}, tmp_path / "out")


def test_root_with_wrong_layout_names_the_path(tmp_path):
    (tmp_path / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(imagenet.ImageNetError, match=r"class folder.*missing.*datasets\.imagenet100\.root"):
        prepare("imagenet100", {"root": str(tmp_path)}, tmp_path / "out")


def test_missing_manifest_root(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"root": "gone"}))
    with pytest.raises(FileNotFoundError, match="rerun `clipbench prepare`"):
        load_manifest(tmp_path / "manifest.json")


def test_unknown_class_list():
    with pytest.raises(imagenet.ImageNetError, match="first100, cmc"):
        imagenet.load_class_list("first1000")


def test_synthetic_manifest_counts(tiny_imagenet):
    assert tiny_imagenet["source"] == "synthetic"
    assert tiny_imagenet["splits"]["train"]["images"] == 32 and len(tiny_imagenet["files_sha1"]) == 40


def test_unknown_source_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"datasets\.voc2012\.source"):
        prepare("voc2012", {"source": "torrent"}, tmp_path)


def test_resize_option_points_the_manifest_at_the_copy(tmp_path):
    root = make_tree(tmp_path / "kaggle", imagenet.load_class_list("first100"), n=1)  # 40x30 JPEGs
    m = prepare("imagenet100", {"root": str(root), "resize": {"shorter_side": 15, "quality": 90, "workers": 1}},
                tmp_path / "out")
    assert m["root"] == "resized15" and m["resized_from"] == str(root.resolve())
    resized = load_manifest(tmp_path / "out" / "manifest.json")["root"]
    with Image.open(next(Path(resized).glob("train/*/*.JPEG"))) as im:
        assert im.size == (20, 15)
